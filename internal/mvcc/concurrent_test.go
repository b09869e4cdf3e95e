package mvcc

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// TestConcurrentReadsWritesCompaction runs the writer, physical compaction and readers
// at the same time. Every revision R writes a pattern readers can verify at any revision:
// keys k0..k9 all = R, except that when R%5 == 0 only k0..k4 are put and k5..k9 deleted.
func TestConcurrentReadsWritesCompaction(t *testing.T) {
	s, db, _ := newStore(t)
	const keys = 10
	revs := 400
	if testing.Short() {
		revs = 100
	}
	key := func(i int) []byte { return []byte("k" + strconv.Itoa(i)) }

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var done atomic.Bool
	errc := make(chan error, 8)
	compactc := make(chan int64, 1)
	var wg sync.WaitGroup

	// Writer: several txns per batch, a compaction every 20 revisions.
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer done.Store(true)
		defer close(compactc)
		for s.CurrentRev() < int64(revs) {
			b := db.NewIndexedBatch()
			w := s.NewWriter(b)
			for range 3 {
				rev := w.Rev() + 1
				n := keys
				if rev%5 == 0 {
					n = keys / 2
					if _, err := w.DeleteRange(key(n), []byte("k:")); err != nil {
						errc <- err
						return
					}
				}
				for i := range n {
					if _, err := w.Put(key(i), []byte(strconv.FormatInt(rev, 10)), 0); err != nil {
						errc <- err
						return
					}
				}
				if got := w.EndTxn(); got != rev {
					errc <- fmt.Errorf("EndTxn = %d, want %d", got, rev)
					return
				}
				if rev%20 == 0 {
					if err := w.Compact(rev - 10); err != nil {
						errc <- err
						return
					}
				}
			}
			if err := b.Commit(pebble.NoSync); err != nil {
				errc <- err
				return
			}
			s.Publish(w)
			if err := b.Close(); err != nil {
				errc <- err
				return
			}
			if rev, ok := s.PendingCompaction(); ok {
				select {
				case compactc <- rev:
				default:
				}
			}
		}
	}()

	// Physical compaction.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for rev := range compactc {
			if err := s.Compact(ctx, rev); err != nil {
				errc <- err
				return
			}
		}
	}()

	// Readers.
	var reads atomic.Int64
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !done.Load() || i < 50; i++ {
				if err := checkPattern(ctx, s, keys, int64(g*7919+i)); err != nil {
					errc <- err
					return
				}
				reads.Add(1)
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	t.Logf("%d verified reads, final revision %d, compacted at %d", reads.Load(), s.CurrentRev(), s.CompactRev())
}

// checkPattern verifies a read view against the pattern of the concurrent test.
func checkPattern(ctx context.Context, s *Store, keys int, salt int64) error {
	v, err := s.NewReadView()
	if err != nil {
		return err
	}
	defer v.Close()
	if v.CompactRev() > v.Rev() {
		return fmt.Errorf("view compact %d > rev %d", v.CompactRev(), v.Rev())
	}
	lo := max(v.CompactRev(), 1)
	rev := lo + salt%(v.Rev()-lo+1)
	r, err := v.Range(ctx, []byte("k"), []byte("l"), RangeOptions{Rev: rev})
	if err != nil {
		return fmt.Errorf("range at %d (view %d, compact %d): %w", rev, v.Rev(), v.CompactRev(), err)
	}
	want := keys
	if rev%5 == 0 {
		want = keys / 2
	}
	if rev == 1 {
		want = 0
	}
	if len(r.KVs) != want || r.Count != int64(want) {
		return fmt.Errorf("range at %d: %d kvs (count %d), want %d", rev, len(r.KVs), r.Count, want)
	}
	for _, kv := range r.KVs {
		if kv.ModRevision != rev || string(kv.Value) != strconv.FormatInt(rev, 10) {
			return fmt.Errorf("range at %d: %s", rev, fmtKV(kv))
		}
	}
	// Events from the compact revision (or a bit later) are complete past it.
	from := lo + salt%3
	evs, next, err := v.Events(from, 15)
	if err != nil {
		return fmt.Errorf("events from %d: %w", from, err)
	}
	if from <= v.Rev() && next <= from {
		return fmt.Errorf("events from %d: next %d", from, next)
	}
	perRev := map[int64]int{}
	for _, ev := range evs {
		perRev[ev.KV.ModRevision]++
		if ev.Type == mvccpb.Event_PUT && string(ev.KV.Value) != strconv.FormatInt(ev.KV.ModRevision, 10) {
			return fmt.Errorf("event %s", fmtKV(ev.KV))
		}
	}
	for r, n := range perRev {
		if r <= v.CompactRev() {
			continue
		}
		// Every revision changes all keys: 10 puts, or 5 puts and 5 deletes.
		if n != keys {
			return fmt.Errorf("events at %d: %d, want %d", r, n, keys)
		}
	}
	if _, err := v.Range(ctx, []byte("k"), nil, RangeOptions{Rev: v.CompactRev() - 1}); v.CompactRev() > 1 && !errors.Is(err, ErrCompacted) {
		return fmt.Errorf("read below compaction: %v", err)
	}
	return nil
}
