package mvcc

import (
	"context"
	"errors"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

func TestEmptyStore(t *testing.T) {
	s, _, _ := newStore(t)
	if got := s.CurrentRev(); got != 1 {
		t.Fatalf("CurrentRev of empty store = %d, want 1", got)
	}
	if got := s.CompactRev(); got != -1 {
		t.Fatalf("CompactRev of empty store = %d, want -1 (never compacted)", got)
	}
	if _, ok := s.PendingCompaction(); ok {
		t.Fatal("pending compaction in empty store")
	}
	r := mustRead(t, s, []byte("a"), []byte{0}, RangeOptions{})
	if len(r.KVs) != 0 || r.Count != 0 || r.Rev != 1 {
		t.Fatalf("range of empty store: %+v", r)
	}
}

// basicStore builds the history used by TestRange.
func basicStore(t *testing.T) *Store {
	s, _, _ := newStore(t)
	steps := []struct {
		put     bool
		key     string
		val     string
		lease   int64
		wantRev int64
	}{
		{true, "a", "1", 0, 2},
		{true, "b", "2", 5, 3},
		{true, "a", "3", 0, 4},
		{true, "a\x00", "x", 0, 5},
		{true, "ab", "y", 0, 6},
		{false, "a", "", 0, 7},
		{true, "a", "5", 0, 8},
		{true, "c", "", 0, 9},
	}
	for _, st := range steps {
		var rev int64
		if st.put {
			rev = mustPut(t, s, st.key, st.val, st.lease)
		} else {
			if del := mustDelete(t, s, []byte(st.key), nil); len(del) != 1 {
				t.Fatalf("delete %q deleted %d keys", st.key, len(del))
			}
			rev = s.CurrentRev()
		}
		if rev != st.wantRev || s.CurrentRev() != st.wantRev {
			t.Fatalf("after %+v: rev %d, CurrentRev %d, want %d", st, rev, s.CurrentRev(), st.wantRev)
		}
	}
	return s
}

func TestRange(t *testing.T) {
	s := basicStore(t)
	var (
		a2  = kv("a", "1", 2, 2, 1, 0)
		a4  = kv("a", "3", 2, 4, 2, 0)
		a8  = kv("a", "5", 8, 8, 1, 0)
		a0  = kv("a\x00", "x", 5, 5, 1, 0)
		ab  = kv("ab", "y", 6, 6, 1, 0)
		b3  = kv("b", "2", 3, 3, 1, 5)
		c9  = kv("c", "", 9, 9, 1, 0)
		all = []byte{0}
	)
	keysOnly := func(k *mvccpb.KeyValue) *mvccpb.KeyValue {
		c := kv(string(k.Key), "", k.CreateRevision, k.ModRevision, k.Version, k.Lease)
		return c
	}
	tests := []struct {
		name      string
		key, end  string
		endNil    bool
		endAll    bool
		ro        RangeOptions
		want      []*mvccpb.KeyValue
		wantCount int64
		wantErr   error
	}{
		{name: "get", key: "a", endNil: true, want: []*mvccpb.KeyValue{a8}, wantCount: 1},
		{name: "get missing", key: "zz", endNil: true, wantCount: 0},
		{name: "get empty value", key: "c", endNil: true, want: []*mvccpb.KeyValue{c9}, wantCount: 1},
		{name: "get lease", key: "b", endNil: true, want: []*mvccpb.KeyValue{b3}, wantCount: 1},
		{name: "get nul key", key: "a\x00", endNil: true, want: []*mvccpb.KeyValue{a0}, wantCount: 1},
		{name: "get old", key: "a", endNil: true, ro: RangeOptions{Rev: 3}, want: []*mvccpb.KeyValue{a2}, wantCount: 1},
		{name: "get old 2", key: "a", endNil: true, ro: RangeOptions{Rev: 6}, want: []*mvccpb.KeyValue{a4}, wantCount: 1},
		{name: "get deleted", key: "a", endNil: true, ro: RangeOptions{Rev: 7}, wantCount: 0},
		{name: "get before creation", key: "b", endNil: true, ro: RangeOptions{Rev: 2}, wantCount: 0},
		{name: "get at 1", key: "a", endNil: true, ro: RangeOptions{Rev: 1}, wantCount: 0},
		{name: "prefix a", key: "a", end: "b", want: []*mvccpb.KeyValue{a8, a0, ab}, wantCount: 3},
		{name: "prefix a at 7", key: "a", end: "b", ro: RangeOptions{Rev: 7}, want: []*mvccpb.KeyValue{a0, ab}, wantCount: 2},
		{name: "prefix a at 5", key: "a", end: "b", ro: RangeOptions{Rev: 5}, want: []*mvccpb.KeyValue{a4, a0}, wantCount: 2},
		{name: "a to a nul", key: "a", end: "a\x00", want: []*mvccpb.KeyValue{a8}, wantCount: 1},
		{name: "a nul to ab", key: "a\x00", end: "ab", want: []*mvccpb.KeyValue{a0}, wantCount: 1},
		{name: "all", key: "", endAll: true, want: []*mvccpb.KeyValue{a8, a0, ab, b3, c9}, wantCount: 5},
		{name: "from b", key: "b", endAll: true, want: []*mvccpb.KeyValue{b3, c9}, wantCount: 2},
		{name: "empty range", key: "b", end: "a", wantCount: 0},
		{name: "equal bounds", key: "b", end: "b", wantCount: 0},
		{name: "limit", key: "", endAll: true, ro: RangeOptions{Limit: 2}, want: []*mvccpb.KeyValue{a8, a0}, wantCount: 5},
		{name: "limit skip count", key: "", endAll: true, ro: RangeOptions{Limit: 2, SkipTotalCount: true}, want: []*mvccpb.KeyValue{a8, a0}, wantCount: 2},
		{name: "limit above count", key: "", endAll: true, ro: RangeOptions{Limit: 10}, want: []*mvccpb.KeyValue{a8, a0, ab, b3, c9}, wantCount: 5},
		{name: "count only", key: "", endAll: true, ro: RangeOptions{CountOnly: true, Limit: 1}, wantCount: 5},
		{name: "count only old", key: "", endAll: true, ro: RangeOptions{CountOnly: true, Rev: 7}, wantCount: 3},
		{name: "keys only", key: "a", end: "b", ro: RangeOptions{KeysOnly: true}, want: []*mvccpb.KeyValue{keysOnly(a8), keysOnly(a0), keysOnly(ab)}, wantCount: 3},
		{name: "future", key: "a", endNil: true, ro: RangeOptions{Rev: 10}, wantErr: ErrFutureRev},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var end []byte
			switch {
			case tc.endNil:
			case tc.endAll:
				end = all
			default:
				end = []byte(tc.end)
			}
			r, err := read(t, s, []byte(tc.key), end, tc.ro)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !kvsEqual(r.KVs, tc.want) || r.Count != tc.wantCount || r.Rev != 9 {
				t.Fatalf("got %s count %d rev %d, want %s count %d rev 9", fmtKVs(r.KVs), r.Count, r.Rev, fmtKVs(tc.want), tc.wantCount)
			}
		})
	}
}

