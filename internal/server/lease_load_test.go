package server_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ordo-db/ordo/internal/testcluster"
)

// TestLeaseLoad runs the lease tests that put a member under load (many leases, many
// keep-alives) on clusters of their own, after TestLease, so that they do not disturb its
// timing checks.
func TestLeaseLoad(t *testing.T) {
	forEachClusterSize(t, func(t *testing.T, c *testcluster.Cluster) {
		cli := c.Client()

		t.Run("RenewRacingExpiry", func(t *testing.T) {
			// Keep-alives sent around the moment leases expire: a keep-alive that is answered with
			// a positive TTL renewed the lease, so the lease may not be revoked (its keys deleted)
			// less than TTL after the keep-alive was sent (the member applied the renewal between
			// the sending and the answer; the TTL counts from there). Many leases expire at once so that the leader's
			// expiry proposals queue (it keeps a bounded number in flight) and keep-alives land
			// between its expiry check and the proposal of each expiry.
			k := keyer(t)
			waitLeaseClock(t, cli)
			n := 600
			if raceEnabled {
				n = 200
			}
			const ttl = 1
			rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
			type leaseRun struct {
				id      clientv3.LeaseID
				key     string
				granted time.Time
				delay   time.Duration
				acks    []time.Time // when each acknowledged keep-alive was sent
			}
			runs := make([]*leaseRun, n)
			var wg sync.WaitGroup
			var mu sync.Mutex
			for i := range runs {
				runs[i] = &leaseRun{key: k(fmt.Sprintf("%04d", i)), delay: time.Duration(950+rng.IntN(500)) * time.Millisecond}
			}
			for i, r := range runs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					g, err := cli.Grant(ctx(t), ttl)
					if err != nil {
						t.Errorf("grant %d: %v", i, err)
						return
					}
					mu.Lock()
					r.id, r.granted = g.ID, time.Now()
					mu.Unlock()
					if _, err := cli.Put(ctx(t), r.key, "v", clientv3.WithLease(g.ID)); err != nil {
						t.Errorf("put %d: %v", i, err)
					}
				}()
			}
			wg.Wait()
			if t.Failed() {
				t.FailNow()
			}
			rev := currentRev(t, cli)
			wctx, wcancel := context.WithTimeout(context.Background(), watchTimeout)
			defer wcancel()
			wch := cli.Watch(wctx, k(""), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
			deleted := map[string]time.Time{}
			wdone := make(chan struct{})
			go func() {
				defer close(wdone)
				for resp := range wch {
					now := time.Now()
					mu.Lock()
					for _, ev := range resp.Events {
						if ev.Type == mvccpb.DELETE {
							deleted[string(ev.Kv.Key)] = now
						}
					}
					done := len(deleted) == n
					mu.Unlock()
					if done {
						return
					}
				}
			}()
			for _, r := range runs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					mu.Lock()
					next := r.granted.Add(r.delay)
					mu.Unlock()
					for i := 0; i < 3; i++ {
						timer := time.NewTimer(time.Until(next))
						<-timer.C
						cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
						sent := time.Now()
						resp, err := cli.KeepAliveOnce(cctx, r.id)
						cancel()
						if err != nil || resp.TTL <= 0 {
							return
						}
						mu.Lock()
						r.acks = append(r.acks, sent)
						mu.Unlock()
						next = time.Now().Add(r.delay)
					}
				}()
			}
			wg.Wait()
			select {
			case <-wdone:
			case <-wctx.Done():
			}
			wcancel()
			mu.Lock()
			defer mu.Unlock()
			var bad []string
			nacks := 0
			closest := time.Duration(1 << 62) // the shortest time from a keep-alive's sending to its key's deletion
			for _, r := range runs {
				nacks += len(r.acks)
				del, ok := deleted[r.key]
				if !ok {
					continue
				}
				for _, a := range r.acks {
					if a.Before(del) {
						closest = min(closest, del.Sub(a))
					}
					if a.Before(del) && del.Before(a.Add(ttl*time.Second)) {
						bad = append(bad, fmt.Sprintf("lease %x: keep-alive sent at grant+%v and answered with TTL %d, its key deleted %v after it was sent", r.id, a.Sub(r.granted).Round(time.Millisecond), ttl, del.Sub(a).Round(time.Millisecond)))
					}
				}
			}
			t.Logf("%d leases, %d acknowledged keep-alives, %d keys deleted, %d deleted less than TTL after an acknowledged keep-alive was sent; shortest time from sending to deletion %v",
				n, nacks, len(deleted), len(bad), closest.Round(time.Millisecond))
			if len(bad) > 0 {
				t.Fatalf("leases revoked right after a keep-alive renewed them:\n%s", strings.Join(bad, "\n"))
			}
		})

		t.Run("KeepAliveManyLeasesOneClient", func(t *testing.T) {
			// clientv3 sends the keep-alives of all of a client's leases on one stream; a member
			// must keep up with a thousand 1s leases on it (etcd renews on the leader without a
			// raft round trip, or forwards to it over HTTP from a follower).
			k := keyer(t)
			mcli := c.Members[len(c.Members)-1].Client()
			waitLeaseClock(t, mcli)
			n := 1000
			if raceEnabled {
				n = 300
			}
			ids := make([]clientv3.LeaseID, n)
			var wg sync.WaitGroup
			for i := range ids {
				wg.Add(1)
				go func() {
					defer wg.Done()
					g, err := mcli.Grant(ctx(t), 1)
					if err != nil {
						t.Errorf("grant: %v", err)
						return
					}
					ids[i] = g.ID
				}()
			}
			wg.Wait()
			if t.Failed() {
				t.FailNow()
			}
			kctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			// The longest time any lease went without a keep-alive response: clientv3 asks every
			// TTL/3 (it sends due keep-alives every 500ms), so a member keeping up answers each
			// lease well within its TTL.
			var gapMu sync.Mutex
			var maxGap time.Duration
			var nresp int
			gapInfo := func() string {
				gapMu.Lock()
				defer gapMu.Unlock()
				return fmt.Sprintf("%d keep-alive responses, longest time a lease went without one %v", nresp, maxGap.Round(time.Millisecond))
			}
			for i, id := range ids {
				ka, err := mcli.KeepAlive(kctx, id)
				if err != nil {
					t.Fatalf("keep-alive %d: %v", i, err)
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					last := time.Now()
					for range ka {
						now := time.Now()
						gapMu.Lock()
						maxGap = max(maxGap, now.Sub(last))
						nresp++
						gapMu.Unlock()
						last = now
					}
				}()
			}
			var pwg sync.WaitGroup
			var failed atomic.Int64
			var firstErr atomic.Value
			for i, id := range ids {
				pwg.Add(1)
				go func() {
					defer pwg.Done()
					if _, err := mcli.Put(ctx(t), k(fmt.Sprintf("%04d", i)), "v", clientv3.WithLease(id)); err != nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, err.Error())
					}
				}()
			}
			pwg.Wait()
			if n := failed.Load(); n > 0 {
				t.Fatalf("%d of %d puts with a kept-alive 1s lease failed (e.g. %v): the leases expired while being kept alive (%s)", n, len(ids), firstErr.Load(), gapInfo())
			}
			start := time.Now()
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for time.Since(start) < 3*time.Second {
				g := mustGet(t, cli, k(""), clientv3.WithPrefix(), clientv3.WithCountOnly())
				if g.Count != int64(n) {
					t.Fatalf("%d 1s leases kept alive by one client: only %d of their keys left %v after all were attached (%s)", n, g.Count, time.Since(start).Round(time.Millisecond), gapInfo())
				}
				<-tick.C
			}
			cancel()
			wg.Wait()
			t.Logf("%d leases on one client: %s", n, gapInfo())
			gapMu.Lock()
			defer gapMu.Unlock()
			if maxGap >= time.Second {
				t.Fatalf("%d 1s leases kept alive by one client: a lease went %v without a keep-alive response (a member must renew each within its TTL)", n, maxGap.Round(time.Millisecond))
			}
		})

	})
}
