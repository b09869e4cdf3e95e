package lease

import (
	"fmt"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// fakeClock is a member's monotonic clock, moved by the test.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func (c *fakeClock) set(ms int64) {
	c.t = time.Unix(1_000_000, 0).Add(time.Duration(ms) * time.Millisecond)
}

type quietLogger struct{ tb testing.TB }

func (quietLogger) Infof(string, ...any)           {}
func (l quietLogger) Errorf(f string, args ...any) { l.tb.Logf(f, args...) }
func (l quietLogger) Fatalf(f string, args ...any) { l.tb.Fatalf(f, args...) }

// testStore opens a Store on an in-memory Pebble whose clock is the returned fakeClock, at
// 0 ms.
func testStore(t *testing.T) (*Store, *fakeClock) {
	t.Helper()
	db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem(), Logger: quietLogger{t}})
	if err != nil {
		t.Fatalf("open pebble: %v", err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("close pebble: %v", err)
		}
	})
	clk := &fakeClock{}
	clk.set(0)
	s, err := open(db, clk.now)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return s, clk
}

// apply runs f in a batch and commits it, as the apply loop does.
func apply(t *testing.T, s *Store, f func(b *pebble.Batch) error) {
	t.Helper()
	b := s.db.NewBatch()
	defer b.Close()
	if err := f(b); err != nil {
		t.Fatalf("apply: %v", err)
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		t.Fatalf("commit: %v", err)
	}
}

func applyTick(t *testing.T, s *Store, clock int64) {
	t.Helper()
	apply(t, s, func(b *pebble.Batch) error { return s.Tick(b, clock) })
}

// leaderSim plays the leader's tick loop (internal/server runLeaseClock) on a fake clock in
// 10 ms steps: a tick is proposed at the first TickInterval boundary once the previous one is
// applied (a Go ticker keeps one pending tick, so after a slow commit the next proposal goes
// out at once), carrying the leader's estimate, and is applied latency(i) later.
type leaderSim struct {
	t       *testing.T
	s       *Store
	clk     *fakeClock
	latency func(i int) int64

	ms           int64 // wall time, ms since the start
	ticks        int
	inflight     bool
	proposed     int64 // clock value of the tick in flight
	applyAt      int64
	nextProposal int64
	onApplied    func() // called after each tick is applied, as the leader checks expiry then
}

func (l *leaderSim) step() {
	l.ms += 10
	l.clk.set(l.ms)
	if l.inflight && l.ms >= l.applyAt {
		applyTick(l.t, l.s, l.proposed)
		l.inflight = false
		if l.onApplied != nil {
			l.onApplied()
		}
	}
	if !l.inflight && l.ms >= l.nextProposal {
		l.proposed = l.s.Now()
		l.applyAt = l.ms + l.latency(l.ticks)
		l.inflight = true
		l.ticks++
		l.nextProposal = (l.ms/TickInterval.Milliseconds() + 1) * TickInterval.Milliseconds()
	}
}

// TestLeaderClockKeepsWallPace reproduces the lease clock running slow under commit latency:
// the leader's estimate must advance with wall time, however long its ticks take from
// proposal to being applied.
func TestLeaderClockKeepsWallPace(t *testing.T) {
	t.Run("50TicksApplied100msAfterProposal", func(t *testing.T) {
		s, clk := testStore(t)
		s.Lead()
		start := s.Now()
		var ms int64
		prev := start
		for range 50 {
			est := s.Now()
			if est < prev {
				t.Fatalf("estimate moved backwards: %d after %d", est, prev)
			}
			prev = est
			ms += 100 // the tick is committed and applied 100 ms after the estimate
			clk.set(ms)
			applyTick(t, s, est)
			ms += 150 // the rest of the tick interval
			clk.set(ms)
		}
		if got := s.Now() - start; got != ms {
			t.Fatalf("after 50 ticks applied 100 ms after proposal over %d ms of wall time, the leader's estimate advanced %d ms (lost %d ms)", ms, got, ms-got)
		}
	})
	for _, lat := range []int64{0, 40, 100, 240, 400, 1300} {
		t.Run(fmt.Sprintf("latency%dms", lat), func(t *testing.T) {
			s, clk := testStore(t)
			s.Lead()
			l := &leaderSim{t: t, s: s, clk: clk, latency: func(int) int64 { return lat }}
			prev := s.Now()
			l.onApplied = func() {
				if now := s.Now(); now < prev {
					t.Fatalf("at %d ms: estimate moved backwards: %d after %d", l.ms, now, prev)
				}
			}
			for l.ms < 30_000 {
				l.step()
			}
			if got := s.Now(); got != l.ms {
				t.Fatalf("after %d ms of wall time (%d ticks applied %d ms after proposal) the leader's estimate is %d", l.ms, l.ticks, lat, got)
			}
			if s.mu.clock > l.ms || s.mu.clock < l.ms-TickInterval.Milliseconds()-2*lat-10 {
				t.Fatalf("applied clock %d at wall %d ms", s.mu.clock, l.ms)
			}
		})
	}
}