func TestRangeEmptyEndMeansAll(t *testing.T) {
	s := basicStore(t)
	a := mustRead(t, s, []byte("b"), []byte{}, RangeOptions{})
	b := mustRead(t, s, []byte("b"), []byte{0}, RangeOptions{})
	if !kvsEqual(a.KVs, b.KVs) || len(a.KVs) != 2 {
		t.Fatalf("empty end: %s, nul end: %s", fmtKVs(a.KVs), fmtKVs(b.KVs))
	}
}

func TestPutReturnsPrevAndDeleteRangeReturnsDeleted(t *testing.T) {
	s, _, _ := newStore(t)
	write(t, s, func(w *Writer) {
		prev, err := w.Put([]byte("k"), []byte("v1"), 0)
		if err != nil || prev != nil {
			t.Fatalf("first put: prev %v err %v", prev, err)
		}
		w.EndTxn()
		prev, err = w.Put([]byte("k"), []byte("v2"), 7)
		if err != nil || !kvsEqual([]*mvccpb.KeyValue{prev}, []*mvccpb.KeyValue{kv("k", "v1", 2, 2, 1, 0)}) {
			t.Fatalf("second put: prev %s err %v", fmtKV(prev), err)
		}
		w.EndTxn()
		if _, err := w.Put([]byte("j"), []byte("x"), 0); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Put([]byte("l"), []byte("y"), 0); err != nil {
			t.Fatal(err)
		}
		if rev := w.EndTxn(); rev != 4 {
			t.Fatalf("rev after third txn = %d, want 4", rev)
		}
		del, err := w.DeleteRange([]byte("a"), []byte("z"))
		if err != nil {
			t.Fatal(err)
		}
		want := []*mvccpb.KeyValue{kv("j", "x", 4, 4, 1, 0), kv("k", "v2", 2, 3, 2, 7), kv("l", "y", 4, 4, 1, 0)}
		if !kvsEqual(del, want) {
			t.Fatalf("deleted %s, want %s", fmtKVs(del), fmtKVs(want))
		}
		if rev := w.EndTxn(); rev != 5 {
			t.Fatalf("rev after delete = %d, want 5", rev)
		}
		del, err = w.DeleteRange([]byte("a"), []byte("z"))
		if err != nil || len(del) != 0 {
			t.Fatalf("second delete: %s %v", fmtKVs(del), err)
		}
		if rev := w.EndTxn(); rev != 5 {
			t.Fatalf("empty delete bumped the revision to %d", rev)
		}
	})
	if s.CurrentRev() != 5 {
		t.Fatalf("CurrentRev = %d, want 5", s.CurrentRev())
	}
	// A put after a delete starts a new life.
	mustPut(t, s, "k", "v3", 0)
	r := mustRead(t, s, []byte("k"), nil, RangeOptions{})
	if !kvsEqual(r.KVs, []*mvccpb.KeyValue{kv("k", "v3", 6, 6, 1, 0)}) {
		t.Fatalf("after recreate: %s", fmtKVs(r.KVs))
	}
}

