package cluster_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/ordo-db/ordo/internal/testcluster"
)

// TestLeaseSurvivesFullRestart stops every member and starts them again: leases keep their ids,
// TTLs and attached keys, a revoke after the restart deletes exactly the attached keys, and an
// abandoned short lease still expires.
func TestLeaseSurvivesFullRestart(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, 3, testcluster.Options{Quiet: true})
	leader(t, c, 30*time.Second)
	cli := c.Client()
	const pfx = "leaserestart/"
	l1, _ := leaseGrant(t, cli, 60)
	const l2 = clientv3.LeaseID(0x0badcafe)
	if _, err := pb.NewLeaseClient(cli.ActiveConnection()).LeaseGrant(ctx(t), &pb.LeaseGrantRequest{ID: int64(l2), TTL: 60}); err != nil {
		t.Fatalf("grant %x: %v", l2, err)
	}
	for _, k := range []string{"a", "b"} {
		leasePut(t, cli, pfx+k, "v1", l1.ID)
	}
	leasePut(t, cli, pfx+"c", "v2", l2)
	mustPut(t, cli, pfx+"plain", "v")
	short, _ := leaseGrant(t, cli, 2)
	leasePut(t, cli, pfx+"short", "v", short.ID)
	before := rangeAll(t, cli, pfx)

	for _, m := range c.Members {
		m.Stop()
	}
	restartAll(t, c.Members...)
	restarted := time.Now()
	leader(t, c, 30*time.Second)

	for i, m := range c.Members {
		mc := m.Client()
		sameKVs(t, fmt.Sprintf("member %d: keys after the restart", i), rangeAll(t, mc, pfx, clientv3.WithRev(before.Header.Revision)).Kvs, before.Kvs)
		ids := leaseList(t, mc)
		for _, id := range []clientv3.LeaseID{l1.ID, l2} {
			if !slices.Contains(ids, id) {
				t.Fatalf("member %d: leases after the restart %x lack %x", i, ids, id)
			}
		}
		r, keys := leaseKeys(t, mc, l1.ID)
		if r.GrantedTTL != 60 || r.TTL <= 45 || r.TTL > 60 || !slices.Equal(keys, []string{pfx + "a", pfx + "b"}) {
			t.Fatalf("member %d: lease %x after the restart: granted %d remaining %d keys %q", i, l1.ID, r.GrantedTTL, r.TTL, keys)
		}
		r, keys = leaseKeys(t, mc, l2)
		if r.GrantedTTL != 60 || !slices.Equal(keys, []string{pfx + "c"}) {
			t.Fatalf("member %d: lease %x after the restart: granted %d keys %q", i, l2, r.GrantedTTL, keys)
		}
	}
	// A grant of an existing id still fails; keep-alives work.
	_, err := pb.NewLeaseClient(c.Members[0].Client().ActiveConnection()).LeaseGrant(ctx(t), &pb.LeaseGrantRequest{ID: int64(l2), TTL: 5}, grpc.WaitForReady(true))
	if !isErr(err, rpctypes.ErrLeaseExist) {
		t.Fatalf("grant of an existing id after the restart: %v", err)
	}
	if r, err := cli.KeepAliveOnce(ctx(t), l1.ID); err != nil || r.TTL != 60 {
		t.Fatalf("keep-alive after the restart: %v %v", r, err)
	}
	// The abandoned short lease still expires.
	obs := testcluster.PollVanish(cli, pfx+"short", time.Time{}, restarted.Add(2*time.Second+5*time.Second))
	if obs.Err != nil {
		t.Fatal(obs.Err)
	}
	t.Logf("abandoned 2s lease gone %v after the restart", sinceMs(restarted, obs.FirstAbsent))
	// Revoking deletes exactly the attached keys, in one revision.
	rv, err := cli.Revoke(ctx(t), l1.ID)
	if err != nil {
		t.Fatalf("revoke after the restart: %v", err)
	}
	got := rangeAll(t, cli, pfx)
	var keys []string
	for _, kv := range got.Kvs {
		keys = append(keys, string(kv.Key))
	}
	if !slices.Equal(keys, []string{pfx + "c", pfx + "plain"}) {
		t.Fatalf("after revoking %x: keys %q", l1.ID, keys)
	}
	for _, k := range []string{"a", "b"} {
		h := mustGet(t, cli, pfx+k, clientv3.WithRev(rv.Header.Revision-1))
		if len(h.Kvs) != 1 {
			t.Fatalf("%s missing just before the revoke's revision %d", k, rv.Header.Revision)
		}
	}
}

