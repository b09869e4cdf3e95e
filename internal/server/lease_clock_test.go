package server_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ordo-db/ordo/internal/testcluster"
)

// TestLeaseClockUnderLoad checks that the replicated lease clock keeps wall-clock pace while
// the cluster commits a steady write load: the leader's tick estimate must not lose the commit
// time of each tick. On 3 members under load, a lease granted with TTL T and never kept alive
// must be revoked between T and T+1s after the grant, and LeaseTimeToLive, asked of every
// member in turn, must track wall time within 1s over 10s.
func TestLeaseClockUnderLoad(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{Quiet: true})
	if _, err := c.Leader(30 * time.Second); err != nil {
		t.Fatalf("leader: %v", err)
	}
	cli := c.Client()
	k := keyer(t)
	waitLeaseClock(t, cli)

	// The steady write load: writers putting 2 KiB values as fast as they are committed.
	loadCtx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	var (
		puts    atomic.Int64
		putNs   atomic.Int64
		loadErr atomic.Value
		loadWG  sync.WaitGroup
	)
	val := strings.Repeat("v", 2048)
	writers := 64
	if raceEnabled {
		writers = 16
	}
	for w := range writers {
		loadWG.Add(1)
		go func() {
			defer loadWG.Done()
			for i := 0; loadCtx.Err() == nil; i++ {
				start := time.Now()
				cctx, cancel := context.WithTimeout(loadCtx, callTimeout)
				_, err := cli.Put(cctx, k(fmt.Sprintf("load/%02d/%03d", w, i%200)), val)
				cancel()
				if err != nil {
					if loadCtx.Err() == nil {
						loadErr.CompareAndSwap(nil, err)
					}
					return
				}
				puts.Add(1)
				putNs.Add(int64(time.Since(start)))
			}
		}()
	}
	loadStart := time.Now()
	stopAndReport := func() {
		stopLoad()
		loadWG.Wait()
		n := puts.Load()
		if n > 0 {
			t.Logf("MEASURED load: %d writers, %d puts in %v (%.0f/s), mean put latency %v",
				writers, n, time.Since(loadStart).Round(time.Millisecond), float64(n)/time.Since(loadStart).Seconds(),
				(time.Duration(putNs.Load()) / time.Duration(n)).Round(100*time.Microsecond))
		}
		if err, _ := loadErr.Load().(error); err != nil {
			t.Fatalf("load: put failed: %v", err)
		}
	}
	var stopOnce sync.Once
	stop := func() { stopOnce.Do(stopAndReport) }
	defer stop()
	waitFor(t, 10*time.Second, "the load runs", func() (bool, error) { return puts.Load() >= 200, nil })

	// TimeToLive through every member, each polled every 25ms for 10s. It reports whole
	// seconds, rounded down: when a member's answer steps from n+1 to n, the remaining time
	// it computes is n+1 at that moment, which gives its deviation from the wall time since the
	// grant to within the polling interval.
	type ttlStep struct {
		elapsed time.Duration // since the grant's response, midway between the two polls
		dev     time.Duration // remaining time minus (granted TTL - elapsed)
	}
	const trackTTL = 15
	tracked := mustGrant(t, cli, trackTTL)
	trackedAt := time.Now()
	steps := make([][]ttlStep, len(c.Members))
	trackErrs := make([]error, len(c.Members))
	var trackWG sync.WaitGroup
	for i, m := range c.Members {
		mcli := m.Client()
		trackWG.Add(1)
		go func() {
			defer trackWG.Done()
			tick := time.NewTicker(25 * time.Millisecond)
			defer tick.Stop()
			last, lastSent := int64(trackTTL+1), trackedAt
			for time.Since(trackedAt) < 10*time.Second {
				<-tick.C
				sent := time.Now()
				cctx, cancel := context.WithTimeout(context.Background(), callTimeout)
				r, err := mcli.TimeToLive(cctx, tracked.ID)
				cancel()
				if err != nil {
					trackErrs[i] = fmt.Errorf("time-to-live through member %d: %w", i, err)
					return
				}
				if r.TTL < last && last <= trackTTL {
					el := lastSent.Sub(trackedAt) + sent.Sub(lastSent)/2
					remaining := time.Duration(r.TTL+1) * time.Second
					steps[i] = append(steps[i], ttlStep{elapsed: el, dev: remaining - (trackTTL*time.Second - el)})
				}
				last, lastSent = r.TTL, sent
			}
		}()
	}

	// Leases with TTL T, not kept alive, one after the other.
	type expiry struct {
		ttl             int64
		present, absent time.Duration // last read finding the key sent, first finding it gone answered; from the grant's response
		sentToResp      time.Duration
	}
	var expiries []expiry
	for i, ttl := range []int64{2, 5, 2} {
		key := k(fmt.Sprintf("lease/%d", i))
		sent := time.Now()
		g, err := cli.Grant(ctx(t), ttl)
		if err != nil {
			t.Fatalf("grant: %v", err)
		}
		granted := time.Now()
		mustPut(t, cli, key, "v", clientv3.WithLease(g.ID))
		v := watchVanish(t, cli, key, granted.Add(time.Duration(ttl)*time.Second), sent.Add(time.Duration(ttl)*time.Second+time.Second))
		expiries = append(expiries, expiry{ttl: ttl, present: v.LastPresent.Sub(granted), absent: v.FirstAbsent.Sub(granted), sentToResp: granted.Sub(sent)})
	}
	trackWG.Wait()
	stop()

	for _, e := range expiries {
		t.Logf("MEASURED lease TTL %ds under load (grant answered %v after it was sent): key still present in a read sent at G+%v, gone in a read answered at G+%v (G = grant response)",
			e.ttl, e.sentToResp.Round(time.Millisecond), e.present.Round(time.Millisecond), e.absent.Round(time.Millisecond))
	}
	for _, err := range trackErrs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for i, st := range steps {
		if len(st) < 8 {
			t.Fatalf("member %d: time-to-live stepped down only %d times in 10s", i, len(st))
		}
		var line []string
		lo, hi := st[0].dev, st[0].dev
		for _, s := range st {
			line = append(line, fmt.Sprintf("%.2fs:%+.2fs", s.elapsed.Seconds(), s.dev.Seconds()))
			lo, hi = min(lo, s.dev), max(hi, s.dev)
			if s.dev > time.Second || s.dev < -time.Second {
				t.Errorf("member %d: time-to-live %v after the grant deviates %v from the wall time since the grant (allowed ±1s)", i, s.elapsed.Round(time.Millisecond), s.dev.Round(time.Millisecond))
			}
		}
		drift := st[len(st)-1].dev - st[0].dev
		t.Logf("MEASURED member %d: time-to-live of a %ds lease minus wall-clock remaining, at each step of its answer (elapsed:deviation): %s; range %+.2fs..%+.2fs, drift %+.2fs over %.1fs",
			i, trackTTL, strings.Join(line, " "), lo.Seconds(), hi.Seconds(), drift.Seconds(), (st[len(st)-1].elapsed - st[0].elapsed).Seconds())
		// A clock that loses the commit time of every tick drifts steadily (about 0.1s a second
		// under this load); a member's answer may only vary by its lag behind the leader.
		if drift > 500*time.Millisecond || drift < -500*time.Millisecond {
			t.Errorf("member %d: the remaining time drifted %v against wall time over %v", i, drift.Round(time.Millisecond), (st[len(st)-1].elapsed - st[0].elapsed).Round(time.Millisecond))
		}
	}
}
