package mvcc

import (
	"context"
	"fmt"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/ordo-db/ordo/internal/storage"
)

// ReadView is a consistent point-in-time view of the store: a Pebble iterator pinning the
// state of the DB together with the current and compact revisions that hold for it.
// Concurrent commits and compactions do not affect it. It may be used from several
// goroutines, but its operations run one at a time. Close it when done.
//
// A view holds an iterator rather than a Pebble snapshot: opening and closing a snapshot
// takes the DB mutex (and closing one re-runs compaction picking), which would serialize
// all readers; an iterator only references the current read state.
type ReadView struct {
	rev        int64
	compactRev int64

	mu struct {
		sync.Mutex
		// root spans the whole MVCC keyspace; each operation sets its bounds, and clones
		// it when it needs a second iterator. nil once the view is closed.
		root *pebble.Iterator
	}
}

// mvccSpan bounds a view's root iterator.
var mvccSpan = pebble.IterOptions{
	LowerBound: []byte{storage.PrefixMVCC},
	UpperBound: []byte{storage.PrefixMVCC + 1},
}

// NewReadView opens a view of the published state.
//
// The current revision is loaded before the view's iterator is created, so every revision
// up to it was committed before and is visible (later commits may be too, but reads at
// <= rev ignore them). The compact revision is loaded after, so every physical compaction
// whose deletions the iterator may see was published before and is covered by it: nothing
// a permitted read needs can be missing.
func (s *Store) NewReadView() (*ReadView, error) {
	for {
		rev := s.currentRev.Load()
		it, err := s.db.NewIter(&mvccSpan)
		if err != nil {
			return nil, fmt.Errorf("mvcc: new read view: %w", err)
		}
		compact := s.compactRev.Load()
		if compact <= rev {
			v := &ReadView{rev: rev, compactRev: compact}
			v.mu.root = it
			return v, nil
		}
		// A compaction of a revision published after rev was loaded: retry so the view is
		// not useless.
		if err := it.Close(); err != nil {
			return nil, fmt.Errorf("mvcc: new read view: close iterator: %w", err)
		}
	}
}

// Close releases the view. It is idempotent.
func (v *ReadView) Close() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.mu.root == nil {
		return nil
	}
	err := v.mu.root.Close()
	v.mu.root = nil
	if err != nil {
		return fmt.Errorf("mvcc: close read view: %w", err)
	}
	return nil
}

// lock locks the view for one operation and returns its root iterator with the given
// bounds (which SetBounds copies). The caller unlocks v.mu.
func (v *ReadView) lock(lower, upper []byte) (*pebble.Iterator, error) {
	v.mu.Lock()
	if v.mu.root == nil {
		v.mu.Unlock()
		return nil, ErrViewClosed
	}
	v.mu.root.SetBounds(lower, upper)
	return v.mu.root, nil
}

// Rev returns the view's current revision.
func (v *ReadView) Rev() int64 { return v.rev }

// CompactRev returns the view's compact revision: reads below it fail with ErrCompacted.
func (v *ReadView) CompactRev() int64 { return v.compactRev }

// Range returns the live keys in [key, end) at revision ro.Rev (0: the view's revision).
// end == nil means the single key; end == "\x00" (or empty and non-nil) means every key
// >= key. It fails with ErrFutureRev above the view's revision and ErrCompacted below its
// compact revision.
func (v *ReadView) Range(ctx context.Context, key, end []byte, ro RangeOptions) (*RangeResult, error) {
	rev, err := checkRev(ro.Rev, v.rev, v.compactRev)
	if err != nil {
		return nil, err
	}
	sc := getScanner()
	defer putScanner(sc)
	var ok bool
	sc.lo, sc.hi, ok = rangeBounds(sc.lo[:0], sc.hi[:0], key, end)
	if !ok {
		return &RangeResult{Rev: v.rev}, nil
	}
	it, err := v.lock(sc.lo, sc.hi)
	if err != nil {
		return nil, err
	}
	defer v.mu.Unlock()
	kvs, count, err := sc.rangeAt(ctx, it, sc.lo, end == nil, rev, ro)
	if err != nil {
		return nil, err
	}
	return &RangeResult{KVs: kvs, Rev: v.rev, Count: count}, nil
}

// closeIter closes it, recording a close error in *err unless it already holds one.
func closeIter(it *pebble.Iterator, err *error) {
	if cerr := it.Close(); cerr != nil && *err == nil {
		*err = fmt.Errorf("mvcc: close iterator: %w", cerr)
	}
}

