package server_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ordo-db/ordo/internal/testcluster"
)

// contextWithCancel returns a cancelable context bounded by callTimeout.
func contextWithCancel(t testing.TB) (context.Context, context.CancelFunc) {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), callTimeout)
	t.Cleanup(cancel)
	return c, cancel
}

// waitClosed drains wch until clientv3 closes it, failing if that takes too long.
func waitClosed(t testing.TB, wch clientv3.WatchChan, what string) {
	t.Helper()
	timer := time.NewTimer(watchTimeout)
	defer timer.Stop()
	for {
		select {
		case _, ok := <-wch:
			if !ok {
				return
			}
		case <-timer.C:
			t.Fatalf("%s: watch channel still open after %v", what, watchTimeout)
		}
	}
}

// readSeq feeds every event of wch to chk until it holds n events. It returns an error for a
// closed channel, an error response, a timeout, or an event chk rejects.
func readSeq(wch clientv3.WatchChan, chk *seqChecker, n int) error {
	timer := time.NewTimer(watchTimeout)
	defer timer.Stop()
	for len(chk.seen) < n {
		timer.Reset(watchTimeout)
		select {
		case resp, ok := <-wch:
			if !ok {
				return fmt.Errorf("watch channel closed after %d of %d events", len(chk.seen), n)
			}
			if err := resp.Err(); err != nil || resp.Canceled {
				return fmt.Errorf("after %d of %d events: watch response error %v (canceled %v, compact revision %d)", len(chk.seen), n, err, resp.Canceled, resp.CompactRevision)
			}
			for _, ev := range resp.Events {
				if err := chk.add(ev); err != nil {
					return err
				}
			}
		case <-timer.C:
			return fmt.Errorf("no watch response for %v after %d of %d events", watchTimeout, len(chk.seen), n)
		}
	}
	return nil
}

// putLog records acknowledged puts.
type putLog struct {
	mu    sync.Mutex
	acked map[int64][2]string
}

func (l *putLog) add(rev int64, key, val string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if old, dup := l.acked[rev]; dup {
		return fmt.Errorf("puts %v and %s=%s acknowledged at the same revision %d", old, key, val, rev)
	}
	l.acked[rev] = [2]string{key, val}
	return nil
}

// runOrdering has writers put total single keys under the test's prefix concurrently while
// watchers (half on one client, i.e. one gRPC stream; the rest on their own clients spread
// over the members) watch the prefix from the revision before the first put. Every watcher
// must see every revision exactly once, in order, matching the acknowledged puts.
func runOrdering(t *testing.T, c *testcluster.Cluster, total, writers, watchers int) {
	wm, _ := watchAndWriteMembers(t, c)
	k := keyer(t)
	shared := wm.Client()
	start := currentRev(t, shared) + 1

	type watch struct {
		wch clientv3.WatchChan
		chk *seqChecker
	}
	ws := make([]watch, watchers)
	for i := range ws {
		cli := shared
		if i >= watchers/2 {
			cli = c.Members[i%len(c.Members)].Client()
		}
		prevKV := i%3 != 2
		opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithRev(start)}
		if prevKV {
			opts = append(opts, clientv3.WithPrevKV())
		}
		ws[i] = watch{cli.Watch(watchCtx(t, 2*time.Minute), prefix(t), opts...), newSeqChecker(start, prevKV)}
	}

	var readers sync.WaitGroup
	for i, w := range ws {
		readers.Add(1)
		go func() {
			defer readers.Done()
			if err := readSeq(w.wch, w.chk, total); err != nil {
				t.Errorf("watcher %d: %v", i, err)
			}
		}()
	}

	log := &putLog{acked: map[int64][2]string{}}
	kv := c.Client()
	var wg sync.WaitGroup
	began := time.Now()
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < total; i += writers {
				key, val := k(fmt.Sprintf("k%02d", i%37)), fmt.Sprintf("w%d-%d", w, i)
				cctx, cancel := context.WithTimeout(context.Background(), callTimeout)
				resp, err := kv.Put(cctx, key, val)
				cancel()
				if err != nil {
					t.Errorf("writer %d: put %s: %v", w, key, err)
					return
				}
				if err := log.add(resp.Header.Revision, key, val); err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d puts by %d writers in %v", total, writers, time.Since(began))
	readers.Wait()
	if t.Failed() {
		t.FailNow()
	}
	if len(log.acked) != total {
		t.Fatalf("%d puts acknowledged, want %d", len(log.acked), total)
	}
	for rev := start; rev < start+int64(total); rev++ {
		if _, ok := log.acked[rev]; !ok {
			t.Fatalf("no put acknowledged at revision %d though only this test writes (revisions %d..%d)", rev, start, start+int64(total)-1)
		}
	}
	for i, w := range ws {
		if err := w.chk.checkAcked(log.acked); err != nil {
			t.Fatalf("watcher %d: %v", i, err)
		}
	}
	// Nothing more is pending: every watcher's next event is the next write.
	sentinel := mustPut(t, kv, k("sentinel"), "s").Header.Revision
	for i, w := range ws {
		evs, _ := recvEvents(t, w.wch, 1, fmt.Sprintf("watcher %d after all puts", i))
		if len(evs) != 1 || evs[0].Kv.ModRevision != sentinel {
			t.Fatalf("watcher %d: after all %d puts got %s, want only the sentinel put at %d", i, total, eventsString(evs), sentinel)
		}
	}
}
