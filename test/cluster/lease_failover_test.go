package cluster_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ordo-db/ordo/internal/testcluster"
)

// TestLeaseLeaderKilledMidLease keeps a 3s lease alive through a follower, stops the keep-alive
// at T (its last response) and SIGKILLs the leader right after: the lease must not expire before
// T + TTL (a new leader may not cut it short) and must expire by T + TTL + two election timeouts
// + 1s (a leader change may not keep it alive for long).
func TestLeaseLeaderKilledMidLease(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, 3, testcluster.Options{Process: true})
	lead := leader(t, c, 30*time.Second)
	f := c.Members[(lead+1)%3]
	fcli := f.Client()
	const ttl = 3
	const key = "leasekill/a"
	g, _ := leaseGrant(t, fcli, ttl)
	leasePut(t, fcli, key, "v", g.ID)

	kctx, kcancel := context.WithCancel(context.Background())
	defer kcancel()
	ka, err := fcli.KeepAlive(kctx, g.ID)
	if err != nil {
		t.Fatalf("keep-alive: %v", err)
	}
	var last time.Time
	timeout := time.NewTimer(callTimeout)
	defer timeout.Stop()
	for n := 0; n < 3; {
		select {
		case r, ok := <-ka:
			if !ok {
				t.Fatalf("keep-alive channel closed")
			}
			if r.TTL != ttl {
				t.Fatalf("keep-alive response TTL %d, want %d", r.TTL, ttl)
			}
			last = time.Now()
			n++
		case <-timeout.C:
			t.Fatalf("no keep-alive responses")
		}
	}
	kcancel()
	c.Members[lead].Kill()
	killed := time.Now()
	t.Logf("keep-alive stopped after its last response at T; leader m%d SIGKILLed at T+%v", lead, sinceMs(last, killed))

	scli := survivorsClient(t, c)
	notBefore := last.Add(ttl * time.Second)
	bound := notBefore.Add(2*electionTimeout + time.Second)
	obs := testcluster.PollVanish(scli, key, notBefore, bound)
	newLead := leader(t, c, 10*time.Second)
	t.Logf("MEASURED leader kill: key last found in a read sent at T+%v, gone in a read answered at T+%v (allowed [T+%v, T+%v]); new leader m%d",
		sinceMs(last, obs.LastPresent), sinceMs(last, obs.FirstAbsent), sinceMs(last, notBefore), sinceMs(last, bound), newLead)
	if obs.Err != nil {
		t.Fatal(obs.Err)
	}
	for _, id := range leaseList(t, scli) {
		if id == g.ID {
			t.Fatalf("expired lease %x still listed", g.ID)
		}
	}
	if r, _ := leaseKeys(t, scli, g.ID); r.TTL != -1 {
		t.Fatalf("expired lease: TTL %d", r.TTL)
	}
}

// TestLeaseRepeatedLeaderChanges stops and restarts the leader three times, each about a second
// apart, while an abandoned 2s lease runs out: it must still expire within TTL + 3s, and not
// before TTL.
func TestLeaseRepeatedLeaderChanges(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, 3, testcluster.Options{Quiet: true})
	leader(t, c, 30*time.Second)
	cli := c.Client()
	waitLeaseClock(t, cli)
	const ttl = 2
	const key = "leasechanges/a"
	g, granted := leaseGrant(t, cli, ttl)
	leasePut(t, cli, key, "v", g.ID)

	obsc := make(chan testcluster.Vanish, 1)
	pcli := c.Client()
	go func() {
		obsc <- testcluster.PollVanish(pcli, key, granted.Add(ttl*time.Second), granted.Add(ttl*time.Second+3*time.Second))
	}()
	var obs *testcluster.Vanish
	for round := 0; round < 3 && obs == nil; round++ {
		pause := time.NewTimer(time.Second)
		select {
		case o := <-obsc:
			obs = &o
			pause.Stop()
			continue
		case <-pause.C:
		}
		lead := leader(t, c, 10*time.Second)
		c.Members[lead].Stop()
		stopped := time.Now()
		newLead := leader(t, c, 10*time.Second)
		t.Logf("round %d: stopped leader m%d at grant+%v; m%d leads at grant+%v", round, lead, sinceMs(granted, stopped), newLead, sinceMs(granted, time.Now()))
		if err := c.Members[lead].Restart(); err != nil {
			t.Fatalf("restart m%d: %v", lead, err)
		}
	}
	if obs == nil {
		select {
		case o := <-obsc:
			obs = &o
		case <-time.After(callTimeout):
			t.Fatalf("poller did not finish")
		}
	}
	t.Logf("MEASURED repeated leader changes: TTL %ds lease granted at G; last found in a read sent at G+%v, gone in a read answered at G+%v (allowed [G+%ds, G+%ds])",
		ttl, sinceMs(granted, obs.LastPresent), sinceMs(granted, obs.FirstAbsent), ttl, ttl+3)
	if obs.Err != nil {
		t.Fatal(obs.Err)
	}
}