func TestTxn(t *testing.T) {
	s, _, _ := newStore(t)
	mustPut(t, s, "x", "0", 0) // rev 2
	ctx := context.Background()
	w := write(t, s, func(w *Writer) {
		// Reads before any change are at the current revision.
		r, err := w.Range(ctx, []byte("x"), nil, RangeOptions{})
		if err != nil || r.Rev != 2 || len(r.KVs) != 1 {
			t.Fatalf("range before change: %+v %v", r, err)
		}
		if _, err := w.Range(ctx, []byte("x"), nil, RangeOptions{Rev: 3}); !errors.Is(err, ErrFutureRev) {
			t.Fatalf("range at in-progress rev before any change: %v", err)
		}
		// Several writes in one txn share the revision with increasing subs.
		for _, k := range []string{"a", "b", "x"} {
			if _, err := w.Put([]byte(k), []byte("t1"), 0); err != nil {
				t.Fatal(err)
			}
		}
		r, err = w.Range(ctx, []byte(""), []byte{0}, RangeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want := []*mvccpb.KeyValue{kv("a", "t1", 3, 3, 1, 0), kv("b", "t1", 3, 3, 1, 0), kv("x", "t1", 2, 3, 2, 0)}
		if r.Rev != 3 || !kvsEqual(r.KVs, want) {
			t.Fatalf("range inside txn: rev %d %s, want rev 3 %s", r.Rev, fmtKVs(r.KVs), fmtKVs(want))
		}
		// The previous revision is still readable inside the txn.
		r, err = w.Range(ctx, []byte(""), []byte{0}, RangeOptions{Rev: 2})
		if err != nil || !kvsEqual(r.KVs, []*mvccpb.KeyValue{kv("x", "0", 2, 2, 1, 0)}) {
			t.Fatalf("range at 2 inside txn: %+v %v", r, err)
		}
		// Same key twice in one txn: version increments, same revision.
		if _, err := w.Put([]byte("a"), []byte("t1b"), 0); err != nil {
			t.Fatal(err)
		}
		r, err = w.Range(ctx, []byte("a"), nil, RangeOptions{})
		if err != nil || !kvsEqual(r.KVs, []*mvccpb.KeyValue{kv("a", "t1b", 3, 3, 2, 0)}) {
			t.Fatalf("second put in txn: %s %v", fmtKVs(r.KVs), err)
		}
		if rev := w.EndTxn(); rev != 3 {
			t.Fatalf("EndTxn = %d, want 3", rev)
		}
		// A txn that only reads or deletes nothing does not bump the revision.
		if _, err := w.Range(ctx, []byte("a"), nil, RangeOptions{}); err != nil {
			t.Fatal(err)
		}
		if del, err := w.DeleteRange([]byte("nope"), nil); err != nil || len(del) != 0 {
			t.Fatalf("delete missing: %v %v", del, err)
		}
		if rev := w.EndTxn(); rev != 3 {
			t.Fatalf("no-op txn: EndTxn = %d, want 3", rev)
		}
		// Readers do not see the batch before it is committed and published.
		if got := s.CurrentRev(); got != 2 {
			t.Fatalf("CurrentRev before publish = %d", got)
		}
		r2 := mustRead(t, s, []byte(""), []byte{0}, RangeOptions{})
		if r2.Rev != 2 || len(r2.KVs) != 1 {
			t.Fatalf("reader saw uncommitted writes: %+v", r2)
		}
		// Delete and put in one txn.
		if _, err := w.DeleteRange([]byte("a"), []byte("c")); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Put([]byte("b"), []byte("t2"), 0); err != nil {
			t.Fatal(err)
		}
		r, err = w.Range(ctx, []byte(""), []byte{0}, RangeOptions{})
		want = []*mvccpb.KeyValue{kv("b", "t2", 4, 4, 1, 0), kv("x", "t1", 2, 3, 2, 0)}
		if err != nil || r.Rev != 4 || !kvsEqual(r.KVs, want) {
			t.Fatalf("after delete+put: rev %d %s %v, want %s", r.Rev, fmtKVs(r.KVs), err, fmtKVs(want))
		}
		if rev := w.EndTxn(); rev != 4 {
			t.Fatalf("EndTxn = %d, want 4", rev)
		}
	})
	if s.CurrentRev() != 4 {
		t.Fatalf("CurrentRev after publish = %d", s.CurrentRev())
	}
	evs := w.Events()
	wantTypes := []mvccpb.Event_EventType{mvccpb.Event_PUT, mvccpb.Event_PUT, mvccpb.Event_PUT, mvccpb.Event_PUT,
		mvccpb.Event_DELETE, mvccpb.Event_DELETE, mvccpb.Event_PUT}
	if len(evs) != len(wantTypes) {
		t.Fatalf("%d events, want %d", len(evs), len(wantTypes))
	}
	for i, ev := range evs {
		if ev.Type != wantTypes[i] {
			t.Fatalf("event %d type %v, want %v", i, ev.Type, wantTypes[i])
		}
	}
	if !kvsEqual([]*mvccpb.KeyValue{evs[4].KV, evs[4].PrevKV}, []*mvccpb.KeyValue{{Key: []byte("a"), ModRevision: 4}, kv("a", "t1b", 3, 3, 2, 0)}) {
		t.Fatalf("delete event: %s prev %s", fmtKV(evs[4].KV), fmtKV(evs[4].PrevKV))
	}
	// Events read back from the history match the writer's.
	v, err := s.NewReadView()
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	got, next, err := v.Events(3, 0)
	if err != nil || next != 5 {
		t.Fatalf("Events: next %d err %v", next, err)
	}
	checkEventsEqual(t, got, evs)
}

func checkEventsEqual(t *testing.T, got, want []Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d events, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i].Type != want[i].Type ||
			!kvsEqual([]*mvccpb.KeyValue{got[i].KV}, []*mvccpb.KeyValue{want[i].KV}) ||
			(got[i].PrevKV == nil) != (want[i].PrevKV == nil) ||
			(got[i].PrevKV != nil && !kvsEqual([]*mvccpb.KeyValue{got[i].PrevKV}, []*mvccpb.KeyValue{want[i].PrevKV})) {
			t.Fatalf("event %d: got %v %s prev %s, want %v %s prev %s", i,
				got[i].Type, fmtKV(got[i].KV), fmtKV(got[i].PrevKV), want[i].Type, fmtKV(want[i].KV), fmtKV(want[i].PrevKV))
		}
	}
}

