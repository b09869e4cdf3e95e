package watch

import (
	"bytes"
	"sort"
	"sync"

	"github.com/ordo-db/ordo/internal/mvcc"
)

// DefaultRingBytes bounds the memory the Hub keeps for recent events.
const DefaultRingBytes = 64 << 20

// Hub holds the recent events and tells streams about new revisions.
type Hub struct {
	kv       *mvcc.Store
	maxBytes int

	mu struct {
		sync.Mutex
		events  []mvcc.Event // recent events in revision order
		first   int64        // every event with revision >= first is in events
		rev     int64        // the newest revision announced
		bytes   int
		changed chan struct{} // closed and replaced at every announcement
		avg     int           // average size of the events announced lately (EventSize)
	}
}

// NewHub creates a hub starting at the store's current revision.
func NewHub(kv *mvcc.Store, maxBytes int) *Hub {
	if maxBytes <= 0 {
		maxBytes = DefaultRingBytes
	}
	h := &Hub{kv: kv, maxBytes: maxBytes}
	h.mu.changed = make(chan struct{})
	h.Reset()
	return h
}

// Reset forgets the ring and starts again from the store's current revision (after the state
// was replaced by a snapshot). Watchers behind it catch up from storage.
func (h *Hub) Reset() {
	rev := h.kv.CurrentRev()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.mu.events, h.mu.bytes = nil, 0
	h.mu.first, h.mu.rev = rev+1, rev
	close(h.mu.changed)
	h.mu.changed = make(chan struct{})
}

// EventSize estimates the memory an event takes, previous value included; the ring's budget
// and the watch response bounds are counted in it.
func EventSize(ev *mvcc.Event) int { return eventSize(ev) }

func eventSize(ev *mvcc.Event) int {
	n := 64 + len(ev.KV.Key) + len(ev.KV.Value)
	if ev.PrevKV != nil {
		n += 48 + len(ev.PrevKV.Key) + len(ev.PrevKV.Value)
	}
	return n
}

// Notify records the events of newly published revisions up to rev. It never blocks on
// watchers.
func (h *Hub) Notify(evs []mvcc.Event, rev int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if rev <= h.mu.rev {
		return
	}
	h.mu.events = append(h.mu.events, evs...)
	added := 0
	for i := range evs {
		added += eventSize(&evs[i])
	}
	h.mu.bytes += added
	if len(evs) > 0 {
		// An average that follows the newest events, so that a change of value sizes shows
		// within a few announcements.
		h.mu.avg = (h.mu.avg + added/len(evs) + 1) / 2
	}
	h.mu.rev = rev
	// Drop whole revisions from the front while over budget.
	drop := 0
	for h.mu.bytes > h.maxBytes && drop < len(h.mu.events) {
		r := h.mu.events[drop].KV.ModRevision
		for drop < len(h.mu.events) && h.mu.events[drop].KV.ModRevision == r {
			h.mu.bytes -= eventSize(&h.mu.events[drop])
			drop++
		}
		h.mu.first = r + 1
	}
	if drop > 0 {
		h.mu.events = append([]mvcc.Event(nil), h.mu.events[drop:]...)
	}
	close(h.mu.changed)
	h.mu.changed = make(chan struct{})
}

// Rev returns the newest announced revision and a channel closed at the next announcement.
func (h *Hub) Rev() (int64, <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.mu.rev, h.mu.changed
}

// Range is a key range as etcd gives it: end nil for one key, empty for every key from key on.
type Range struct {
	Key, End []byte
}

// Contains reports whether key is in the range.
func (r Range) Contains(key []byte) bool {
	if r.End == nil {
		return bytes.Equal(key, r.Key)
	}
	return bytes.Compare(key, r.Key) >= 0 && (len(r.End) == 0 || bytes.Compare(key, r.End) < 0)
}

// Recent appends to dst the events with revision in [from, to] whose key is in r, if the ring
// still holds revision from; ok is false when the caller must read storage instead.
func (h *Hub) Recent(dst []mvcc.Event, from, to int64, r Range) (_ []mvcc.Event, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if from < h.mu.first {
		return dst, false
	}
	evs := h.mu.events
	i := sort.Search(len(evs), func(i int) bool { return evs[i].KV.ModRevision >= from })
	for ; i < len(evs) && evs[i].KV.ModRevision <= to; i++ {
		if r.Contains(evs[i].KV.Key) {
			dst = append(dst, evs[i])
		}
	}
	return dst, true
}

// AvgEventBytes estimates the size (EventSize) of the events written lately; 0 before any.
func (h *Hub) AvgEventBytes() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.mu.avg
}

// RecentBounded is Recent bounded in size: it stops before the first matching event of a
// revision once the events it appended hold maxBytes (EventSize) or more, so it always
// returns whole revisions and at least one revision with matching events. next is the
// revision to continue from: the first one not returned, to+1 when everything up to to was.
func (h *Hub) RecentBounded(dst []mvcc.Event, from, to int64, r Range, maxBytes int) (_ []mvcc.Event, next int64, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if from < h.mu.first {
		return dst, 0, false
	}
	evs := h.mu.events
	i := sort.Search(len(evs), func(i int) bool { return evs[i].KV.ModRevision >= from })
	size, last := 0, int64(0)
	for ; i < len(evs) && evs[i].KV.ModRevision <= to; i++ {
		ev := &evs[i]
		if !r.Contains(ev.KV.Key) {
			continue
		}
		if rev := ev.KV.ModRevision; rev != last {
			if size >= maxBytes {
				return dst, rev, true
			}
			last = rev
		}
		dst = append(dst, *ev)
		size += eventSize(ev)
	}
	return dst, to + 1, true
}