// TestLeaseNeverExpiresEarly renews a lease on the simulated leader under various tick commit
// latencies, then stops: the leader may find it expired no sooner than TTL after the renewal
// was applied, and must find it expired within about a second after that.
func TestLeaseNeverExpiresEarly(t *testing.T) {
	patterns := []struct {
		name    string
		latency func(i int) int64
	}{
		{"5ms", func(int) int64 { return 5 }},
		{"60ms", func(int) int64 { return 60 }},
		{"150ms", func(int) int64 { return 150 }},
		{"300ms", func(int) int64 { return 300 }},
		{"stall1200msEvery9th", func(i int) int64 {
			if i%9 == 8 {
				return 1200
			}
			return 20
		}},
		{"alternating10and240ms", func(i int) int64 { return []int64{10, 240}[i%2] }},
	}
	for _, p := range patterns {
		for _, ttl := range []int64{1, 3} {
			t.Run(fmt.Sprintf("%s/ttl%ds", p.name, ttl), func(t *testing.T) {
				s, clk := testStore(t)
				s.Lead()
				l := &leaderSim{t: t, s: s, clk: clk, latency: p.latency}
				const id = 7
				apply(t, s, func(b *pebble.Batch) error { _, err := s.Grant(b, id, ttl); return err })
				renewed, expired := int64(0), int64(-1)
				l.onApplied = func() {
					if expired >= 0 {
						return
					}
					for _, e := range s.Expired(s.Now(), 10) {
						if e.ID == id {
							expired = l.ms
						}
					}
					if expired >= 0 && expired < renewed+ttl*1000 {
						t.Fatalf("lease with TTL %ds renewed at %d ms found expired at %d ms, %d ms early", ttl, renewed, expired, renewed+ttl*1000-expired)
					}
				}
				// Renew at uneven times (every 370 ms, so renewals fall everywhere between ticks)
				// for 12 s, then let it expire.
				for l.ms < 12_000 || expired < 0 {
					l.step()
					if l.ms < 12_000 && l.ms%370 == 0 {
						apply(t, s, func(b *pebble.Batch) error { _, err := s.Renew(b, id); return err })
						renewed = l.ms
					}
					if expired >= 0 && expired < 12_000 {
						t.Fatalf("lease with TTL %ds renewed every 370 ms found expired at %d ms", ttl, expired)
					}
					if l.ms > 30_000 {
						t.Fatalf("lease last renewed at %d ms never expired", renewed)
					}
				}
				late := expired - renewed - ttl*1000
				t.Logf("expired %d ms after TTL", late)
				if bound := int64(300) + 2*TickInterval.Milliseconds() + 2*p.latency(0) + 1200; late > bound {
					t.Fatalf("lease found expired %d ms after its TTL (bound %d ms)", late, bound)
				}
			})
		}
	}
}

// TestRenewDuringStall: a renewal applied while the ticks are not being committed gets its
// deadline from an applied clock that lags the leader's estimate by more than the deadline's
// margin; the leader still does not let it expire before TTL after the renewal.
func TestRenewDuringStall(t *testing.T) {
	s, clk := testStore(t)
	s.Lead()
	clk.set(2000) // no tick applied for 2 s
	apply(t, s, func(b *pebble.Batch) error { _, err := s.Grant(b, 1, 1); return err })
	l, _ := s.Lookup(1)
	if l.Deadline != 1300 {
		t.Fatalf("deadline %d, want applied clock 0 + 1000 + 300", l.Deadline)
	}
	if left, _ := s.Remaining(1); left != time.Second {
		t.Fatalf("remaining right after the grant: %v, want 1s", left)
	}
	clk.set(2999)
	if got := s.Expired(s.Now(), 10); len(got) != 0 {
		t.Fatalf("expired at 2999 ms (grant applied at 2000, TTL 1 s): %v", got)
	}
	clk.set(3000)
	if got := s.Expired(s.Now(), 10); len(got) != 1 || got[0].Deadline != 1300 {
		t.Fatalf("expired at 3000 ms: %v, want the lease with its deadline 1300", got)
	}
	// The leader proposed the expiry (naming deadline 1300); a keep-alive is applied before it,
	// still with no tick applied: the renewal must move the deadline, or the expiry would
	// revoke the lease it just renewed.
	apply(t, s, func(b *pebble.Batch) error { _, err := s.Renew(b, 1); return err })
	if l, _ := s.Lookup(1); l.Deadline == 1300 {
		t.Fatalf("deadline after a renewal with the applied clock unchanged: still %d", l.Deadline)
	}
}

// TestFollowerClock: a member that does not lead follows the applied ticks; its estimate never
// moves backwards however unevenly the ticks are applied, and never runs ahead of the leader's.
func TestFollowerClock(t *testing.T) {
	s, clk := testStore(t)
	jitter := []int64{0, 200, 30, 180, 5, 240, 0, 0, 120}
	prev, last := int64(0), int64(0)
	for k := int64(1); k <= 200; k++ {
		proposedAt := k * 250 // the leader's estimate equals wall time here
		appliedAt := proposedAt + jitter[k%int64(len(jitter))]
		for ms := last + 10; ms < appliedAt; ms += 10 {
			clk.set(ms)
			now := s.Now()
			if now < prev {
				t.Fatalf("at %d ms: follower estimate %d after %d", ms, now, prev)
			}
			if now > ms {
				t.Fatalf("at %d ms: follower estimate %d ahead of the leader's", ms, now)
			}
			prev = now
		}
		clk.set(appliedAt)
		last = appliedAt
		applyTick(t, s, proposedAt)
		if now := s.Now(); now < proposedAt {
			t.Fatalf("estimate %d right after applying tick %d", now, proposedAt)
		}
	}
}

