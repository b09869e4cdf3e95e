package server_test

import (
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ordo-db/ordo/internal/testcluster"
)

// Sizes as etcd v3.7 defines them: --max-request-bytes defaults to 1.5 MiB, the gRPC server
// accepts messages up to that plus 512 KiB, and clientv3 sends at most 2 MiB by default.
const (
	maxRequestBytes = 1572864
	grpcMaxRecv     = maxRequestBytes + 512*1024
)

func testRequestTooLarge(t *testing.T, c *testcluster.Cluster) {
	cli := c.Client()
	// A client that sends anything, so that the server's own gRPC limit is reached.
	var eps []string
	for _, m := range c.Members {
		eps = append(eps, m.ClientURL)
	}
	big, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, MaxCallSendMsgSize: 16 << 20, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	t.Cleanup(func() { _ = big.Close() })

	t.Run("JustBelowLimit", func(t *testing.T) {
		k := keyer(t)
		val := strings.Repeat("a", maxRequestBytes-1024)
		p := mustPut(t, cli, k("big"), val)
		kv := getOne(t, cli, k("big"))
		if len(kv.Value) != len(val) || kv.ModRevision != p.Header.Revision {
			t.Fatalf("got %d bytes at mod %d, want %d at %d", len(kv.Value), kv.ModRevision, len(val), p.Header.Revision)
		}
	})

	t.Run("OverMaxRequestBytes", func(t *testing.T) {
		k := keyer(t)
		r0 := currentRev(t, cli)
		for _, size := range []int{maxRequestBytes, maxRequestBytes + 1, maxRequestBytes + 100*1024} {
			_, err := cli.Put(ctx(t), k("too-big"), strings.Repeat("b", size))
			wantErr(t, "put of a value over max-request-bytes", err, rpctypes.ErrRequestTooLarge)
			if rpctypes.ErrorDesc(err) != "etcdserver: request is too large" {
				t.Fatalf("error text %q", rpctypes.ErrorDesc(err))
			}
		}
		// A txn whose puts together exceed the limit.
		half := strings.Repeat("c", maxRequestBytes/2+1024)
		_, err := cli.Txn(ctx(t)).Then(clientv3.OpPut(k("t1"), half), clientv3.OpPut(k("t2"), half)).Commit()
		wantErr(t, "txn over max-request-bytes", err, rpctypes.ErrRequestTooLarge)
		// Through the unlimited client too, for sizes the gRPC server still accepts.
		_, err = big.Put(ctx(t), k("too-big"), strings.Repeat("d", grpcMaxRecv-1024))
		wantErr(t, "put just below the gRPC limit", err, rpctypes.ErrRequestTooLarge)
		if g := mustGet(t, cli, prefix(t), clientv3.WithPrefix()); len(g.Kvs) != 0 || g.Header.Revision != r0 {
			t.Fatalf("rejected requests changed the store: %q at %d (was %d)", keysOf(g.Kvs), g.Header.Revision, r0)
		}
	})

	t.Run("OverGRPCLimit", func(t *testing.T) {
		k := keyer(t)
		// clientv3 refuses to send more than 2 MiB: etcd's clients see ResourceExhausted for a
		// 2 MiB value before it reaches the server.
		_, err := cli.Put(ctx(t), k("huge"), strings.Repeat("e", 2<<20))
		if status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("2 MiB value through the default client: got %v (code %v), want ResourceExhausted", err, status.Code(err))
		}
		// Sent anyway, the server's gRPC limit (max-request-bytes + 512 KiB) rejects it.
		for _, size := range []int{2 << 20, grpcMaxRecv + 1, 4 << 20} {
			_, err = big.Put(ctx(t), k("huge"), strings.Repeat("f", size))
			if status.Code(err) != codes.ResourceExhausted {
				t.Fatalf("%d byte value: got %v (code %v), want ResourceExhausted", size, err, status.Code(err))
			}
		}
		if g := mustGet(t, cli, k("huge")); len(g.Kvs) != 0 {
			t.Fatalf("rejected put was applied")
		}
	})

	t.Run("StaysHealthy", func(t *testing.T) {
		k := keyer(t)
		for i, m := range c.Members {
			checkAlive(t, m.Client(), k(string(rune('a'+i))))
		}
		checkAlive(t, big, k("big-client"))
		checkAlive(t, cli, k("cluster-client"))
	})
}