// Events returns the changes with revisions in [fromRev, Rev()] in revision order, at most
// limit of them (<= 0: no limit) but never part of a revision: the last revision returned
// is always complete, so a revision can exceed the limit. nextRev is the revision to ask
// for next (Rev()+1 once everything was returned). Events carry PrevKV when the previous
// version still exists. fromRev below the compact revision fails with ErrCompacted; above
// Rev() returns no events and nextRev == fromRev.
func (v *ReadView) Events(fromRev int64, limit int) (evs []Event, nextRev int64, err error) {
	if fromRev < v.compactRev {
		return nil, 0, fmt.Errorf("mvcc: events from revision %d, compacted at %d: %w", fromRev, v.compactRev, ErrCompacted)
	}
	fromRev = max(fromRev, 1)
	if fromRev > v.rev {
		return nil, fromRev, nil
	}
	sc := getScanner()
	defer putScanner(sc)
	sc.lo = appendHistoryKey(sc.lo[:0], fromRev, 0)
	sc.hi = appendHistoryKey(sc.hi[:0], v.rev+1, 0)
	hit, err := v.lock(sc.lo, sc.hi)
	if err != nil {
		return nil, 0, err
	}
	defer v.mu.Unlock()
	vit, err := hit.Clone(pebble.CloneOptions{IterOptions: &pebble.IterOptions{LowerBound: versionsStart, UpperBound: versionsEnd}})
	if err != nil {
		return nil, 0, fmt.Errorf("mvcc: events: new iterator: %w", err)
	}
	defer closeIter(vit, &err)

	er := eventReader{it: vit, sc: sc, compactRev: v.compactRev}
	last := int64(0)
	for valid := hit.First(); valid; valid = hit.Next() {
		main, sub, err := parseHistoryKey(hit.Key())
		if err != nil {
			return nil, 0, err
		}
		if limit > 0 && len(evs) >= limit && main != last {
			return evs, main, nil
		}
		last = main
		hv, err := hit.ValueAndErr()
		if err != nil {
			return nil, 0, fmt.Errorf("mvcc: events: read history %d/%d: %w", main, sub, err)
		}
		ev, ok, err := er.read(main, sub, hv)
		if err != nil {
			return nil, 0, err
		}
		if ok {
			evs = append(evs, ev)
		}
	}
	if err := hit.Error(); err != nil {
		return nil, 0, fmt.Errorf("mvcc: events: iterate history: %w", err)
	}
	return evs, v.rev + 1, nil
}

// eventReader builds events from history entries by looking up their versions.
type eventReader struct {
	it         *pebble.Iterator // over all version keys
	sc         *scanner
	alloc      kvAlloc
	compactRev int64
}

// read builds the event of history entry (main, sub) with value hv. ok is false for a put
// at the compact revision that compaction removed because a later change in the same
// revision superseded it.
func (er *eventReader) read(main, sub int64, hv []byte) (ev Event, ok bool, err error) {
	if len(hv) < 1 {
		return Event{}, false, fmt.Errorf("mvcc: malformed history entry %d/%d", main, sub)
	}
	kind, userKey := hv[0], hv[1:]
	sc := er.sc
	sc.pfx = appendKeyPrefix(sc.pfx[:0], userKey)
	sc.seek = appendInvRev(append(sc.seek[:0], sc.pfx...), main, sub)
	found := false
	var vk versionKey
	if er.it.SeekGE(sc.seek) && hasKeyPrefix(er.it.Key(), sc.pfx) {
		if vk, err = parseVersionKey(er.it.Key()); err != nil {
			return Event{}, false, err
		}
		found = vk.main == main && vk.sub == sub
	}
	if err := er.it.Error(); err != nil {
		return Event{}, false, fmt.Errorf("mvcc: events: iterate versions: %w", err)
	}
	switch kind {
	case kindPut:
		if !found {
			if main <= er.compactRev {
				return Event{}, false, nil
			}
			return Event{}, false, fmt.Errorf("mvcc: events: version %d/%d of %q missing", main, sub, userKey)
		}
		kv, err := er.alloc.decode(er.it, vk, false)
		if err != nil {
			return Event{}, false, err
		}
		ev = Event{Type: mvccpb.Event_PUT, KV: kv}
	case kindTombstone:
		kv := er.alloc.newKV()
		kv.Key = append(er.alloc.bytes(len(userKey)), userKey...)
		kv.ModRevision = main
		ev = Event{Type: mvccpb.Event_DELETE, KV: kv}
		if !found {
			return ev, true, nil
		}
	default:
		return Event{}, false, fmt.Errorf("mvcc: history entry %d/%d has unknown kind %d", main, sub, kind)
	}
	// PrevKV is the key before the transaction, as etcd reads it at mod_revision-1: the
	// newest older version with a lower main revision (skipping earlier changes of the same
	// transaction), if it is a put. A put that starts the key's life has none.
	if ev.Type == mvccpb.Event_PUT && ev.KV.CreateRevision == main {
		return ev, true, nil
	}
	for er.it.Next() && hasKeyPrefix(er.it.Key(), sc.pfx) {
		pk, err := parseVersionKey(er.it.Key())
		if err != nil {
			return Event{}, false, err
		}
		if pk.main == main {
			continue
		}
		if pk.kind == kindPut {
			if ev.PrevKV, err = er.alloc.decode(er.it, pk, false); err != nil {
				return Event{}, false, err
			}
		}
		break
	}
	if err := er.it.Error(); err != nil {
		return Event{}, false, fmt.Errorf("mvcc: events: iterate versions: %w", err)
	}
	return ev, true, nil
}