// TestLeadAfterElection: a new leader continues from the last applied tick without counting
// the election, takes a later tick of the old leader that is applied after it started leading,
// and is not re-anchored by its own ticks.
func TestLeadAfterElection(t *testing.T) {
	s, clk := testStore(t)
	clk.set(100)
	applyTick(t, s, 5000)
	clk.set(1300) // the old leader is gone; an election takes 1.2 s
	if now := s.Now(); now != 6200 {
		t.Fatalf("follower estimate %d, want 6200", now)
	}
	s.Lead()
	if now := s.Now(); now != 5000 {
		t.Fatalf("estimate on becoming leader %d, want the applied clock 5000 (the election not counted)", now)
	}
	clk.set(1400)
	if now := s.Now(); now != 5100 {
		t.Fatalf("estimate 100 ms into leading %d, want 5100", now)
	}
	applyTick(t, s, 5400) // the old leader's last tick, committed in the new term
	if now := s.Now(); now != 5400 {
		t.Fatalf("estimate after an applied tick ahead of it: %d, want 5400", now)
	}
	clk.set(1450)
	est := s.Now() // 5450, proposed
	clk.set(1600)
	applyTick(t, s, est) // applied 150 ms later
	if now := s.Now(); now != 5600 {
		t.Fatalf("estimate after its own tick applied 150 ms after proposal: %d, want 5600", now)
	}
	// Stops leading: follows the applied clock again, never backwards.
	s.Follow()
	clk.set(1700)
	applyTick(t, s, 5550) // the new leader's clock is behind this member's old estimate
	if now := s.Now(); now != 5700 {
		t.Fatalf("estimate after stepping down: %d, want it held at 5700", now)
	}
	clk.set(2000)
	applyTick(t, s, 6000)
	if now := s.Now(); now != 6000 {
		t.Fatalf("estimate after the applied clock passed it: %d, want 6000", now)
	}
}

// TestGrantWhileNobodyLeads: a lease granted while no leader ticked (a member waiting for a
// quorum, whose estimate kept counting) expires at its deadline once the member leads: neither
// the outage before the grant nor the time until the member notices that it leads is added to
// its life, and it never expires before TTL after its grant was applied.
func TestGrantWhileNobodyLeads(t *testing.T) {
	s, clk := testStore(t)
	clk.set(100)
	applyTick(t, s, 5000)
	clk.set(2100) // two seconds without a tick: the estimate ran on to 7000
	apply(t, s, func(b *pebble.Batch) error { _, err := s.Grant(b, 1, 1); return err })
	clk.set(2300) // the member notices it leads 200 ms after the grant was applied
	s.Lead()
	// The grant was applied 200 ms ago: 800 ms of TTL are left, plus the deadline's margin
	// from the applied clock (deadline 5000 + 1000 + 300 = 6300).
	if left, _ := s.Remaining(1); left != 1300*time.Millisecond {
		t.Fatalf("remaining after Lead: %v, want 1.3s", left)
	}
	clk.set(3599)
	if got := s.Expired(s.Now(), 10); len(got) != 0 {
		t.Fatalf("expired 1299 ms after Lead: %v", got)
	}
	clk.set(3600)
	if got := s.Expired(s.Now(), 10); len(got) != 1 {
		t.Fatalf("not expired 1300 ms after Lead: %v", got)
	}
	// The other way round: a lease granted on a member whose estimate then jumps ahead (it
	// applies a tick that is ahead of it, as a follower does when a tick commits faster than
	// the one before) still lives TTL after its grant was applied, on the monotonic clock.
	s2, clk2 := testStore(t)
	clk2.set(300)
	applyTick(t, s2, 0) // the leader proposed it at 0; it took 300 ms to apply here
	clk2.set(310)
	apply(t, s2, func(b *pebble.Batch) error { _, err := s2.Grant(b, 2, 1); return err })
	clk2.set(320)
	applyTick(t, s2, 250) // proposed at 250, applied 70 ms later: the estimate jumps 230 ms
	s2.Lead()
	for ms := int64(320); ms < 1310; ms += 10 {
		clk2.set(ms)
		if got := s2.Expired(s2.Now()+1000, 10); len(got) != 0 {
			t.Fatalf("at %d ms, even with the deadline passed: expired before TTL after the grant (applied at 310 ms): %v", ms, got)
		}
	}
	clk2.set(1310)
	if got := s2.Expired(s2.Now()+1000, 10); len(got) != 1 {
		t.Fatalf("not expired at 1310 ms with the deadline passed: %v", got)
	}
}