// TestLeaseKeepAliveAcrossLeaderKill keeps a 2s lease alive through a follower with clientv3's
// KeepAlive, SIGKILLs the leader and at once sends one more keep-alive through the follower
// (which still takes the dead member for the leader for at least an election timeout). As with
// etcd (a follower retries a renewal with the new leader, which also extends every lease when it
// takes over), the single keep-alive must be answered soon after a new leader is elected, and
// the lease and its key must survive while the keep-alive goes on.
func TestLeaseKeepAliveAcrossLeaderKill(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, 3, testcluster.Options{Process: true})
	lead := leader(t, c, 30*time.Second)
	f := c.Members[(lead+1)%3]
	fcli := f.Client()
	const ttl = 2
	const key = "leasekakill/a"
	g, _ := leaseGrant(t, fcli, ttl)
	leasePut(t, fcli, key, "v", g.ID)
	kctx, kcancel := context.WithCancel(context.Background())
	defer kcancel()
	ka, err := fcli.KeepAlive(kctx, g.ID)
	if err != nil {
		t.Fatalf("keep-alive: %v", err)
	}
	var (
		mu     sync.Mutex
		resps  []time.Time
		closed bool
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range ka {
			mu.Lock()
			resps = append(resps, time.Now())
			mu.Unlock()
		}
		mu.Lock()
		closed = true
		mu.Unlock()
	}()
	waitFor(t, 10*time.Second, "two keep-alive responses", func() (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		return len(resps) >= 2, nil
	})
	c.Members[lead].Kill()
	killed := time.Now()
	type onceResult struct {
		ttl     int64
		err     error
		latency time.Duration
	}
	oncec := make(chan onceResult, 1)
	go func() {
		cctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		start := time.Now()
		r, err := fcli.KeepAliveOnce(cctx, g.ID)
		res := onceResult{err: err, latency: time.Since(start)}
		if r != nil {
			res.ttl = r.TTL
		}
		oncec <- res
	}()
	scli := survivorsClient(t, c)
	// For three TTLs after the kill the key must stay.
	obs := testcluster.PollVanish(scli, key, killed.Add(3*ttl*time.Second), killed.Add(3*ttl*time.Second))
	newLead := leader(t, c, 10*time.Second)
	var once onceResult
	select {
	case once = <-oncec:
	case <-time.After(callTimeout):
		t.Fatalf("keep-alive once did not return")
	}
	kcancel()
	<-done
	mu.Lock()
	var after []string
	for _, r := range resps {
		if r.After(killed) {
			after = append(after, "K+"+sinceMs(killed, r))
		}
	}
	wasClosed := closed
	mu.Unlock()
	t.Logf("MEASURED keep-alive across leader kill at K (new leader m%d): keep-alive once through the follower returned TTL %d err %v after %v; stream keep-alive responses after the kill %v; key last found in a read sent at K+%v",
		newLead, once.ttl, once.err, once.latency.Round(time.Millisecond), after, sinceMs(killed, obs.LastPresent))
	if !obs.FirstAbsent.IsZero() {
		t.Errorf("a kept-alive %ds lease expired %v after the leader was killed (keep-alive responses after the kill: %v; keep-alive channel closed: %v)",
			ttl, sinceMs(killed, obs.FirstAbsent), after, wasClosed)
	}
	if once.err != nil || once.ttl != ttl || once.latency > 2*electionTimeout+time.Second {
		t.Errorf("keep-alive once through the follower right after the leader was killed: TTL %d err %v after %v; want TTL %d within %v",
			once.ttl, once.err, once.latency.Round(time.Millisecond), ttl, 2*electionTimeout+time.Second)
	}
}

