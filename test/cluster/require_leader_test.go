package cluster_test

import (
	"context"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ordo-db/ordo/internal/testcluster"
)

// TestRequireLeader checks clientv3.WithRequireLeader: a member that knows no leader refuses
// at once with "etcdserver: no leader" instead of waiting out the request timeout.
func TestRequireLeader(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{Quiet: true})
	m := c.Members[0]
	cli := newClient(t, []string{m.ClientURL}, clientv3.Config{MaxUnaryRetries: 1})
	mustPut(t, cli, "rl/a", "1")
	c.Members[1].Stop()
	c.Members[2].Stop()
	waitFor(t, 10*time.Second, "survivor loses its leader", func() (bool, error) {
		st, err := cli.Status(ctx(t), m.ClientURL)
		return err == nil && st.Leader == 0, err
	})
	start := time.Now()
	rctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx(t)), 4*time.Second)
	defer cancel()
	_, err := cli.Get(rctx, "rl/a")
	if !isErr(err, rpctypes.ErrNoLeader) {
		t.Fatalf("get with require-leader: %v, want %v", err, rpctypes.ErrNoLeader)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("refusal took %v; want it at once", d)
	}
	// Without the option a serializable read is still served locally.
	if _, err := cli.Get(ctx(t), "rl/a", clientv3.WithSerializable()); err != nil {
		t.Fatalf("serializable get: %v", err)
	}
}
