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
			// must keep up with a thousand leases on it, none expiring while it is kept alive.
			// The leases last 2 s, etcd's smallest TTL at its default timings: clientv3 sends a
			// lease's first keep-alive up to 500 ms after KeepAlive and the next ones every 500 ms
			// to 1 s, so a 1 s lease leaves the member under half a second per renewal, which a
			// loaded two-core machine running the other packages' tests does not always give.
			// As in concurrency.NewSession, each lease is kept alive as soon as it is granted.
			const ttl = 2
			k := keyer(t)
			mcli := c.Members[len(c.Members)-1].Client()
			waitLeaseClock(t, mcli)
			n := 1000
			if raceEnabled {
				n = 300
			}
			kctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			// The longest time any lease went without a keep-alive response, counted from its
			// grant: logged, and reported if a lease expires.
			var gapMu sync.Mutex
			var maxGap time.Duration
			var nresp int
			gapInfo := func() string {
				gapMu.Lock()
				defer gapMu.Unlock()
				return fmt.Sprintf("%d keep-alive responses, longest time a lease went without one %v", nresp, maxGap.Round(time.Millisecond))
			}
			ids := make([]clientv3.LeaseID, n)
			var gwg, wg sync.WaitGroup
			for i := range ids {
				gwg.Add(1)
				go func() {
					defer gwg.Done()
					g, err := mcli.Grant(ctx(t), ttl)
					if err != nil {
						t.Errorf("grant: %v", err)
						return
					}
					last := time.Now()
					ids[i] = g.ID
					ka, err := mcli.KeepAlive(kctx, g.ID)
					if err != nil {
						t.Errorf("keep-alive %d: %v", i, err)
						return
					}
					wg.Add(1)
					go func() {
						defer wg.Done()
						for range ka {
							now := time.Now()
							gapMu.Lock()
							maxGap = max(maxGap, now.Sub(last))
							nresp++
							gapMu.Unlock()
							last = now
						}
					}()
				}()
			}
			gwg.Wait()
			if t.Failed() {
				t.FailNow()
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
				t.Fatalf("%d of %d puts with a kept-alive %ds lease failed (e.g. %v): the leases expired while being kept alive (%s)", n, len(ids), ttl, firstErr.Load(), gapInfo())
			}
			start := time.Now()
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for time.Since(start) < 2*ttl*time.Second {
				g := mustGet(t, cli, k(""), clientv3.WithPrefix(), clientv3.WithCountOnly())
				if g.Count != int64(n) {
					t.Fatalf("%d %ds leases kept alive by one client: only %d of their keys left %v after all were attached (%s)", n, ttl, g.Count, time.Since(start).Round(time.Millisecond), gapInfo())
				}
				<-tick.C
			}
			cancel()
			wg.Wait()
			t.Logf("%d %ds leases on one client: %s", n, ttl, gapInfo())
		})

	})
}
