package cluster_test

import (
	"context"
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
