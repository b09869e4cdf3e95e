package mvcc

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"
)

// model is a dumb in-memory reference of the store: every version of every key.
type model struct {
	versions map[string][]modelVersion // in revision order
	rev      int64                     // revision after the last ended txn
	sub      int64                     // changes in the open txn
	compact  int64
	events   []Event
}

type modelVersion struct {
	main, sub int64
	kv        *mvccpb.KeyValue // nil for a tombstone
}

func newModel() *model { return &model{versions: map[string][]modelVersion{}, rev: 1, compact: -1} }

func (m *model) clone() *model {
	c := &model{versions: map[string][]modelVersion{}, rev: m.rev, sub: m.sub, compact: m.compact}
	for k, vs := range m.versions {
		c.versions[k] = slices.Clone(vs)
	}
	c.events = slices.Clone(m.events)
	return c
}

// get returns key's value at rev (nil if absent).
func (m *model) get(key string, rev int64) *mvccpb.KeyValue {
	vs := m.versions[key]
	for i := len(vs) - 1; i >= 0; i-- {
		if vs[i].main <= rev {
			return vs[i].kv
		}
	}
	return nil
}

func inRange(k, key, end []byte) bool {
	switch {
	case end == nil:
		return bytes.Equal(k, key)
	case len(end) == 0 || (len(end) == 1 && end[0] == 0):
		return bytes.Compare(k, key) >= 0
	default:
		return bytes.Compare(k, key) >= 0 && bytes.Compare(k, end) < 0
	}
}

func (m *model) rangeAt(key, end []byte, rev int64) []*mvccpb.KeyValue {
	var out []*mvccpb.KeyValue
	for k := range m.versions {
		if !inRange([]byte(k), key, end) {
			continue
		}
		if kv := m.get(k, rev); kv != nil {
			out = append(out, kv)
		}
	}
	slices.SortFunc(out, func(a, b *mvccpb.KeyValue) int { return bytes.Compare(a.Key, b.Key) })
	return out
}

func (m *model) put(key, value []byte, lease int64) *mvccpb.KeyValue {
	rev := m.rev + 1
	prev := m.get(string(key), rev)
	kv := &mvccpb.KeyValue{Key: bytes.Clone(key), CreateRevision: rev, ModRevision: rev, Version: 1, Lease: lease}
	if len(value) > 0 {
		kv.Value = bytes.Clone(value)
	}
	if prev != nil {
		kv.CreateRevision = prev.CreateRevision
		kv.Version = prev.Version + 1
	}
	m.versions[string(key)] = append(m.versions[string(key)], modelVersion{rev, m.sub, kv})
	// An event's PrevKV is the key before the txn (etcd reads it at mod_revision-1); a put
	// that starts the key's life has none.
	var evPrev *mvccpb.KeyValue
	if kv.CreateRevision != rev {
		evPrev = m.get(string(key), rev-1)
	}
	m.events = append(m.events, Event{Type: mvccpb.Event_PUT, KV: kv, PrevKV: evPrev})
	m.sub++
	return prev
}

func (m *model) deleteRange(key, end []byte) []*mvccpb.KeyValue {
	rev := m.rev + 1
	del := m.rangeAt(key, end, rev)
	for _, prev := range del {
		k := string(prev.Key)
		m.versions[k] = append(m.versions[k], modelVersion{rev, m.sub, nil})
		m.events = append(m.events, Event{Type: mvccpb.Event_DELETE,
			KV: &mvccpb.KeyValue{Key: prev.Key, ModRevision: rev}, PrevKV: m.get(k, rev-1)})
		m.sub++
	}
	return del
}

func (m *model) endTxn() int64 {
	if m.sub > 0 {
		m.rev++
		m.sub = 0
	}
	return m.rev
}

func (m *model) readRev() int64 {
	if m.sub > 0 {
		return m.rev + 1
	}
	return m.rev
}

