package server_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ordo-db/ordo/internal/testcluster"
)

// callTimeout bounds every single client call made by these tests.
const callTimeout = 15 * time.Second

// clusterSizes are the cluster sizes every KV behaviour is checked against.
var clusterSizes = []struct {
	name string
	n    int
}{
	{"1member", 1},
	{"3members", 3},
}

// forEachClusterSize runs body once against a 1-member and once against a 3-member cluster,
// as the sub-tests "1member" and "3members". The two run in parallel, each on its own
// cluster, which body shares between its own sub-cases (give each sub-case its own key
// prefix, see prefix).
func forEachClusterSize(t *testing.T, body func(t *testing.T, c *testcluster.Cluster)) {
	t.Helper()
	for _, size := range clusterSizes {
		t.Run(size.name, func(t *testing.T) {
			t.Parallel()
			c := testcluster.New(t, size.n, testcluster.Options{})
			if _, err := c.Leader(30 * time.Second); err != nil {
				t.Fatalf("leader: %v", err)
			}
			body(t, c)
		})
	}
}

// ctx returns a context for one client call; it is canceled when the test ends at the latest.
func ctx(t testing.TB) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), callTimeout)
	t.Cleanup(cancel)
	return c
}

// prefix is a key prefix unique to the running (sub-)test.
func prefix(t testing.TB) string { return t.Name() + "/" }

// keyer returns a function that prefixes keys with the test's prefix.
func keyer(t testing.TB) func(string) string {
	p := prefix(t)
	return func(s string) string { return p + s }
}

func mustPut(t testing.TB, kv clientv3.KV, key, val string, opts ...clientv3.OpOption) *clientv3.PutResponse {
	t.Helper()
	resp, err := kv.Put(ctx(t), key, val, opts...)
	if err != nil {
		t.Fatalf("put %q: %v", key, err)
	}
	checkHeader(t, resp.Header)
	return resp
}

func mustGet(t testing.TB, kv clientv3.KV, key string, opts ...clientv3.OpOption) *clientv3.GetResponse {
	t.Helper()
	resp, err := kv.Get(ctx(t), key, opts...)
	if err != nil {
		t.Fatalf("get %q: %v", key, err)
	}
	checkHeader(t, resp.Header)
	return resp
}

func mustDelete(t testing.TB, kv clientv3.KV, key string, opts ...clientv3.OpOption) *clientv3.DeleteResponse {
	t.Helper()
	resp, err := kv.Delete(ctx(t), key, opts...)
	if err != nil {
		t.Fatalf("delete %q: %v", key, err)
	}
	checkHeader(t, resp.Header)
	return resp
}

func mustTxn(t testing.TB, kv clientv3.KV, cmps []clientv3.Cmp, thenOps, elseOps []clientv3.Op) *clientv3.TxnResponse {
	t.Helper()
	resp, err := kv.Txn(ctx(t)).If(cmps...).Then(thenOps...).Else(elseOps...).Commit()
	if err != nil {
		t.Fatalf("txn: %v", err)
	}
	checkHeader(t, resp.Header)
	return resp
}

// getOne gets a key that must exist.
func getOne(t testing.TB, kv clientv3.KV, key string, opts ...clientv3.OpOption) *mvccpb.KeyValue {
	t.Helper()
	resp := mustGet(t, kv, key, opts...)
	if len(resp.Kvs) != 1 {
		t.Fatalf("get %q: got %d kvs (%v), want 1", key, len(resp.Kvs), keysOf(resp.Kvs))
	}
	return resp.Kvs[0]
}

// currentRev returns the store's current revision (a linearizable read's header revision).
func currentRev(t testing.TB, kv clientv3.KV) int64 {
	t.Helper()
	return mustGet(t, kv, "\x00rev-probe", clientv3.WithCountOnly()).Header.Revision
}

// checkHeader checks the fields etcd fills in every response header.
func checkHeader(t testing.TB, h *pb.ResponseHeader) {
	t.Helper()
	switch {
	case h == nil:
		t.Fatalf("response header is nil")
	case h.ClusterId == 0:
		t.Fatalf("header cluster_id is 0: %v", h)
	case h.MemberId == 0:
		t.Fatalf("header member_id is 0: %v", h)
	case h.Revision <= 0:
		t.Fatalf("header revision is %d: %v", h.Revision, h)
	case h.RaftTerm == 0:
		t.Fatalf("header raft_term is 0: %v", h)
	}
}

// isErr and errCode compare client errors with etcd's errors (see testcluster.IsErr).
var (
	isErr   = testcluster.IsErr
	errCode = testcluster.ErrCode
)

// wantErr fails the test unless err is the etcd error want.
func wantErr(t testing.TB, what string, err, want error) {
	t.Helper()
	if !isErr(err, want) {
		t.Fatalf("%s: got error %v (code %v), want %v (code %v)", what, err, errCode(err), want, errCode(want))
	}
}

func keysOf(kvs []*mvccpb.KeyValue) []string {
	out := make([]string, len(kvs))
	for i, kv := range kvs {
		out[i] = string(kv.Key)
	}
	return out
}

// wantKeys fails unless kvs hold exactly the keys want, in that order.
func wantKeys(t testing.TB, what string, kvs []*mvccpb.KeyValue, want ...string) {
	t.Helper()
	got := keysOf(kvs)
	if want == nil {
		want = []string{}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("%s: got keys %q, want %q", what, got, want)
	}
}

// wantKV checks a key-value's metadata.
func wantKV(t testing.TB, what string, kv *mvccpb.KeyValue, key, val string, create, mod, ver int64) {
	t.Helper()
	if kv == nil {
		t.Fatalf("%s: kv is nil", what)
	}
	if string(kv.Key) != key || string(kv.Value) != val || kv.CreateRevision != create || kv.ModRevision != mod || kv.Version != ver {
		t.Fatalf("%s: got {key %q value %q create %d mod %d version %d}, want {key %q value %q create %d mod %d version %d}",
			what, kv.Key, truncate(kv.Value), kv.CreateRevision, kv.ModRevision, kv.Version, key, truncate([]byte(val)), create, mod, ver)
	}
}

func truncate(b []byte) string {
	if len(b) > 64 {
		return fmt.Sprintf("%s...(%d bytes)", b[:64], len(b))
	}
	return string(b)
}

// waitFor polls cond until it holds or timeout passes (testcluster.WaitFor).
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	testcluster.WaitFor(t, timeout, what, cond)
}

// hostPort returns the host:port of a member's client URL.
func hostPort(m *testcluster.Member) string {
	return strings.TrimPrefix(strings.TrimPrefix(m.ClientURL, "http://"), "https://")
}

// rawKV is etcd's generated KV client on the client's connection, for requests clientv3 does
// not build (e.g. sort ascending by key, invalid enums).
func rawKV(cli *clientv3.Client) pb.KVClient { return pb.NewKVClient(cli.ActiveConnection()) }

// checkAlive fails unless a put and a linearizable get through cli work.
func checkAlive(t testing.TB, cli *clientv3.Client, key string) {
	t.Helper()
	val := fmt.Sprintf("alive-%d", time.Now().UnixNano())
	p := mustPut(t, cli, key, val)
	kv := getOne(t, cli, key)
	if string(kv.Value) != val || kv.ModRevision != p.Header.Revision {
		t.Fatalf("after put %q=%q at %d, get returned value %q mod %d", key, val, p.Header.Revision, kv.Value, kv.ModRevision)
	}
}
