package cluster_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ordo-db/ordo/internal/testcluster"
)

// TestSnapshotCatchUp stops a follower while the others take more than --snapshot-count writes
// (so the leader's log no longer holds what the follower misses) and restarts it: it catches up
// by a snapshot, holds exactly the leader's data, keeps following from the log afterwards and
// keeps the installed state across a restart.
func TestSnapshotCatchUp(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{Args: []string{"--snapshot-count", "100", "--snapshot-catchup-entries", "10"}})
	lead := leader(t, c, 30*time.Second)
	fi := (lead + 1) % 3
	f := c.Members[fi]
	const prefix = "snapcatchup/"
	// Some data the follower does have.
	for i := 0; i < 20; i++ {
		mustPut(t, c.Members[lead].Client(), fmt.Sprintf("%sbefore/%04d", prefix, i), "old")
	}
	fcli := f.Client()
	waitFor(t, 10*time.Second, "follower has the first writes", func() (bool, error) {
		g, err := fcli.Get(ctx(t), prefix+"before/0019", clientv3.WithSerializable())
		return err == nil && len(g.Kvs) == 1, err
	})
	st := memberStatus(t, f)
	t.Logf("follower m%d stopped at applied index %d", fi, st.RaftAppliedIndex)
	snapDir := filepath.Join(f.DataDir, "snap")
	if _, err := os.Stat(snapDir); err == nil {
		t.Logf("note: %s exists before the follower lagged", snapDir)
	}
	f.Stop()

	// 500 writes through the leader: well past --snapshot-count, so the leader snapshots and
	// compacts its log to within 10 entries of its applied index, beyond the follower's log.
	lcli := c.Members[lead].Client()
	const n = 500
	var last *clientv3.PutResponse
	for i := 0; i < n; i++ {
		last = mustPut(t, lcli, fmt.Sprintf("%sk/%04d", prefix, i), fmt.Sprintf("v%d", i))
	}
	lastKey := fmt.Sprintf("%sk/%04d", prefix, n-1)

	if err := f.Restart(); err != nil {
		t.Fatalf("restart follower: %v", err)
	}
	waitFor(t, 30*time.Second, "restarted follower has the last key", func() (bool, error) {
		g, err := fcli.Get(ctx(t), lastKey, clientv3.WithSerializable())
		if err != nil {
			return false, err
		}
		return len(g.Kvs) == 1 && g.Kvs[0].ModRevision == last.Header.Revision, nil
	})
	sameRange(t, "after catch-up", lcli, fcli, prefix, last.Header.Revision)
	t.Logf("follower applied index after catch-up: %d (leader %d)", memberStatus(t, f).RaftAppliedIndex, memberStatus(t, c.Members[lead]).RaftAppliedIndex)

	// The follower received a snapshot: receiving one stages it under <data-dir>/snap, which
	// only snapshot reception creates.
	if _, err := os.Stat(snapDir); err != nil {
		t.Errorf("the follower caught up without receiving a snapshot (%v); the leader's log should have been compacted past it", err)
	}

	// After the snapshot the follower keeps following from the log.
	var more *clientv3.PutResponse
	for i := 0; i < 30; i++ {
		more = mustPut(t, lcli, fmt.Sprintf("%safter/%04d", prefix, i), "new")
	}
	waitFor(t, 10*time.Second, "follower has writes made after its snapshot", func() (bool, error) {
		g, err := fcli.Get(ctx(t), fmt.Sprintf("%safter/%04d", prefix, 29), clientv3.WithSerializable())
		return err == nil && len(g.Kvs) == 1 && g.Kvs[0].ModRevision == more.Header.Revision, err
	})
	sameRange(t, "after more writes", lcli, fcli, prefix, more.Header.Revision)

	// The installed state and the reset log survive a restart of the follower.
	f.Stop()
	if err := f.Restart(); err != nil {
		t.Fatalf("second restart of the follower: %v", err)
	}
	sameRange(t, "after restarting the follower", lcli, fcli, prefix, more.Header.Revision)
	// Linearizable reads through it and writes through it work.
	p := mustPut(t, fcli, prefix+"via-follower", "x")
	g := mustGet(t, lcli, prefix+"via-follower")
	if len(g.Kvs) != 1 || g.Kvs[0].ModRevision != p.Header.Revision {
		t.Fatalf("put through the follower at %d; leader reads %v", p.Header.Revision, g.Kvs)
	}
}

// sameRange compares the whole prefix, read serializably at rev, on two members.
func sameRange(t testing.TB, what string, a, b *clientv3.Client, prefix string, rev int64) {
	t.Helper()
	var ra, rb *clientv3.GetResponse
	// The second member may still be applying up to rev.
	waitFor(t, 10*time.Second, what+": serializable range at revision", func() (bool, error) {
		var err error
		if ra, err = a.Get(ctx(t), prefix, clientv3.WithPrefix(), clientv3.WithSerializable(), clientv3.WithRev(rev)); err != nil {
			return false, err
		}
		if rb, err = b.Get(ctx(t), prefix, clientv3.WithPrefix(), clientv3.WithSerializable(), clientv3.WithRev(rev)); err != nil {
			return false, err
		}
		return true, nil
	})
	if len(ra.Kvs) == 0 {
		t.Fatalf("%s: empty range", what)
	}
	sameKVs(t, what, rb.Kvs, ra.Kvs)
	// And the current state, not only the state at rev.
	ca, cb := rangeAll(t, a, prefix, clientv3.WithSerializable()), rangeAll(t, b, prefix, clientv3.WithSerializable())
	if ca.Header.Revision == cb.Header.Revision {
		sameKVs(t, what+" (current)", cb.Kvs, ca.Kvs)
	} else {
		t.Logf("%s: current revisions differ (%d vs %d); compared at %d only", what, ca.Header.Revision, cb.Header.Revision, rev)
	}
}

// memberStatus returns the member's own status.
func memberStatus(t testing.TB, m *testcluster.Member) *clientv3.StatusResponse {
	t.Helper()
	cli := m.Client()
	st, err := cli.Status(ctx(t), m.ClientURL)
	if err != nil {
		t.Fatalf("status of %s: %v", m.Name, err)
	}
	return st
}