func TestEventsLimitKeepsRevisionsWhole(t *testing.T) {
	s, _, _ := newStore(t)
	write(t, s, func(w *Writer) {
		for i := range 3 {
			for _, k := range []string{"a", "b", "c"}[:i+1] {
				if _, err := w.Put([]byte(k), []byte{byte('0' + i)}, 0); err != nil {
					t.Fatal(err)
				}
			}
			w.EndTxn()
		}
	})
	// Revisions 2 (1 event), 3 (2 events), 4 (3 events).
	v, err := s.NewReadView()
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	var all []Event
	from := int64(0)
	var batches []int
	for from <= v.Rev() {
		evs, next, err := v.Events(from, 2)
		if err != nil {
			t.Fatal(err)
		}
		batches = append(batches, len(evs))
		all = append(all, evs...)
		from = next
	}
	if len(all) != 6 || len(batches) != 2 || batches[0] != 3 || batches[1] != 3 {
		t.Fatalf("batches %v, %d events", batches, len(all))
	}
	if evs, next, err := v.Events(10, 0); err != nil || len(evs) != 0 || next != 10 {
		t.Fatalf("future events: %v %d %v", evs, next, err)
	}
}

func TestCompactErrors(t *testing.T) {
	s, _, _ := newStore(t)
	for i := range 5 {
		mustPut(t, s, "k", string(rune('a'+i)), 0) // revs 2..6
	}
	write(t, s, func(w *Writer) {
		if err := w.Compact(7); !errors.Is(err, ErrFutureRev) {
			t.Fatalf("compact future: %v", err)
		}
		if err := w.Compact(4); err != nil {
			t.Fatal(err)
		}
		if err := w.Compact(4); !errors.Is(err, ErrCompacted) {
			t.Fatalf("compact again: %v", err)
		}
		if err := w.Compact(3); !errors.Is(err, ErrCompacted) {
			t.Fatalf("compact below: %v", err)
		}
		if _, err := w.Range(context.Background(), []byte("k"), nil, RangeOptions{Rev: 3}); !errors.Is(err, ErrCompacted) {
			t.Fatalf("writer read below compaction: %v", err)
		}
	})
	if s.CompactRev() != 4 {
		t.Fatalf("CompactRev = %d", s.CompactRev())
	}
	if rev, ok := s.PendingCompaction(); !ok || rev != 4 {
		t.Fatalf("PendingCompaction = %d %v", rev, ok)
	}
	if _, err := read(t, s, []byte("k"), nil, RangeOptions{Rev: 3}); !errors.Is(err, ErrCompacted) {
		t.Fatalf("read below compaction: %v", err)
	}
	if r, err := read(t, s, []byte("k"), nil, RangeOptions{Rev: 4}); err != nil || string(r.KVs[0].Value) != "c" {
		t.Fatalf("read at compaction: %v %v", r, err)
	}
	if err := s.Compact(context.Background(), 5); !errors.Is(err, ErrNotScheduled) {
		t.Fatalf("physical compaction beyond schedule: %v", err)
	}
	if err := s.Compact(context.Background(), 4); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.PendingCompaction(); ok {
		t.Fatal("compaction still pending")
	}
	// Running it again is a no-op.
	if err := s.Compact(context.Background(), 4); err != nil {
		t.Fatal(err)
	}
	v, err := s.NewReadView()
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if _, _, err := v.Events(3, 0); !errors.Is(err, ErrCompacted) {
		t.Fatalf("events below compaction: %v", err)
	}
}

