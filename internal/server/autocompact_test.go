package server_test

import (
	"errors"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ordo-db/ordo/internal/testcluster"
)

// TestAutoCompactionPeriodic checks --auto-compaction-mode=periodic: with a one-second
// retention the leader compacts to the revision it saw a second earlier, so an old revision
// becomes unreadable while the latest data stays.
func TestAutoCompactionPeriodic(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{Quiet: true,
		Args: []string{"--auto-compaction-mode", "periodic", "--auto-compaction-retention", "1s"}})
	cli := c.Client()
	k := prefix(t) + "k"
	first := mustPut(t, cli, k, "v1").Header.Revision
	mustPut(t, cli, k, "v2")
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		_, err := cli.Get(ctx(t), k, clientv3.WithRev(first))
		if errors.Is(err, rpctypes.ErrCompacted) {
			break
		}
		if err != nil {
			t.Fatalf("get at %d: %v", first, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("revision %d still readable after 20s of periodic compaction with 1s retention", first)
		}
		mustPut(t, cli, prefix(t)+"tick", "x") // keep revisions moving
		<-tick.C
	}
	if got := string(getOne(t, cli, k).Value); got != "v2" {
		t.Fatalf("latest value after compaction: %q, want v2", got)
	}
}
