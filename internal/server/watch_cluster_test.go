package server_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ordo-db/ordo/internal/testcluster"
)

// readUntil feeds every event of wch to chk until the revision sent on target was delivered.
func readUntil(wch clientv3.WatchChan, chk *seqChecker, target <-chan int64) error {
	timer := time.NewTimer(watchTimeout)
	defer timer.Stop()
	last := int64(-1)
	for last < 0 || chk.next <= last {
		timer.Reset(watchTimeout)
		select {
		case last = <-target:
			target = nil
		case resp, ok := <-wch:
			if !ok {
				return fmt.Errorf("watch channel closed at revision %d", chk.next-1)
			}
			if err := resp.Err(); err != nil || resp.Canceled {
				return fmt.Errorf("at revision %d: watch response error %v (canceled %v, compact revision %d)", chk.next-1, err, resp.Canceled, resp.CompactRevision)
			}
			for _, ev := range resp.Events {
				if err := chk.add(ev); err != nil {
					return err
				}
			}
		case <-timer.C:
			return fmt.Errorf("no watch response for %v at revision %d (target %d)", watchTimeout, chk.next-1, last)
		}
	}
	return nil
}

// retryWriters runs writers goroutines that together put n keys under p through kv, retrying
// each put (with the same value) until it is acknowledged; puts whose outcome is unknown may
// have been applied too. It returns once all were acknowledged, and counts acknowledgements in
// done while running.
func retryWriters(t *testing.T, kv *clientv3.Client, p string, from, n, writers int, log *putLog, done *atomic.Int64) {
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := from + w; i < from+n; i += writers {
				key, val := fmt.Sprintf("%sk%02d", p, i%29), fmt.Sprintf("v%d", i)
				deadline := time.Now().Add(30 * time.Second)
				for {
					cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					resp, err := kv.Put(cctx, key, val)
					cancel()
					if err == nil {
						if err := log.add(resp.Header.Revision, key, val); err != nil {
							t.Errorf("writer %d: %v", w, err)
							return
						}
						done.Add(1)
						break
					}
					if time.Now().After(deadline) {
						t.Errorf("writer %d: put %s still failing after 30s: %v", w, key, err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
}

// waitCount waits until done reaches n.
func waitCount(t *testing.T, done *atomic.Int64, n int64, what string) {
	t.Helper()
	waitFor(t, 30*time.Second, what, func() (bool, error) { return done.Load() >= n, nil })
}

// TestWatchMemberRestart restarts the member a watcher's client is connected to (only to it)
// while writes go on through the leader: clientv3 resumes the watch after the restart from
// its last revision + 1, and the watcher sees every revision exactly once. The restarted
// member then serves from its revision history (its in-memory ring starts anew), which the
// test checks with a full replay and a compaction.
func TestWatchMemberRestart(t *testing.T) {
	checkNoWatchLeaks(t)
	c := testcluster.New(t, 3, testcluster.Options{})
	lead, err := c.Leader(30 * time.Second)
	if err != nil {
		t.Fatalf("leader: %v", err)
	}
	x := c.Members[(lead+1)%3]
	wcli, kv := x.Client(), c.Members[lead].Client()
	p := prefix(t) // the sub-tests below watch this test's keys
	start := currentRev(t, wcli) + 1
	wch := wcli.Watch(watchCtx(t, 2*time.Minute), p, clientv3.WithPrefix(), clientv3.WithRev(start), clientv3.WithPrevKV())
	chk := newSeqChecker(start, true)
	target := make(chan int64, 1)
	readErr := make(chan error, 1)
	go func() { readErr <- readUntil(wch, chk, target) }()

	log := &putLog{acked: map[int64][2]string{}}
	var done atomic.Int64
	const before, after = 700, 500
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		retryWriters(t, kv, p, 0, before, 4, log, &done)
	}()
	waitCount(t, &done, 150, "puts before the stop")
	x.Stop()
	t.Logf("stopped %s after %d puts", x.Name, done.Load())
	<-wrote
	wrote = make(chan struct{})
	go func() {
		defer close(wrote)
		retryWriters(t, kv, p, before, after, 4, log, &done)
	}()
	if err := x.Restart(); err != nil {
		t.Fatalf("restart %s: %v", x.Name, err)
	}
	t.Logf("restarted %s after %d puts", x.Name, done.Load())
	<-wrote
	if t.Failed() {
		t.FailNow()
	}
	final := currentRev(t, kv)
	target <- final
	if err := <-readErr; err != nil {
		t.Fatalf("watcher across the restart: %v", err)
	}
	if err := chk.checkAcked(log.acked); err != nil {
		t.Fatalf("watcher across the restart: %v", err)
	}

	t.Run("ReplayFromStorage", func(t *testing.T) {
		// The restarted member's ring holds nothing from before the restart.
		replay := newSeqChecker(start, true)
		wch := wcli.Watch(watchCtx(t, time.Minute), p, clientv3.WithPrefix(), clientv3.WithRev(start), clientv3.WithPrevKV())
		if err := readSeq(wch, replay, int(final-start+1)); err != nil {
			t.Fatalf("replay from %d on the restarted member: %v", start, err)
		}
		if err := replay.checkAcked(log.acked); err != nil {
			t.Fatalf("replay: %v", err)
		}
	})

	t.Run("CompactedFromStorage", func(t *testing.T) {
		compactAt := start + 50
		if _, err := kv.Compact(ctx(t), compactAt, clientv3.WithCompactPhysical()); err != nil {
			t.Fatalf("compact at %d: %v", compactAt, err)
		}
		currentRev(t, wcli) // x applied the compaction
		wch := wcli.Watch(watchCtx(t, callTimeout), p, clientv3.WithPrefix(), clientv3.WithRev(compactAt-1))
		resp := recvResp(t, wch, "watch below the compact revision")
		if resp.CompactRevision != compactAt || !resp.Canceled || !isErr(resp.Err(), rpctypes.ErrCompacted) {
			t.Fatalf("watch from %d after compacting at %d: got compact revision %d, canceled %v, err %v, %d events",
				compactAt-1, compactAt, resp.CompactRevision, resp.Canceled, resp.Err(), len(resp.Events))
		}
		wch = wcli.Watch(watchCtx(t, callTimeout), p, clientv3.WithPrefix(), clientv3.WithRev(compactAt))
		chk := newSeqChecker(compactAt, false)
		if err := readSeq(wch, chk, int(final-compactAt+1)); err != nil {
			t.Fatalf("watch from the compact revision %d: %v", compactAt, err)
		}
	})
}

// TestWatchLeaderChange stops the leader while a watcher on a follower receives writes made
// through the other follower: no revision is missed or repeated.
func TestWatchLeaderChange(t *testing.T) {
	checkNoWatchLeaks(t)
	c := testcluster.New(t, 3, testcluster.Options{})
	lead, err := c.Leader(30 * time.Second)
	if err != nil {
		t.Fatalf("leader: %v", err)
	}
	wcli, kv := c.Members[(lead+1)%3].Client(), c.Members[(lead+2)%3].Client()
	start := currentRev(t, wcli) + 1
	wch := wcli.Watch(watchCtx(t, 2*time.Minute), prefix(t), clientv3.WithPrefix(), clientv3.WithRev(start), clientv3.WithPrevKV())
	chk := newSeqChecker(start, true)
	target := make(chan int64, 1)
	readErr := make(chan error, 1)
	go func() { readErr <- readUntil(wch, chk, target) }()

	log := &putLog{acked: map[int64][2]string{}}
	var done atomic.Int64
	const total = 800
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		retryWriters(t, kv, prefix(t), 0, total, 4, log, &done)
	}()
	waitCount(t, &done, 200, "puts before the leader stops")
	c.Members[lead].Stop()
	t.Logf("stopped leader %s after %d puts", c.Members[lead].Name, done.Load())
	<-wrote
	if t.Failed() {
		t.FailNow()
	}
	newLead, err := c.Leader(30 * time.Second)
	if err != nil || newLead == lead {
		t.Fatalf("new leader: %d, %v", newLead, err)
	}
	final := currentRev(t, kv)
	target <- final
	if err := <-readErr; err != nil {
		t.Fatalf("watcher across the leader change: %v", err)
	}
	if err := chk.checkAcked(log.acked); err != nil {
		t.Fatalf("watcher across the leader change: %v", err)
	}
	t.Logf("watched revisions %d..%d (%d acknowledged puts) across the leader change", start, final, len(log.acked))
}