// randomKeys is a small key space with NUL bytes, prefixes and high bytes.
var randomKeys = [][]byte{
	[]byte("a"), []byte("a\x00"), []byte("a\x00\x00"), []byte("a\x01"), []byte("ab"), []byte("abc"),
	[]byte("b"), []byte("b\xff"), []byte("ba"), []byte("c"), []byte("\x00"), []byte("\x00a"),
	[]byte("\xff"), []byte("\xff\xff"), []byte("k1"), []byte("k2"), []byte("k3"), []byte("k10"),
}

func randomRange(r *rand.Rand) (key, end []byte) {
	key = randomKeys[r.IntN(len(randomKeys))]
	switch r.IntN(5) {
	case 0, 1:
		return key, nil
	case 2:
		return key, []byte{0}
	case 3:
		// Prefix range.
		end = bytes.Clone(key)
		for i := len(end) - 1; i >= 0; i-- {
			if end[i] < 0xff {
				end[i]++
				return key, end[:i+1]
			}
		}
		return key, []byte{0}
	default:
		return key, randomKeys[r.IntN(len(randomKeys))]
	}
}

func randomRangeOptions(r *rand.Rand, lo, hi int64) RangeOptions {
	ro := RangeOptions{}
	if r.IntN(3) > 0 {
		ro.Rev = lo + r.Int64N(hi-lo+1)
	}
	if r.IntN(3) == 0 {
		ro.Limit = r.Int64N(4)
	}
	switch r.IntN(6) {
	case 0:
		ro.CountOnly = true
	case 1:
		ro.KeysOnly = true
	case 2:
		ro.SkipTotalCount = true
	}
	return ro
}

// checkRange compares a range result with the model.
func checkRange(t *testing.T, what string, m *model, cur, compactRev int64, key, end []byte, ro RangeOptions,
	got *RangeResult, err error) {
	t.Helper()
	switch {
	case ro.Rev > cur:
		if !errors.Is(err, ErrFutureRev) {
			t.Fatalf("%s: range %q-%q %+v (cur %d): err %v, want ErrFutureRev", what, key, end, ro, cur, err)
		}
		return
	case ro.Rev > 0 && ro.Rev < compactRev:
		if !errors.Is(err, ErrCompacted) {
			t.Fatalf("%s: range %q-%q %+v (compact %d): err %v, want ErrCompacted", what, key, end, ro, compactRev, err)
		}
		return
	case err != nil:
		t.Fatalf("%s: range %q-%q %+v: %v", what, key, end, ro, err)
	}
	rev := ro.Rev
	if rev <= 0 {
		rev = cur
	}
	all := m.rangeAt(key, end, rev)
	want := all
	wantCount := int64(len(all))
	if ro.CountOnly {
		want = nil
	} else if ro.Limit > 0 && int64(len(want)) > ro.Limit {
		want = want[:ro.Limit]
		if ro.SkipTotalCount {
			wantCount = ro.Limit
		}
	}
	if ro.KeysOnly {
		stripped := make([]*mvccpb.KeyValue, len(want))
		for i, kv := range want {
			c := proto.Clone(kv).(*mvccpb.KeyValue)
			c.Value = nil
			stripped[i] = c
		}
		want = stripped
	}
	if got.Rev != cur || got.Count != wantCount || !kvsEqual(got.KVs, want) {
		t.Fatalf("%s: range %q-%q %+v at %d:\n got rev %d count %d %s\nwant rev %d count %d %s", what, key, end, ro, rev,
			got.Rev, got.Count, fmtKVs(got.KVs), cur, wantCount, fmtKVs(want))
	}
}

// TestRandomAgainstModel runs random batches of transactions, reads, compactions and
// reopens against the store and the model.
func TestRandomAgainstModel(t *testing.T) {
	// compactOneIn is how rarely a transaction is a compaction request: frequent
	// compactions exercise compaction, rare ones reads far in the past.
	cases := []struct {
		seed         uint64
		compactOneIn int
	}{{1, 12}, {2, 150}, {3, 40}}
	if testing.Short() {
		cases = cases[:1]
	}
	for _, tc := range cases {
		t.Run(itoa(int64(tc.seed)), func(t *testing.T) { runRandom(t, tc.seed, 600, tc.compactOneIn) })
	}
}

