package server_test

import (
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ordo-db/ordo/internal/testcluster"
)

func testDelete(t *testing.T, c *testcluster.Cluster) {
	cli := c.Client()

	put4 := func(t *testing.T) (func(string) string, map[string]int64) {
		k := keyer(t)
		revs := map[string]int64{}
		for _, s := range []string{"a", "b", "c", "d"} {
			revs[s] = mustPut(t, cli, k(s), "v"+s).Header.Revision
		}
		return k, revs
	}

	t.Run("Single", func(t *testing.T) {
		k, revs := put4(t)
		r0 := currentRev(t, cli)
		d := mustDelete(t, cli, k("b"))
		if d.Deleted != 1 || d.Header.Revision != r0+1 || len(d.PrevKvs) != 0 {
			t.Fatalf("delete b: deleted %d revision %d prev_kvs %d, want 1 %d 0", d.Deleted, d.Header.Revision, len(d.PrevKvs), r0+1)
		}
		wantKeys(t, "after delete", mustGet(t, cli, prefix(t), clientv3.WithPrefix()).Kvs, k("a"), k("c"), k("d"))
		// History before the delete is still readable.
		wantKV(t, "b before delete", getOne(t, cli, k("b"), clientv3.WithRev(r0)), k("b"), "vb", revs["b"], revs["b"], 1)
		// Deleting it again deletes nothing.
		d = mustDelete(t, cli, k("b"))
		if d.Deleted != 0 || d.Header.Revision != r0+1 {
			t.Fatalf("second delete of b: deleted %d revision %d, want 0 %d", d.Deleted, d.Header.Revision, r0+1)
		}
	})

	t.Run("Range", func(t *testing.T) {
		k, _ := put4(t)
		r0 := currentRev(t, cli)
		d := mustDelete(t, cli, k("a"), clientv3.WithRange(k("c")))
		if d.Deleted != 2 || d.Header.Revision != r0+1 {
			t.Fatalf("delete [a,c): deleted %d revision %d, want 2 %d", d.Deleted, d.Header.Revision, r0+1)
		}
		wantKeys(t, "after delete [a,c)", mustGet(t, cli, prefix(t), clientv3.WithPrefix()).Kvs, k("c"), k("d"))
		// An inverted range deletes nothing.
		d = mustDelete(t, cli, k("d"), clientv3.WithRange(k("c")))
		if d.Deleted != 0 || d.Header.Revision != r0+1 {
			t.Fatalf("delete [d,c): deleted %d revision %d", d.Deleted, d.Header.Revision)
		}
		d = mustDelete(t, cli, k("c"), clientv3.WithRange(k("e")))
		if d.Deleted != 2 || d.Header.Revision != r0+2 {
			t.Fatalf("delete [c,e): deleted %d revision %d, want 2 %d", d.Deleted, d.Header.Revision, r0+2)
		}
	})

	t.Run("Prefix", func(t *testing.T) {
		k, _ := put4(t)
		other := prefix(t)[:len(prefix(t))-1] + "0"
		mustPut(t, cli, other, "outside")
		r0 := currentRev(t, cli)
		d := mustDelete(t, cli, prefix(t), clientv3.WithPrefix())
		if d.Deleted != 4 || d.Header.Revision != r0+1 {
			t.Fatalf("delete prefix: deleted %d revision %d, want 4 %d", d.Deleted, d.Header.Revision, r0+1)
		}
		if g := mustGet(t, cli, prefix(t), clientv3.WithPrefix()); len(g.Kvs) != 0 || g.Count != 0 {
			t.Fatalf("after delete prefix: %q", keysOf(g.Kvs))
		}
		getOne(t, cli, other)
		// The whole prefix is readable at the revision before the delete.
		wantKeys(t, "before delete", mustGet(t, cli, prefix(t), clientv3.WithPrefix(), clientv3.WithRev(r0)).Kvs, k("a"), k("b"), k("c"), k("d"))
	})

	t.Run("FromKey", func(t *testing.T) {
		// From-key deletes everything from a key on, so the keys live in a namespace that
		// sorts after every other test's keys.
		base := "\xfe" + prefix(t)
		var keys []string
		for _, s := range []string{"a", "b", "c"} {
			keys = append(keys, base+s)
			mustPut(t, cli, base+s, s)
		}
		// Everything >= base+"b" is ours: nothing sorts after "\xfe..." except "\xff..." keys,
		// which no test writes at the top level.
		all := mustGet(t, cli, base+"b", clientv3.WithFromKey())
		wantKeys(t, "from b", all.Kvs, keys[1:]...)
		d := mustDelete(t, cli, base+"b", clientv3.WithFromKey(), clientv3.WithPrevKV())
		if d.Deleted != 2 {
			t.Fatalf("delete from b: deleted %d", d.Deleted)
		}
		wantKeys(t, "prev_kvs of delete from b", d.PrevKvs, keys[1:]...)
		wantKeys(t, "left", mustGet(t, cli, base, clientv3.WithPrefix()).Kvs, keys[0])
		mustDelete(t, cli, base, clientv3.WithPrefix())
	})

	t.Run("PrevKV", func(t *testing.T) {
		k, revs := put4(t)
		mustPut(t, cli, k("b"), "vb2")
		rb2 := currentRev(t, cli)
		d := mustDelete(t, cli, prefix(t), clientv3.WithPrefix(), clientv3.WithPrevKV())
		if d.Deleted != 4 || len(d.PrevKvs) != 4 {
			t.Fatalf("delete with prev_kv: deleted %d prev_kvs %d", d.Deleted, len(d.PrevKvs))
		}
		wantKeys(t, "prev_kvs in key order", d.PrevKvs, k("a"), k("b"), k("c"), k("d"))
		wantKV(t, "prev a", d.PrevKvs[0], k("a"), "va", revs["a"], revs["a"], 1)
		wantKV(t, "prev b", d.PrevKvs[1], k("b"), "vb2", revs["b"], rb2, 2)
		wantKV(t, "prev d", d.PrevKvs[3], k("d"), "vd", revs["d"], revs["d"], 1)
		d = mustDelete(t, cli, k("a"), clientv3.WithPrevKV())
		if d.Deleted != 0 || len(d.PrevKvs) != 0 {
			t.Fatalf("delete of a missing key with prev_kv: deleted %d prev_kvs %v", d.Deleted, d.PrevKvs)
		}
	})

	t.Run("NothingDoesNotBumpRevision", func(t *testing.T) {
		k := keyer(t)
		r0 := currentRev(t, cli)
		for _, tc := range []struct {
			name string
			key  string
			opts []clientv3.OpOption
		}{
			{"missing key", k("missing"), nil},
			{"empty range", k("a"), []clientv3.OpOption{clientv3.WithRange(k("b"))}},
			{"empty prefix", k("nothing/"), []clientv3.OpOption{clientv3.WithPrefix()}},
		} {
			d := mustDelete(t, cli, tc.key, tc.opts...)
			if d.Deleted != 0 || d.Header.Revision != r0 {
				t.Fatalf("%s: deleted %d revision %d, want 0 %d", tc.name, d.Deleted, d.Header.Revision, r0)
			}
		}
		if p := mustPut(t, cli, k("x"), "x"); p.Header.Revision != r0+1 {
			t.Fatalf("put after no-op deletes: revision %d, want %d", p.Header.Revision, r0+1)
		}
	})

	t.Run("PutAfterDelete", func(t *testing.T) {
		k := keyer(t)
		r1 := mustPut(t, cli, k("k"), "1").Header.Revision
		r2 := mustPut(t, cli, k("k"), "2").Header.Revision
		r3 := mustDelete(t, cli, k("k")).Header.Revision
		r4 := mustPut(t, cli, k("k"), "3").Header.Revision
		if r2 != r1+1 || r3 != r2+1 || r4 != r3+1 {
			t.Fatalf("revisions %d %d %d %d are not consecutive", r1, r2, r3, r4)
		}
		wantKV(t, "recreated", getOne(t, cli, k("k")), k("k"), "3", r4, r4, 1)
		r5 := mustPut(t, cli, k("k"), "4").Header.Revision
		wantKV(t, "recreated, updated", getOne(t, cli, k("k")), k("k"), "4", r4, r5, 2)
		wantKV(t, "old life", getOne(t, cli, k("k"), clientv3.WithRev(r2)), k("k"), "2", r1, r2, 2)
		if g := mustGet(t, cli, k("k"), clientv3.WithRev(r3)); len(g.Kvs) != 0 {
			t.Fatalf("at the delete revision the key exists: %v", g.Kvs)
		}
	})

	t.Run("EmptyKey", func(t *testing.T) {
		_, err := cli.Delete(ctx(t), "")
		wantErr(t, "delete of an empty key", err, rpctypes.ErrEmptyKey)
	})
}
