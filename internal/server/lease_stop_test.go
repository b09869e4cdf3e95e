package server_test

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ordo-db/ordo/internal/testcluster"
)

// TestLeaseKeepAliveStreamAndStop checks that an open keep-alive stream does not hold up a
// member's shutdown (as watch streams do not: a stopping member ends its streams), and that
// clientv3's keep-alive resumes once the member is back.
func TestLeaseKeepAliveStreamAndStop(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{Quiet: true})
	m := c.Members[0]
	cli := m.Client()
	k := keyer(t)
	g := mustGrant(t, cli, 10)
	mustPut(t, cli, k("a"), "v", clientv3.WithLease(g.ID))
	kctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ka, err := cli.KeepAlive(kctx, g.ID)
	if err != nil {
		t.Fatalf("keep-alive: %v", err)
	}
	recvKeepAlive(t, ka, g.ID, 10)

	start := time.Now()
	m.Stop()
	took := time.Since(start)
	t.Logf("member with an open keep-alive stream stopped in %v", took.Round(time.Millisecond))
	if took > time.Second {
		t.Errorf("stopping a member with one open keep-alive stream took %v (the gRPC graceful stop waited for the stream)", took.Round(time.Millisecond))
	}
	if err := m.Restart(); err != nil {
		t.Fatalf("restart: %v", err)
	}
	// clientv3 sends the next keep-alive after TTL/3; it must be answered on the new stream.
	recvKeepAlive(t, ka, g.ID, 10)
	if kv := getOne(t, cli, k("a")); kv.Lease != int64(g.ID) {
		t.Fatalf("key after restart: lease %x", kv.Lease)
	}
}