func runRandom(t *testing.T, seed uint64, batches, compactOneIn int) {
	oldChunk := compactChunk
	compactChunk = 7
	defer func() { compactChunk = oldChunk }()

	r := rand.New(rand.NewPCG(seed, seed*7919))
	ctx := context.Background()
	dir := t.TempDir()
	db := openDB(t, dir)
	s, err := Open(db)
	if err != nil {
		t.Fatal(err)
	}
	m := newModel()
	ops := 0
	for batch := range batches {
		abandon := r.IntN(20) == 0
		var saved *model
		if abandon {
			saved = m.clone()
		}
		b := db.NewIndexedBatch()
		w := s.NewWriter(b)
		evStart := len(m.events)
		for range 1 + r.IntN(4) {
			if r.IntN(compactOneIn) == 0 && m.rev > m.compact {
				// A compaction request (its own raft entry).
				rev := m.compact + 1 + r.Int64N(m.rev-m.compact)
				if r.IntN(10) == 0 {
					rev = m.compact // rejected
				}
				err := w.Compact(rev)
				if rev <= m.compact {
					if !errors.Is(err, ErrCompacted) {
						t.Fatalf("compact %d <= %d: %v", rev, m.compact, err)
					}
				} else {
					if err != nil {
						t.Fatalf("compact %d: %v", rev, err)
					}
					m.compact = rev
				}
				continue
			}
			for range 1 + r.IntN(4) {
				ops++
				key, end := randomRange(r)
				switch op := r.IntN(10); {
				case op < 5:
					val := []byte{byte(r.IntN(256)), byte(ops)}
					if r.IntN(8) == 0 {
						val = nil
					}
					lease := int64(0)
					if r.IntN(4) == 0 {
						lease = r.Int64N(3) + 1
					}
					gotPrev, err := w.Put(key, val, lease)
					if err != nil {
						t.Fatal(err)
					}
					wantPrev := m.put(key, val, lease)
					if (gotPrev == nil) != (wantPrev == nil) || (gotPrev != nil && !proto.Equal(gotPrev, wantPrev)) {
						t.Fatalf("put %q prev %s, want %s", key, fmtKV(gotPrev), fmtKV(wantPrev))
					}
				case op < 7:
					got, err := w.DeleteRange(key, end)
					if err != nil {
						t.Fatal(err)
					}
					want := m.deleteRange(key, end)
					if !kvsEqual(got, want) {
						t.Fatalf("delete %q-%q: %s, want %s", key, end, fmtKVs(got), fmtKVs(want))
					}
				default:
					ro := randomRangeOptions(r, m.compact-1, m.readRev()+1)
					got, err := w.Range(ctx, key, end, ro)
					checkRange(t, "writer", m, m.readRev(), m.compact, key, end, ro, got, err)
				}
			}
			if got, want := w.EndTxn(), m.endTxn(); got != want {
				t.Fatalf("EndTxn = %d, want %d", got, want)
			}
		}
		if abandon {
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			m = saved
		} else {
			checkEventsEqual(t, w.Events(), m.events[evStart:])
			if err := b.Commit(pebble.NoSync); err != nil {
				t.Fatal(err)
			}
			s.Publish(w)
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
		}
		if s.CurrentRev() != m.rev || s.CompactRev() != m.compact {
			t.Fatalf("batch %d: store at %d/%d, model at %d/%d", batch, s.CurrentRev(), s.CompactRev(), m.rev, m.compact)
		}

		// Physical compaction, sometimes deferred.
		if rev, ok := s.PendingCompaction(); ok && r.IntN(3) > 0 {
			hashRev := rev + r.Int64N(m.rev-rev+1)
			before := hashAt(t, s, hashRev)
			if err := s.Compact(ctx, rev); err != nil {
				t.Fatal(err)
			}
			checkCompacted(t, db, rev)
			if after := hashAt(t, s, hashRev); after != before {
				t.Fatalf("hash at %d changed by compaction at %d: %+v -> %+v", hashRev, rev, before, after)
			}
		}

		// Random reads at random revisions.
		v, err := s.NewReadView()
		if err != nil {
			t.Fatal(err)
		}
		for range 5 {
			key, end := randomRange(r)
			ro := randomRangeOptions(r, max(m.compact-2, 0), m.rev+1)
			got, err := v.Range(ctx, key, end, ro)
			checkRange(t, "view", m, m.rev, m.compact, key, end, ro, got, err)
		}
		if r.IntN(4) == 0 {
			checkEvents(t, v, m, max(m.compact-1, 0)+r.Int64N(m.rev-max(m.compact-1, 0)+2))
		}
		if err := v.Close(); err != nil {
			t.Fatal(err)
		}

		// Reopen, sometimes with the DB itself.
		switch r.IntN(40) {
		case 0:
			if s, err = Open(db); err != nil {
				t.Fatal(err)
			}
		case 1:
			closeDB(t, db)
			db = openDB(t, dir)
			if s, err = Open(db); err != nil {
				t.Fatal(err)
			}
		}
		if s.CurrentRev() != m.rev || s.CompactRev() != m.compact {
			t.Fatalf("reopened store at %d/%d, model at %d/%d", s.CurrentRev(), s.CompactRev(), m.rev, m.compact)
		}
	}
	t.Logf("%d ops, final revision %d, compacted at %d", ops, m.rev, m.compact)

	// Final full check of every readable revision.
	v, err := s.NewReadView()
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	for rev := max(m.compact, 1); rev <= m.rev; rev++ {
		got, err := v.Range(ctx, nil, []byte{0}, RangeOptions{Rev: rev})
		checkRange(t, "final", m, m.rev, m.compact, nil, []byte{0}, RangeOptions{Rev: rev}, got, err)
	}
	checkEvents(t, v, m, m.compact)
}