// fullState reads every key at every revision from from to the current one.
func fullState(t *testing.T, s *Store, from int64) map[int64][]*mvccpb.KeyValue {
	t.Helper()
	v, err := s.NewReadView()
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	out := map[int64][]*mvccpb.KeyValue{}
	for rev := from; rev <= v.Rev(); rev++ {
		r, err := v.Range(context.Background(), nil, []byte{0}, RangeOptions{Rev: rev})
		if err != nil {
			t.Fatalf("range at %d: %v", rev, err)
		}
		out[rev] = r.KVs
	}
	return out
}

func TestCompaction(t *testing.T) {
	s, db, _ := newStore(t)
	// Keys: "live" updated many times, "dead" deleted, "late" deleted after the compaction
	// revision, "reborn" deleted and recreated, "fresh" created after it.
	mustPut(t, s, "live", "1", 0)   // 2
	mustPut(t, s, "dead", "1", 0)   // 3
	mustPut(t, s, "live", "2", 0)   // 4
	mustPut(t, s, "late", "1", 0)   // 5
	mustPut(t, s, "reborn", "1", 0) // 6
	mustDelete(t, s, []byte("dead"), nil)
	mustDelete(t, s, []byte("reborn"), nil) // 8
	mustPut(t, s, "reborn", "2", 0)         // 9
	for i := range 40 {
		mustPut(t, s, "hot", string(rune('a'+i%26)), 0) // 10..49
	}
	mustPut(t, s, "live", "3", 0) // 50
	const c = 50
	mustDelete(t, s, []byte("late"), nil) // 51
	mustPut(t, s, "fresh", "1", 0)        // 52
	mustPut(t, s, "live", "4", 0)         // 53

	before := fullState(t, s, c)
	compact(t, s, c)
	after := fullState(t, s, c)
	for rev, kvs := range before {
		if !kvsEqual(kvs, after[rev]) {
			t.Fatalf("range at %d changed by compaction:\n%s\n%s", rev, fmtKVs(kvs), fmtKVs(after[rev]))
		}
	}
	checkCompacted(t, db, c)
	var versions []string
	for _, v := range rawVersions(t, db) {
		versions = append(versions, v.key+"@"+itoa(v.main))
	}
	want := []string{"fresh@52", "hot@49", "late@51", "late@5", "live@53", "live@50", "reborn@9"}
	if len(versions) != len(want) {
		t.Fatalf("versions after compaction: %v, want %v", versions, want)
	}
	for i := range want {
		if versions[i] != want[i] {
			t.Fatalf("versions after compaction: %v, want %v", versions, want)
		}
	}
	// Delete at the compact revision stays visible to Events from it.
	mustDelete(t, s, []byte("hot"), nil) // 54
	compact(t, s, 54)
	v, err := s.NewReadView()
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	evs, _, err := v.Events(54, 0)
	if err != nil || len(evs) != 1 || evs[0].Type != mvccpb.Event_DELETE || string(evs[0].KV.Key) != "hot" || evs[0].KV.ModRevision != 54 {
		t.Fatalf("events at compact revision: %v %v", evs, err)
	}
	checkCompacted(t, db, 54)
}

