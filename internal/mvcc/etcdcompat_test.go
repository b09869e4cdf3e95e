package mvcc

import (
	"context"
	"errors"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// TestEventPrevKVWithinTxn checks the PrevKV of the events of a transaction that changes a key
// more than once: like etcd, which reads it at mod_revision-1, every event gets the key as it
// was before the transaction (none if it did not exist), and a put that starts the key's life
// gets none even when the transaction deleted an older life first. The responses (Put's and
// DeleteRange's return values) still see the transaction's earlier changes. The writer's
// events and the events read back from the history must agree.
func TestEventPrevKVWithinTxn(t *testing.T) {
	s, _, _ := newStore(t)
	mustPut(t, s, "a", "a1", 0)   // 2
	write(t, s, func(w *Writer) { // 3
		for _, k := range []string{"c", "d"} {
			if _, err := w.Put([]byte(k), []byte(k+"1"), 0); err != nil {
				t.Fatal(err)
			}
		}
	})
	a1, c1, d1 := kv("a", "a1", 2, 2, 1, 0), kv("c", "c1", 3, 3, 1, 0), kv("d", "d1", 3, 3, 1, 0)
	a2, b1, d2 := kv("a", "a2", 2, 4, 2, 0), kv("b", "b1", 4, 4, 1, 0), kv("d", "d2", 3, 4, 2, 0)
	d3, c2 := kv("d", "d3", 3, 4, 3, 0), kv("c", "c2", 4, 4, 1, 0)

	w := write(t, s, func(w *Writer) { // 4
		put := func(k, v string, want *mvccpb.KeyValue) {
			t.Helper()
			prev, err := w.Put([]byte(k), []byte(v), 0)
			if err != nil {
				t.Fatal(err)
			}
			if (prev == nil) != (want == nil) || (prev != nil && !kvsEqual([]*mvccpb.KeyValue{prev}, []*mvccpb.KeyValue{want})) {
				t.Fatalf("put %s=%s returned %s, want %s", k, v, fmtKV(prev), fmtKV(want))
			}
		}
		put("a", "a2", a1)
		put("b", "b1", nil)
		put("d", "d2", d1)
		put("d", "d3", d2) // the response sees the txn's own change
		deleted, err := w.DeleteRange([]byte("a"), []byte("d"))
		if err != nil {
			t.Fatal(err)
		}
		if want := []*mvccpb.KeyValue{a2, b1, c1}; !kvsEqual(deleted, want) {
			t.Fatalf("delete returned %s, want %s", fmtKVs(deleted), fmtKVs(want))
		}
		put("c", "c2", nil)
	})
	del := func(k string) *mvccpb.KeyValue { return &mvccpb.KeyValue{Key: []byte(k), ModRevision: 4} }
	want := []Event{
		{Type: mvccpb.Event_PUT, KV: a2, PrevKV: a1},
		{Type: mvccpb.Event_PUT, KV: b1},
		{Type: mvccpb.Event_PUT, KV: d2, PrevKV: d1},
		{Type: mvccpb.Event_PUT, KV: d3, PrevKV: d1},
		{Type: mvccpb.Event_DELETE, KV: del("a"), PrevKV: a1},
		{Type: mvccpb.Event_DELETE, KV: del("b")},
		{Type: mvccpb.Event_DELETE, KV: del("c"), PrevKV: c1},
		{Type: mvccpb.Event_PUT, KV: c2}, // a new life: no PrevKV, although c existed before
	}
	checkEventsEqual(t, w.Events(), want)

	v, err := s.NewReadView()
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	got, next, err := v.Events(4, 0)
	if err != nil || next != 5 {
		t.Fatalf("Events(4): next %d, err %v", next, err)
	}
	checkEventsEqual(t, got, want)
}

// TestCompactAtZero checks etcd's compaction bounds: a store that was never compacted has
// compact revision -1, so the first compaction may be at revision 0 (it changes nothing but
// the compact revision, which survives a reopen); after it, 0 is refused as compacted.
func TestCompactAtZero(t *testing.T) {
	s, db, _ := newStore(t)
	write(t, s, func(w *Writer) {
		if err := w.Compact(-1); !errors.Is(err, ErrCompacted) {
			t.Fatalf("compact at -1 on a new store: %v, want ErrCompacted", err)
		}
		if err := w.Compact(0); err != nil {
			t.Fatalf("first compact at 0: %v", err)
		}
		if err := w.Compact(0); !errors.Is(err, ErrCompacted) {
			t.Fatalf("second compact at 0: %v, want ErrCompacted", err)
		}
	})
	if c := s.CompactRev(); c != 0 {
		t.Fatalf("CompactRev after compact at 0 = %d, want 0", c)
	}
	if rev, ok := s.PendingCompaction(); ok {
		t.Fatalf("compaction at 0 pending at %d", rev)
	}
	if err := s.Compact(context.Background(), 0); err != nil {
		t.Fatalf("physical compaction at 0: %v", err)
	}
	mustPut(t, s, "k", "v", 0)
	if r := mustRead(t, s, []byte("k"), nil, RangeOptions{Rev: 2}); len(r.KVs) != 1 {
		t.Fatalf("read after compact at 0: %s", fmtKVs(r.KVs))
	}

	// Reopened, the store remembers the compaction at 0.
	s2, err := Open(db)
	if err != nil {
		t.Fatal(err)
	}
	if c := s2.CompactRev(); c != 0 {
		t.Fatalf("CompactRev after reopen = %d, want 0", c)
	}
	write(t, s2, func(w *Writer) {
		if err := w.Compact(0); !errors.Is(err, ErrCompacted) {
			t.Fatalf("compact at 0 after reopen: %v, want ErrCompacted", err)
		}
		if err := w.Compact(1); err != nil {
			t.Fatalf("compact at 1 after compact at 0: %v", err)
		}
	})
	if c := s2.CompactRev(); c != 1 {
		t.Fatalf("CompactRev = %d, want 1", c)
	}
}
