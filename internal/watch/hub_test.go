package watch

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/ordo-db/ordo/internal/mvcc"
)

func openStore(t *testing.T) *mvcc.Store {
	t.Helper()
	db, err := pebble.Open(filepath.Join(t.TempDir(), "db"), &pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	kv, err := mvcc.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func put(rev int64, key string, val int) mvcc.Event {
	return mvcc.Event{Type: mvccpb.PUT, KV: &mvccpb.KeyValue{Key: []byte(key), Value: make([]byte, val), ModRevision: rev}}
}

func TestHubRecentAndRange(t *testing.T) {
	h := NewHub(openStore(t), 1<<20)
	start, _ := h.Rev()
	var evs []mvcc.Event
	for i := int64(1); i <= 10; i++ {
		evs = append(evs[:0], put(start+i, fmt.Sprintf("a%d", i), 10), put(start+i, fmt.Sprintf("b%d", i), 10))
		h.Notify(evs, start+i)
	}
	if rev, _ := h.Rev(); rev != start+10 {
		t.Fatalf("rev %d, want %d", rev, start+10)
	}
	got, ok := h.Recent(nil, start+3, start+5, Range{Key: []byte("a"), End: []byte("b")})
	if !ok || len(got) != 3 || string(got[0].KV.Key) != "a3" || string(got[2].KV.Key) != "a5" {
		t.Fatalf("recent a-range: ok %v, %d events", ok, len(got))
	}
	got, ok = h.Recent(nil, start+10, start+10, Range{Key: []byte("b10")})
	if !ok || len(got) != 1 {
		t.Fatalf("recent single key: ok %v, %d events", ok, len(got))
	}
	got, ok = h.Recent(nil, start+1, start+10, Range{Key: []byte{0}, End: []byte{}})
	if !ok || len(got) != 20 {
		t.Fatalf("recent everything: ok %v, %d events", ok, len(got))
	}
}

func TestHubTrimsWholeRevisions(t *testing.T) {
	h := NewHub(openStore(t), 2000)
	start, _ := h.Rev()
	for i := int64(1); i <= 50; i++ {
		h.Notify([]mvcc.Event{put(start+i, "k", 100), put(start+i, "l", 100)}, start+i)
	}
	// Older revisions are gone: the caller must read storage.
	if _, ok := h.Recent(nil, start+1, start+50, Range{Key: []byte("k")}); ok {
		t.Fatal("revision 1 still in a 2000-byte ring")
	}
	// Whatever is kept is complete: both events of every kept revision.
	h.mu.Lock()
	first := h.mu.first
	h.mu.Unlock()
	got, ok := h.Recent(nil, first, start+50, Range{Key: []byte{0}, End: []byte{}})
	if !ok || int64(len(got)) != 2*(start+50-first+1) {
		t.Fatalf("from first kept revision %d: ok %v, %d events", first, ok, len(got))
	}
}

func TestHubNotifyWakesWaiters(t *testing.T) {
	h := NewHub(openStore(t), 0)
	rev, ch := h.Rev()
	h.Notify([]mvcc.Event{put(rev+1, "k", 1)}, rev+1)
	select {
	case <-ch:
	default:
		t.Fatal("Notify did not close the change channel")
	}
	// An old or repeated announcement changes nothing.
	_, ch2 := h.Rev()
	h.Notify(nil, rev)
	select {
	case <-ch2:
		t.Fatal("a stale Notify woke waiters")
	default:
	}
}

func TestRangeContains(t *testing.T) {
	for _, tc := range []struct {
		r    Range
		key  string
		want bool
	}{
		{Range{Key: []byte("a")}, "a", true},
		{Range{Key: []byte("a")}, "ab", false},
		{Range{Key: []byte("a"), End: []byte("c")}, "b", true},
		{Range{Key: []byte("a"), End: []byte("c")}, "c", false},
		{Range{Key: []byte("b"), End: []byte{}}, "zzz", true},
		{Range{Key: []byte("b"), End: []byte{}}, "a", false},
	} {
		if got := tc.r.Contains([]byte(tc.key)); got != tc.want {
			t.Errorf("%q..%q contains %q = %v, want %v", tc.r.Key, tc.r.End, tc.key, got, tc.want)
		}
	}
}

func TestHubRecentBounded(t *testing.T) {
	h := NewHub(openStore(t), 64<<20)
	start, _ := h.Rev()
	// Revisions of two 1000-byte events each, then one of a single large event.
	for i := int64(1); i <= 20; i++ {
		h.Notify([]mvcc.Event{put(start+i, "a", 1000), put(start+i, "b", 1000)}, start+i)
	}
	h.Notify([]mvcc.Event{put(start+21, "a", 100000)}, start+21)
	if avg := h.AvgEventBytes(); avg < 1000 || avg > 100000 {
		t.Fatalf("average event size %d", avg)
	}
	all := Range{Key: []byte{0}, End: []byte{}}
	one := EventSize(&[]mvcc.Event{put(0, "a", 1000)}[0])

	// A budget of five events' size returns whole revisions: three (six events), since the
	// budget is checked before each new revision.
	got, next, ok := h.RecentBounded(nil, start+1, start+21, all, 5*one)
	if !ok || len(got) != 6 || next != start+4 {
		t.Fatalf("bounded: ok %v, %d events, next %d (want 6 events, next %d)", ok, len(got), next, start+4)
	}
	for i, ev := range got {
		if ev.KV.ModRevision != start+1+int64(i/2) {
			t.Fatalf("event %d at revision %d", i, ev.KV.ModRevision)
		}
	}
	// Only matching events count: one key's events, five fit, the sixth revision starts the next.
	got, next, ok = h.RecentBounded(nil, start+1, start+21, Range{Key: []byte("b")}, 5*one)
	if !ok || len(got) != 5 || next != start+6 {
		t.Fatalf("bounded one key: ok %v, %d events, next %d", ok, len(got), next)
	}
	// A revision larger than the budget is still returned whole, on its own.
	got, next, ok = h.RecentBounded(nil, start+21, start+21, all, 10)
	if !ok || len(got) != 1 || next != start+22 {
		t.Fatalf("large revision: ok %v, %d events, next %d", ok, len(got), next)
	}
	// No matching events: everything up to to is done.
	got, next, ok = h.RecentBounded(nil, start+1, start+21, Range{Key: []byte("zz")}, 10)
	if !ok || len(got) != 0 || next != start+22 {
		t.Fatalf("no match: ok %v, %d events, next %d", ok, len(got), next)
	}
}