func itoa(i int64) string {
	return string(appendInt(nil, i))
}

func appendInt(dst []byte, i int64) []byte {
	if i >= 10 {
		dst = appendInt(dst, i/10)
	}
	return append(dst, byte('0'+i%10))
}

func TestCompactionInChunks(t *testing.T) {
	old := compactChunk
	compactChunk = 3
	defer func() { compactChunk = old }()
	s, db, _ := newStore(t)
	for i := range 30 {
		mustPut(t, s, string(rune('a'+i%7)), itoa(int64(i)), 0)
		if i%5 == 0 {
			mustDelete(t, s, []byte{byte('a' + (i+3)%7)}, nil)
		}
	}
	c := s.CurrentRev() - 4
	before := fullState(t, s, c)
	compact(t, s, c)
	checkCompacted(t, db, c)
	after := fullState(t, s, c)
	for rev, kvs := range before {
		if !kvsEqual(kvs, after[rev]) {
			t.Fatalf("range at %d changed by compaction", rev)
		}
	}
}

func TestReopen(t *testing.T) {
	s, db, dir := newStore(t)
	mustPut(t, s, "a", "1", 3)
	mustPut(t, s, "b", "2", 0)
	mustPut(t, s, "a", "3", 0)
	mustDelete(t, s, []byte("b"), nil)
	mustPut(t, s, "c", "4", 0) // 6
	write(t, s, func(w *Writer) {
		if err := w.Compact(4); err != nil {
			t.Fatal(err)
		}
	})
	before := fullState(t, s, 4)
	closeDB(t, db)
	db = openDB(t, dir)
	s2, err := Open(db)
	if err != nil {
		t.Fatal(err)
	}
	if s2.CurrentRev() != 6 || s2.CompactRev() != 4 {
		t.Fatalf("reopened: current %d compact %d", s2.CurrentRev(), s2.CompactRev())
	}
	if rev, ok := s2.PendingCompaction(); !ok || rev != 4 {
		t.Fatalf("reopened: pending compaction %d %v", rev, ok)
	}
	if err := s2.Compact(context.Background(), 4); err != nil {
		t.Fatal(err)
	}
	after := fullState(t, s2, 4)
	for rev, kvs := range before {
		if !kvsEqual(kvs, after[rev]) {
			t.Fatalf("range at %d differs after reopen", rev)
		}
	}
	closeDB(t, db)
	db = openDB(t, dir)
	s3, err := Open(db)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s3.PendingCompaction(); ok {
		t.Fatal("finished compaction pending after reopen")
	}
	if rev := mustPut(t, s3, "d", "5", 0); rev != 7 {
		t.Fatalf("put after reopen at %d, want 7", rev)
	}
}
