package testcluster

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// WaitFor polls cond every 10 ms until it holds, failing the test after timeout with the last
// error cond returned. It waits on a ticker, never a bare sleep standing in for the condition.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		ok, err := cond()
		if ok {
			return
		}
		if err != nil {
			lastErr = err
		}
		select {
		case <-deadline.C:
			t.Fatalf("%s: condition not met after %v (last error: %v)", what, timeout, lastErr)
		case <-tick.C:
		}
	}
}

// Vanish is what PollVanish observed.
type Vanish struct {
	LastPresent time.Time // when the last read that found the key was sent
	FirstAbsent time.Time // when the first read that found it gone was answered
	Err         error     // set when the key went too early or too late
}

// PollVanish polls key with linearizable reads every 10 ms (errors, e.g. during an election,
// are retried) until it is gone: the way lease tests watch a lease's key expire. A read
// answered before notBefore must still find it; it must be gone by deadline. It does not fail
// the test itself, so that it can run in its own goroutine.
func PollVanish(cli *clientv3.Client, key string, notBefore, deadline time.Time) Vanish {
	var v Vanish
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		sent := time.Now()
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		g, err := cli.Get(cctx, key)
		cancel()
		recv := time.Now()
		switch {
		case err != nil:
			lastErr = err
		case len(g.Kvs) > 0:
			v.LastPresent = sent
		default:
			v.FirstAbsent = recv
			if recv.Before(notBefore) {
				v.Err = fmt.Errorf("key %q gone %v before the earliest allowed expiry (read sent %v before it; last found in a read sent %v before it)",
					key, notBefore.Sub(recv).Round(time.Millisecond), notBefore.Sub(sent).Round(time.Millisecond), notBefore.Sub(v.LastPresent).Round(time.Millisecond))
			}
			return v
		}
		if recv.After(deadline) {
			v.Err = fmt.Errorf("key %q still there %v after the earliest allowed expiry (last read error: %v)", key, recv.Sub(notBefore).Round(time.Millisecond), lastErr)
			return v
		}
		<-tick.C
	}
}

// WaitLeaseClock waits until the leader has advanced the lease clock at least once since it
// was elected, by waiting for a 1 s probe lease granted through cli to be revoked (the leader
// revokes only after a clock tick). A lease granted before a new leader's first tick gets its
// deadline on the stale clock and can expire early (test/cluster TestLeaseGrantDuringElection);
// tests about steady-state lease timing wait that out first.
func WaitLeaseClock(t testing.TB, cli *clientv3.Client) {
	t.Helper()
	gctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g, err := cli.Grant(gctx, 1)
	if err != nil {
		t.Fatalf("grant a probe lease: %v", err)
	}
	WaitFor(t, 10*time.Second, "probe lease expires", func() (bool, error) {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		r, err := cli.TimeToLive(cctx, g.ID)
		return err == nil && r.TTL == -1, err
	})
}
