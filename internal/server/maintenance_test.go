package server_test

import (
	"fmt"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/ordo-db/ordo/internal/testcluster"
)

// TestMoveLeader checks etcd's MoveLeader: only the leader takes it, the target must be a
// voting member, and the answer comes once the target leads; the cluster keeps serving.
func TestMoveLeader(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{})
	lead, err := c.Leader(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	k := keyer(t)
	target := (lead + 1) % 3
	other := (lead + 2) % 3
	lcli, ocli := c.Members[lead].Client(), c.Members[other].Client()

	_, err = ocli.MoveLeader(ctx(t), c.MemberID(target))
	wantErr(t, "move-leader through a follower", err, rpctypes.ErrGRPCNotLeader)
	_, err = lcli.MoveLeader(ctx(t), 12345)
	wantErr(t, "move-leader to an unknown member", err, rpctypes.ErrGRPCBadLeaderTransferee)
	if _, err := lcli.MoveLeader(ctx(t), c.MemberID(lead)); err != nil {
		t.Fatalf("move-leader to the leader itself: %v", err)
	}

	p := mustPut(t, lcli, k("before"), "1")
	resp, err := lcli.MoveLeader(ctx(t), c.MemberID(target))
	if err != nil {
		t.Fatalf("move-leader from %s to %s: %v", c.Members[lead].Name, c.Members[target].Name, err)
	}
	if resp.Header.Revision < p.Header.Revision {
		t.Fatalf("move-leader answered at revision %d, before the put at %d", resp.Header.Revision, p.Header.Revision)
	}
	now, err := c.Leader(10 * time.Second)
	if err != nil || now != target {
		t.Fatalf("after move-leader to %s the leader is %d (%v), want %d", c.Members[target].Name, now, err, target)
	}
	// The old leader now refuses, and every member serves writes.
	_, err = lcli.MoveLeader(ctx(t), c.MemberID(lead))
	wantErr(t, "move-leader through the former leader", err, rpctypes.ErrGRPCNotLeader)
	for i, m := range c.Members {
		checkAlive(t, m.Client(), k(fmt.Sprintf("after-%d", i)))
	}
}

// TestDefragment checks that etcd's Defragment succeeds on every member at once (Ordo has
// nothing to defragment) and leaves the data as it was.
func TestDefragment(t *testing.T) {
	forEachClusterSize(t, func(t *testing.T, c *testcluster.Cluster) {
		k := keyer(t)
		cli := c.Client()
		p := mustPut(t, cli, k("a"), "1")
		for _, m := range c.Members {
			if _, err := cli.Defragment(ctx(t), hostPort(m)); err != nil {
				t.Fatalf("defragment %s: %v", m.Name, err)
			}
		}
		kv := getOne(t, cli, k("a"))
		if string(kv.Value) != "1" || kv.ModRevision != p.Header.Revision {
			t.Fatalf("after defragmenting: %q at %d, want %q at %d", kv.Value, kv.ModRevision, "1", p.Header.Revision)
		}
		checkAlive(t, cli, k("alive"))
	})
}
