package cluster_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ordo-db/ordo/internal/testcluster"
)

// leaseGrant grants a lease of ttl seconds and returns it with the moment its response arrived.
func leaseGrant(t testing.TB, cli *clientv3.Client, ttl int64) (*clientv3.LeaseGrantResponse, time.Time) {
	t.Helper()
	g, err := cli.Grant(ctx(t), ttl)
	if err != nil {
		t.Fatalf("grant TTL %d: %v", ttl, err)
	}
	if g.TTL != ttl {
		t.Fatalf("grant TTL %d: granted %d", ttl, g.TTL)
	}
	return g, time.Now()
}

// leasePut puts key=val attached to lease id.
func leasePut(t testing.TB, cli *clientv3.Client, key, val string, id clientv3.LeaseID) *clientv3.PutResponse {
	t.Helper()
	p, err := cli.Put(ctx(t), key, val, clientv3.WithLease(id))
	if err != nil {
		t.Fatalf("put %q with lease %x: %v", key, id, err)
	}
	return p
}

// leaseKeys returns lease id's time-to-live with its keys, sorted.
func leaseKeys(t testing.TB, cli *clientv3.Client, id clientv3.LeaseID) (*clientv3.LeaseTimeToLiveResponse, []string) {
	t.Helper()
	r, err := cli.TimeToLive(ctx(t), id, clientv3.WithAttachedKeys())
	if err != nil {
		t.Fatalf("time-to-live of %x: %v", id, err)
	}
	keys := []string{}
	for _, k := range r.Keys {
		keys = append(keys, string(k))
	}
	slices.Sort(keys)
	return r, keys
}

// leaseList returns the lease ids a member lists.
func leaseList(t testing.TB, cli *clientv3.Client) []clientv3.LeaseID {
	t.Helper()
	r, err := cli.Leases(ctx(t))
	if err != nil {
		t.Fatalf("leases: %v", err)
	}
	var ids []clientv3.LeaseID
	for _, l := range r.Leases {
		ids = append(ids, l.ID)
	}
	return ids
}

// vanishObs is what pollVanish observed.
type vanishObs struct {
	lastPresent time.Time // when the last read that found the key was sent
	firstAbsent time.Time // when the first read that found it gone was answered
	err         error     // set when the key went too early or too late
}

// pollVanish polls key with linearizable reads (errors, e.g. during an election, are retried)
// until it is gone. A read answered before notBefore must still find it; it must be gone by
// deadline. It does not fail the test itself, so that it can run in its own goroutine.
func pollVanish(cli *clientv3.Client, key string, notBefore, deadline time.Time) vanishObs {
	var v vanishObs
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
			v.lastPresent = sent
		default:
			v.firstAbsent = recv
			if recv.Before(notBefore) {
				v.err = fmt.Errorf("key %q gone %v before the earliest allowed expiry (read sent %v before it; last found in a read sent %v before it)",
					key, notBefore.Sub(recv).Round(time.Millisecond), notBefore.Sub(sent).Round(time.Millisecond), notBefore.Sub(v.lastPresent).Round(time.Millisecond))
			}
			return v
		}
		if recv.After(deadline) {
			v.err = fmt.Errorf("key %q still there %v after the earliest allowed expiry (last read error: %v)", key, recv.Sub(notBefore).Round(time.Millisecond), lastErr)
			return v
		}
		<-tick.C
	}
}

// survivorsClient is a client on every running member.
func survivorsClient(t testing.TB, c *testcluster.Cluster) *clientv3.Client {
	t.Helper()
	var eps []string
	for _, m := range c.Members {
		if m.Running() {
			eps = append(eps, m.ClientURL)
		}
	}
	return newClient(t, eps, clientv3.Config{})
}

// memberLeader returns the leader a member reports (0 for none) and its own id.
func memberLeader(cli *clientv3.Client, url string) (lead, self uint64, err error) {
	cctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	st, err := cli.Status(cctx, url)
	if err != nil {
		return 0, 0, err
	}
	return st.Leader, st.Header.MemberId, nil
}

// sinceMs formats a duration between two moments in milliseconds.
func sinceMs(from, to time.Time) string { return to.Sub(from).Round(time.Millisecond).String() }