// TestLeaseSnapshotFollower stops a follower while the others grant, revoke and expire leases
// and write well past --snapshot-count; the restarted follower catches up by a snapshot and then
// knows exactly the leases and attachments the others know.
func TestLeaseSnapshotFollower(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, 3, testcluster.Options{Quiet: true, Args: []string{"--snapshot-count", "100", "--snapshot-catchup-entries", "10"}})
	lead := leader(t, c, 30*time.Second)
	fi := (lead + 1) % 3
	f := c.Members[fi]
	lcli := c.Members[lead].Client()
	const pfx = "leasesnap/"
	// A lease the follower sees being granted, revoked while it is down.
	old, _ := leaseGrant(t, lcli, 60)
	leasePut(t, lcli, pfx+"old", "v", old.ID)
	fcli := f.Client()
	waitFor(t, 10*time.Second, "follower has the first lease key", func() (bool, error) {
		g, err := fcli.Get(ctx(t), pfx+"old", clientv3.WithSerializable())
		return err == nil && len(g.Kvs) == 1, err
	})
	f.Stop()

	keep, _ := leaseGrant(t, lcli, 60)
	for _, k := range []string{"k1", "k2", "k3"} {
		leasePut(t, lcli, pfx+k, "v", keep.ID)
	}
	short, _ := leaseGrant(t, lcli, 1)
	leasePut(t, lcli, pfx+"short", "v", short.ID)
	if _, err := lcli.Revoke(ctx(t), old.ID); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	// Move k3 away from the lease; detach k2 by deleting it.
	mustPut(t, lcli, pfx+"k3", "plain")
	if _, err := lcli.Delete(ctx(t), pfx+"k2"); err != nil {
		t.Fatalf("delete: %v", err)
	}
	var last *clientv3.PutResponse
	for i := 0; i < 300; i++ {
		last = mustPut(t, lcli, fmt.Sprintf("%sfill/%04d", pfx, i), "x")
	}
	// Let the short lease expire while the follower is away.
	if obs := testcluster.PollVanish(lcli, pfx+"short", time.Time{}, time.Now().Add(10*time.Second)); obs.Err != nil {
		t.Fatal(obs.Err)
	}

	if err := f.Restart(); err != nil {
		t.Fatalf("restart follower: %v", err)
	}
	waitFor(t, 30*time.Second, "restarted follower caught up", func() (bool, error) {
		g, err := fcli.Get(ctx(t), fmt.Sprintf("%sfill/%04d", pfx, 299), clientv3.WithSerializable())
		return err == nil && len(g.Kvs) == 1 && g.Kvs[0].ModRevision == last.Header.Revision, err
	})
	if _, err := os.Stat(filepath.Join(f.DataDir, "snap")); err != nil {
		t.Errorf("the follower caught up without receiving a snapshot (%v)", err)
	}

	r, keys := leaseKeys(t, fcli, keep.ID)
	if r.TTL <= 0 || r.GrantedTTL != 60 || !slices.Equal(keys, []string{pfx + "k1"}) {
		t.Fatalf("through the restarted follower: lease %x granted %d remaining %d keys %q, want granted 60 keys [%sk1]", keep.ID, r.GrantedTTL, r.TTL, keys, pfx)
	}
	for _, id := range []clientv3.LeaseID{old.ID, short.ID} {
		if r, _ := leaseKeys(t, fcli, id); r.TTL != -1 {
			t.Fatalf("through the restarted follower: gone lease %x has TTL %d", id, r.TTL)
		}
	}
	ids := leaseList(t, fcli)
	if !slices.Contains(ids, keep.ID) || slices.Contains(ids, old.ID) || slices.Contains(ids, short.ID) {
		t.Fatalf("through the restarted follower: leases %x (want %x, not %x or %x)", ids, keep.ID, old.ID, short.ID)
	}
	// The follower's lease state drives what it applies: a put with the lease through it
	// works and is applied the same everywhere; a revoke through it deletes what the others
	// have attached.
	p := leasePut(t, fcli, pfx+"k4", "v", keep.ID)
	for i, m := range c.Members {
		// Linearizable: a serializable read on a member that has not applied the put yet
		// would rightly answer "future revision".
		g := mustGet(t, m.Client(), pfx+"k4", clientv3.WithRev(p.Header.Revision))
		if len(g.Kvs) != 1 || g.Kvs[0].Lease != int64(keep.ID) {
			t.Fatalf("member %d: k4 %v", i, g.Kvs)
		}
	}
	if _, err := fcli.Revoke(ctx(t), keep.ID); err != nil {
		t.Fatalf("revoke through the follower: %v", err)
	}
	rev := rangeAll(t, lcli, pfx).Header.Revision
	for i, m := range c.Members {
		var got []string
		waitFor(t, 10*time.Second, fmt.Sprintf("member %d applied the revoke", i), func() (bool, error) {
			g, err := m.Client().Get(ctx(t), pfx, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithSerializable(), clientv3.WithRev(rev))
			if err != nil {
				return false, err
			}
			got = got[:0]
			for _, kv := range g.Kvs {
				if k := string(kv.Key); len(k) < len(pfx)+5 || k[:len(pfx)+5] != pfx+"fill/" {
					got = append(got, k)
				}
			}
			return true, nil
		})
		if !slices.Equal(got, []string{pfx + "k3"}) {
			t.Fatalf("member %d after revoking through the follower: non-fill keys %q, want [%sk3]", i, got, pfx)
		}
	}
}
