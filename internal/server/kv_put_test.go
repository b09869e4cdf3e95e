package server_test

import (
	"fmt"
	"strings"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ordo-db/ordo/internal/testcluster"
)

func testPut(t *testing.T, c *testcluster.Cluster) {
	cli := c.Client()

	t.Run("RevisionsAndVersions", func(t *testing.T) {
		k := keyer(t)
		r0 := currentRev(t, cli)

		p1 := mustPut(t, cli, k("a"), "v1")
		if p1.Header.Revision != r0+1 {
			t.Fatalf("first put: header revision %d, want %d", p1.Header.Revision, r0+1)
		}
		if p1.PrevKv != nil {
			t.Fatalf("put without prev_kv returned prev_kv %v", p1.PrevKv)
		}
		g := mustGet(t, cli, k("a"))
		if g.Header.Revision != r0+1 || g.Count != 1 || g.More {
			t.Fatalf("get after first put: header rev %d count %d more %v, want %d 1 false", g.Header.Revision, g.Count, g.More, r0+1)
		}
		wantKV(t, "after first put", g.Kvs[0], k("a"), "v1", r0+1, r0+1, 1)

		p2 := mustPut(t, cli, k("a"), "v2")
		if p2.Header.Revision != r0+2 {
			t.Fatalf("second put: header revision %d, want %d", p2.Header.Revision, r0+2)
		}
		wantKV(t, "after second put", getOne(t, cli, k("a")), k("a"), "v2", r0+1, r0+2, 2)

		p3 := mustPut(t, cli, k("b"), "w1")
		if p3.Header.Revision != r0+3 {
			t.Fatalf("put of another key: header revision %d, want %d", p3.Header.Revision, r0+3)
		}
		wantKV(t, "other key", getOne(t, cli, k("b")), k("b"), "w1", r0+3, r0+3, 1)
		wantKV(t, "first key unchanged", getOne(t, cli, k("a")), k("a"), "v2", r0+1, r0+2, 2)

		// Each put bumps the revision by exactly one; versions count puts per key.
		for i := 1; i <= 10; i++ {
			p := mustPut(t, cli, k("a"), fmt.Sprintf("v%d", i+2))
			if want := r0 + 3 + int64(i); p.Header.Revision != want {
				t.Fatalf("put %d: header revision %d, want %d", i, p.Header.Revision, want)
			}
		}
		wantKV(t, "after 12 puts", getOne(t, cli, k("a")), k("a"), "v12", r0+1, r0+13, 12)
		if rev := currentRev(t, cli); rev != r0+13 {
			t.Fatalf("current revision %d, want %d", rev, r0+13)
		}
	})

	t.Run("EmptyValue", func(t *testing.T) {
		k := keyer(t)
		p := mustPut(t, cli, k("e"), "")
		kv := getOne(t, cli, k("e"))
		wantKV(t, "empty value", kv, k("e"), "", p.Header.Revision, p.Header.Revision, 1)
	})

	t.Run("BinaryKeyAndValue", func(t *testing.T) {
		k := keyer(t)
		key := k("\x00\x01\xff\xfe\x00")
		val := "\x00\xff\x00value\x00"
		p := mustPut(t, cli, key, val)
		wantKV(t, "binary", getOne(t, cli, key), key, val, p.Header.Revision, p.Header.Revision, 1)
		// A key that is a prefix of the binary one is a different key.
		if g := mustGet(t, cli, k("\x00")); len(g.Kvs) != 0 {
			t.Fatalf("get of a prefix of a binary key returned %q", keysOf(g.Kvs))
		}
	})

	t.Run("LargeKey", func(t *testing.T) {
		k := keyer(t)
		key := k(strings.Repeat("\x00k\xff", 32<<10)) // ~96 KiB with bytes that need escaping
		p := mustPut(t, cli, key, "v")
		wantKV(t, "large key", getOne(t, cli, key), key, "v", p.Header.Revision, p.Header.Revision, 1)
		wantKeys(t, "large key by prefix", mustGet(t, cli, prefix(t), clientv3.WithPrefix()).Kvs, key)
		if d := mustDelete(t, cli, key); d.Deleted != 1 {
			t.Fatalf("delete large key: deleted %d", d.Deleted)
		}
	})

	t.Run("Header", func(t *testing.T) {
		k := keyer(t)
		// Every member reports the same cluster id and its own member id.
		var clusterID uint64
		seen := map[uint64]bool{}
		for i, m := range c.Members {
			mc := m.Client()
			p := mustPut(t, mc, k(fmt.Sprintf("m%d", i)), "x")
			st, err := mc.Status(ctx(t), m.ClientURL)
			if err != nil {
				t.Fatalf("status of member %d: %v", i, err)
			}
			if p.Header.MemberId != st.Header.MemberId {
				t.Fatalf("member %d: put header member_id %x, status member_id %x", i, p.Header.MemberId, st.Header.MemberId)
			}
			if seen[p.Header.MemberId] {
				t.Fatalf("member %d: member_id %x reported by two members", i, p.Header.MemberId)
			}
			seen[p.Header.MemberId] = true
			if clusterID == 0 {
				clusterID = p.Header.ClusterId
			} else if p.Header.ClusterId != clusterID {
				t.Fatalf("member %d: cluster_id %x, member 0 reported %x", i, p.Header.ClusterId, clusterID)
			}
			if p.Header.RaftTerm > st.RaftTerm || st.RaftTerm == 0 {
				t.Fatalf("member %d: put raft_term %d is ahead of the later status raft_term %d", i, p.Header.RaftTerm, st.RaftTerm)
			}
		}
	})

	t.Run("PrevKV", func(t *testing.T) {
		k := keyer(t)
		p1 := mustPut(t, cli, k("p"), "old", clientv3.WithPrevKV())
		if p1.PrevKv != nil {
			t.Fatalf("prev_kv of a new key: %v, want nil", p1.PrevKv)
		}
		p2 := mustPut(t, cli, k("p"), "new", clientv3.WithPrevKV())
		wantKV(t, "prev_kv", p2.PrevKv, k("p"), "old", p1.Header.Revision, p1.Header.Revision, 1)
		p3 := mustPut(t, cli, k("p"), "newer", clientv3.WithPrevKV())
		wantKV(t, "prev_kv 2", p3.PrevKv, k("p"), "new", p1.Header.Revision, p2.Header.Revision, 2)
		// prev_kv of a key recreated after a delete is nil.
		mustDelete(t, cli, k("p"))
		p4 := mustPut(t, cli, k("p"), "again", clientv3.WithPrevKV())
		if p4.PrevKv != nil {
			t.Fatalf("prev_kv of a recreated key: %v, want nil", p4.PrevKv)
		}
	})

	t.Run("IgnoreValue", func(t *testing.T) {
		k := keyer(t)
		r0 := currentRev(t, cli)
		_, err := cli.Put(ctx(t), k("absent"), "", clientv3.WithIgnoreValue())
		wantErr(t, "ignore_value on a missing key", err, rpctypes.ErrKeyNotFound)
		if rev := currentRev(t, cli); rev != r0 {
			t.Fatalf("failed put bumped the revision %d -> %d", r0, rev)
		}

		p1 := mustPut(t, cli, k("iv"), "keep")
		p2 := mustPut(t, cli, k("iv"), "", clientv3.WithIgnoreValue(), clientv3.WithPrevKV())
		if p2.Header.Revision != p1.Header.Revision+1 {
			t.Fatalf("ignore_value put: revision %d, want %d", p2.Header.Revision, p1.Header.Revision+1)
		}
		wantKV(t, "ignore_value prev_kv", p2.PrevKv, k("iv"), "keep", p1.Header.Revision, p1.Header.Revision, 1)
		wantKV(t, "after ignore_value put", getOne(t, cli, k("iv")), k("iv"), "keep", p1.Header.Revision, p2.Header.Revision, 2)

		_, err = cli.Put(ctx(t), k("iv"), "x", clientv3.WithIgnoreValue())
		wantErr(t, "ignore_value with a value", err, rpctypes.ErrValueProvided)
	})

	t.Run("IgnoreLease", func(t *testing.T) {
		k := keyer(t)
		_, err := cli.Put(ctx(t), k("absent"), "v", clientv3.WithIgnoreLease())
		wantErr(t, "ignore_lease on a missing key", err, rpctypes.ErrKeyNotFound)

		p1 := mustPut(t, cli, k("il"), "a")
		p2 := mustPut(t, cli, k("il"), "b", clientv3.WithIgnoreLease())
		kv := getOne(t, cli, k("il"))
		wantKV(t, "after ignore_lease put", kv, k("il"), "b", p1.Header.Revision, p2.Header.Revision, 2)
		if kv.Lease != 0 {
			t.Fatalf("lease %d, want 0", kv.Lease)
		}

		_, err = cli.Put(ctx(t), k("il"), "c", clientv3.WithIgnoreLease(), clientv3.WithLease(0x1234))
		wantErr(t, "ignore_lease with a lease", err, rpctypes.ErrLeaseProvided)

		// Both flags together keep value and lease.
		p3 := mustPut(t, cli, k("il"), "", clientv3.WithIgnoreLease(), clientv3.WithIgnoreValue())
		wantKV(t, "both flags", getOne(t, cli, k("il")), k("il"), "b", p1.Header.Revision, p3.Header.Revision, 3)
	})

	t.Run("LeaseNotFound", func(t *testing.T) {
		k := keyer(t)
		r0 := currentRev(t, cli)
		_, err := cli.Put(ctx(t), k("l"), "v", clientv3.WithLease(0x7777))
		wantErr(t, "put with an unknown lease", err, rpctypes.ErrLeaseNotFound)
		if rpctypes.ErrorDesc(err) != "etcdserver: requested lease not found" {
			t.Fatalf("error text %q", rpctypes.ErrorDesc(err))
		}
		if g := mustGet(t, cli, k("l")); len(g.Kvs) != 0 || g.Header.Revision != r0 {
			t.Fatalf("failed put changed the store: kvs %q revision %d (was %d)", keysOf(g.Kvs), g.Header.Revision, r0)
		}
		// On an existing key too, and the key stays unchanged.
		p := mustPut(t, cli, k("l"), "v")
		_, err = cli.Put(ctx(t), k("l"), "w", clientv3.WithLease(0x7777))
		wantErr(t, "put with an unknown lease on an existing key", err, rpctypes.ErrLeaseNotFound)
		wantKV(t, "unchanged", getOne(t, cli, k("l")), k("l"), "v", p.Header.Revision, p.Header.Revision, 1)
	})

	t.Run("EmptyKey", func(t *testing.T) {
		_, err := cli.Put(ctx(t), "", "v")
		wantErr(t, "put of an empty key", err, rpctypes.ErrEmptyKey)
	})
}