// checkEvents compares v.Events from fromRev, read in small batches, with the model. Events
// at the compact revision may lack what compaction removed, so they are checked loosely.
func checkEvents(t *testing.T, v *ReadView, m *model, fromRev int64) {
	t.Helper()
	var got []Event
	from := fromRev
	for {
		evs, next, err := v.Events(from, 3)
		if fromRev < m.compact {
			if !errors.Is(err, ErrCompacted) {
				t.Fatalf("events from %d (compact %d): %v", fromRev, m.compact, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("events from %d: %v", from, err)
		}
		if next <= from && from <= v.Rev() {
			t.Fatalf("events from %d: next %d", from, next)
		}
		got = append(got, evs...)
		if next > v.Rev() || len(evs) == 0 {
			break
		}
		from = next
	}
	var want []Event
	for _, ev := range m.events {
		if ev.KV.ModRevision >= fromRev {
			want = append(want, ev)
		}
	}
	var strict, strictWant []Event
	for _, ev := range got {
		if ev.KV.ModRevision > m.compact {
			strict = append(strict, ev)
		}
	}
	for _, ev := range want {
		if ev.KV.ModRevision > m.compact {
			strictWant = append(strictWant, ev)
		}
	}
	checkEventsEqual(t, strict, strictWant)
	// At the compact revision: every delete, and the last put of each key, are there.
	atCompact := func(evs []Event) map[string]Event {
		out := map[string]Event{}
		for _, ev := range evs {
			if ev.KV.ModRevision == m.compact {
				out[string(ev.KV.Key)] = ev
			}
		}
		return out
	}
	g, w := atCompact(got), atCompact(want)
	if len(g) != len(w) {
		t.Fatalf("events at compact revision %d: %d keys, want %d", m.compact, len(g), len(w))
	}
	for k, we := range w {
		ge := g[k]
		if ge.Type != we.Type || !proto.Equal(ge.KV, we.KV) {
			t.Fatalf("event at compact revision for %q: %v %s, want %v %s", k, ge.Type, fmtKV(ge.KV), we.Type, fmtKV(we.KV))
		}
	}
}