// TestLeaseGrantDuringElection grants a lease while there is no leader, so the grant is applied
// as the first entries of the new leader, before it advanced the lease clock. The lease must
// not expire before TTL after the grant's response.
func TestLeaseGrantDuringElection(t *testing.T) {
	t.Parallel()
	const ttl = 1

	check := func(t *testing.T, cli *clientv3.Client, what string) {
		key := "leaseelection/" + what
		g, granted := leaseGrant(t, cli, ttl)
		leasePut(t, cli, key, "v", g.ID)
		obs := testcluster.PollVanish(cli, key, granted.Add(ttl*time.Second), granted.Add(ttl*time.Second+3*time.Second))
		t.Logf("MEASURED %s: TTL %ds lease granted at G; last found in a read sent at G+%v, gone in a read answered at G+%v",
			what, ttl, sinceMs(granted, obs.LastPresent), sinceMs(granted, obs.FirstAbsent))
		if obs.Err != nil {
			t.Fatal(obs.Err)
		}
	}

	t.Run("RestartedSingleMember", func(t *testing.T) {
		t.Parallel()
		c := testcluster.New(t, 1, testcluster.Options{Quiet: true})
		leader(t, c, 30*time.Second)
		m := c.Members[0]
		mustPut(t, m.Client(), "leaseelection/warm", "v")
		m.Stop()
		// A restarted member serves clients before it elected itself (it was published
		// before), so the grant waits for the election and is its first proposal.
		if err := m.Restart(); err != nil {
			t.Fatalf("restart: %v", err)
		}
		cli := m.Client()
		if lead, _, err := memberLeader(cli, m.ClientURL); err == nil && lead != 0 {
			t.Logf("note: the member already leads; the grant may come after its first clock tick")
		}
		check(t, cli, "grant right after a restart")
	})

	t.Run("QuorumRestored", func(t *testing.T) {
		t.Parallel()
		c := testcluster.New(t, 3, testcluster.Options{Quiet: true})
		leader(t, c, 30*time.Second)
		mustPut(t, c.Members[0].Client(), "leaseelection/warm", "v")
		for _, m := range c.Members {
			m.Stop()
		}
		// One member back: it serves clients (it was published before) but there is no
		// quorum, so the grant waits for the leader elected once a second member is back.
		restartAll(t, c.Members[0])
		cli := c.Members[0].Client()
		type grantResult struct {
			g    *clientv3.LeaseGrantResponse
			err  error
			resp time.Time
		}
		gc := make(chan grantResult, 1)
		go func() {
			g, err := cli.Grant(ctx(t), ttl)
			gc <- grantResult{g, err, time.Now()}
		}()
		// The outage lasts a while longer (the scenario, not a wait for a condition).
		outage := time.NewTimer(1500 * time.Millisecond)
		<-outage.C
		restartAll(t, c.Members[1])
		var res grantResult
		select {
		case res = <-gc:
		case <-time.After(callTimeout):
			t.Fatalf("grant did not return")
		}
		if res.err != nil {
			t.Fatalf("grant: %v", res.err)
		}
		key := "leaseelection/quorum-restored"
		leasePut(t, cli, key, "v", res.g.ID)
		obs := testcluster.PollVanish(cli, key, res.resp.Add(ttl*time.Second), res.resp.Add(ttl*time.Second+3*time.Second))
		t.Logf("MEASURED grant during a 1.5s loss of quorum: TTL %ds lease granted at G; last found in a read sent at G+%v, gone in a read answered at G+%v",
			ttl, sinceMs(res.resp, obs.LastPresent), sinceMs(res.resp, obs.FirstAbsent))
		if obs.Err != nil {
			t.Fatal(obs.Err)
		}
	})

	t.Run("LeaderStopped", func(t *testing.T) {
		t.Parallel()
		c := testcluster.New(t, 3, testcluster.Options{Quiet: true})
		lead := leader(t, c, 30*time.Second)
		var survivors []*testcluster.Member
		clients := map[*testcluster.Member]*clientv3.Client{}
		for i, m := range c.Members {
			if i != lead {
				survivors = append(survivors, m)
				clients[m] = m.Client()
				mustPut(t, clients[m], "leaseelection/warm", "v") // connect now
			}
		}
		st := memberStatus(t, c.Members[lead])
		oldID := st.Header.MemberId
		c.Members[lead].Stop()
		// Wait until a survivor gave up on the old leader, then grant through it: a proposal
		// made earlier would be forwarded to the stopped leader and lost.
		var via *testcluster.Member
		waitFor(t, 10*time.Second, "a survivor notices the leader is gone", func() (bool, error) {
			for _, m := range survivors {
				l, _, err := memberLeader(clients[m], m.ClientURL)
				if err == nil && l != oldID {
					via = m
					return true, nil
				}
			}
			return false, nil
		})
		check(t, clients[via], fmt.Sprintf("grant through %s right after the leader stopped", via.Name))
	})
}

// waitLeaseClock waits until the leader has ticked the lease clock since it was elected (see
// testcluster.WaitLeaseClock).
func waitLeaseClock(t testing.TB, cli *clientv3.Client) {
	t.Helper()
	testcluster.WaitLeaseClock(t, cli)
}
