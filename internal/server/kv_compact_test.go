package server_test

import (
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/ordo-db/ordo/internal/testcluster"
)

func testCompact(t *testing.T, c *testcluster.Cluster) {
	cli := c.Client()

	t.Run("Logical", func(t *testing.T) {
		k := keyer(t)
		r1 := mustPut(t, cli, k("x"), "x1").Header.Revision
		r2 := mustPut(t, cli, k("y"), "y1").Header.Revision
		r3 := mustPut(t, cli, k("x"), "x2").Header.Revision
		r4 := mustDelete(t, cli, k("y")).Header.Revision
		r5 := mustPut(t, cli, k("z"), "z1").Header.Revision
		r6 := mustPut(t, cli, k("x"), "x3").Header.Revision

		// Responses at and after the compact revision, taken before compacting.
		before := map[int64]*clientv3.GetResponse{}
		for _, rev := range []int64{r3, r4, r5, r6} {
			before[rev] = mustGet(t, cli, prefix(t), clientv3.WithPrefix(), clientv3.WithRev(rev))
		}
		cur := currentRev(t, cli)

		resp, err := cli.Compact(ctx(t), r3)
		if err != nil {
			t.Fatalf("compact at %d: %v", r3, err)
		}
		checkHeader(t, resp.Header)
		if resp.Header.Revision != cur {
			t.Fatalf("compact response revision %d, want the current revision %d", resp.Header.Revision, cur)
		}
		if rev := currentRev(t, cli); rev != cur {
			t.Fatalf("compaction changed the revision %d -> %d", cur, rev)
		}

		for _, m := range c.Members {
			mc := m.Client()
			for _, rev := range []int64{1, r1, r2, r3 - 1} {
				_, err := mc.Get(ctx(t), k("x"), clientv3.WithRev(rev))
				wantErr(t, "get below the compact revision", err, rpctypes.ErrCompacted)
				// The linearizable read made this member apply the compaction.
				_, err = mc.Get(ctx(t), prefix(t), clientv3.WithPrefix(), clientv3.WithRev(rev), clientv3.WithSerializable())
				wantErr(t, "serializable get below the compact revision", err, rpctypes.ErrCompacted)
			}
		}
		for rev, want := range before {
			got := mustGet(t, cli, prefix(t), clientv3.WithPrefix(), clientv3.WithRev(rev))
			sameKVs(t, rev, got, want)
		}
		// So does a stream.
		ch, err := cli.GetStream(ctx(t), prefix(t), clientv3.WithPrefix(), clientv3.WithRev(r2))
		if err == nil {
			_, err = collectStream(t, ch)
		}
		wantErr(t, "stream below the compact revision", err, rpctypes.ErrCompacted)
		// A txn reading below the compact revision fails too.
		_, err = cli.Txn(ctx(t)).Then(clientv3.OpGet(k("x"), clientv3.WithRev(r2))).Commit()
		wantErr(t, "txn get below the compact revision", err, rpctypes.ErrCompacted)

		// Compacting at or below the compact revision fails; so does a future revision.
		_, err = cli.Compact(ctx(t), r3)
		wantErr(t, "compact again at the same revision", err, rpctypes.ErrCompacted)
		_, err = cli.Compact(ctx(t), r2)
		wantErr(t, "compact below the compact revision", err, rpctypes.ErrCompacted)
		_, err = cli.Compact(ctx(t), cur+1)
		wantErr(t, "compact at a future revision", err, rpctypes.ErrFutureRev)
		_, err = cli.Compact(ctx(t), cur+1000, clientv3.WithCompactPhysical())
		wantErr(t, "physical compact at a future revision", err, rpctypes.ErrFutureRev)
	})

	t.Run("Physical", func(t *testing.T) {
		k := keyer(t)
		r1 := mustPut(t, cli, k("x"), "x1").Header.Revision
		mustPut(t, cli, k("x"), "x2")
		r3 := mustPut(t, cli, k("x"), "x3").Header.Revision
		mustPut(t, cli, k("gone"), "g")
		rGone := mustDelete(t, cli, k("gone")).Header.Revision
		rKeep := mustPut(t, cli, k("keep"), "k").Header.Revision
		r7 := mustPut(t, cli, k("x"), "x4").Header.Revision
		cur := currentRev(t, cli)
		before := map[int64]*clientv3.GetResponse{}
		for _, rev := range []int64{rKeep, r7, cur} {
			before[rev] = mustGet(t, cli, prefix(t), clientv3.WithPrefix(), clientv3.WithRev(rev))
		}

		if _, err := cli.Compact(ctx(t), rKeep, clientv3.WithCompactPhysical()); err != nil {
			t.Fatalf("physical compact at %d: %v", rKeep, err)
		}
		_, err := cli.Get(ctx(t), k("x"), clientv3.WithRev(rKeep-1))
		wantErr(t, "get below the physical compact revision", err, rpctypes.ErrCompacted)
		for rev, want := range before {
			sameKVs(t, rev, mustGet(t, cli, prefix(t), clientv3.WithPrefix(), clientv3.WithRev(rev)), want)
		}
		// The key deleted before the compact revision stays deleted.
		if g := mustGet(t, cli, k("gone"), clientv3.WithRev(rKeep)); len(g.Kvs) != 0 || rGone >= rKeep {
			t.Fatalf("deleted key at the compact revision: %v", g.Kvs)
		}
		// x keeps its life: version and create revision continue after compaction.
		wantKV(t, "x at the compact revision", getOne(t, cli, k("x"), clientv3.WithRev(rKeep)), k("x"), "x3", r1, r3, 3)
		p := mustPut(t, cli, k("x"), "x5")
		wantKV(t, "x after compaction", getOne(t, cli, k("x")), k("x"), "x5", r1, p.Header.Revision, 5)
		// A deleted key recreated after compaction starts a new life.
		p = mustPut(t, cli, k("gone"), "again")
		wantKV(t, "recreated after compaction", getOne(t, cli, k("gone")), k("gone"), "again", p.Header.Revision, p.Header.Revision, 1)
		// Compacting to the current revision works and later reads still see the latest state.
		cur = currentRev(t, cli)
		if _, err := cli.Compact(ctx(t), cur, clientv3.WithCompactPhysical()); err != nil {
			t.Fatalf("physical compact at the current revision %d: %v", cur, err)
		}
		g := mustGet(t, cli, prefix(t), clientv3.WithPrefix())
		wantKeys(t, "after compacting everything", g.Kvs, k("gone"), k("keep"), k("x"))
		wantKV(t, "x after compacting everything", g.Kvs[2], k("x"), "x5", r1, cur-1, 5)
		_, err = cli.Compact(ctx(t), cur, clientv3.WithCompactPhysical())
		wantErr(t, "physical compact at the compact revision", err, rpctypes.ErrCompacted)
	})

	t.Run("EveryMemberCompacted", func(t *testing.T) {
		k := keyer(t)
		r1 := mustPut(t, cli, k("a"), "1").Header.Revision
		r2 := mustPut(t, cli, k("a"), "2").Header.Revision
		if _, err := cli.Compact(ctx(t), r2, clientv3.WithCompactPhysical()); err != nil {
			t.Fatalf("compact: %v", err)
		}
		for i, m := range c.Members {
			mc := m.Client()
			_, err := mc.Get(ctx(t), k("a"), clientv3.WithRev(r1))
			wantErr(t, "linearizable get below the compact revision on member "+string(rune('0'+i)), err, rpctypes.ErrCompacted)
			wantKV(t, "at the compact revision", getOne(t, mc, k("a"), clientv3.WithRev(r2)), k("a"), "2", r1, r2, 2)
		}
	})
}

// sameKVs fails unless got and want hold the same key-values and count.
func sameKVs(t *testing.T, rev int64, got, want *clientv3.GetResponse) {
	t.Helper()
	if got.Count != want.Count || len(got.Kvs) != len(want.Kvs) {
		t.Fatalf("at rev %d: got %q (count %d), before compaction %q (count %d)", rev, keysOf(got.Kvs), got.Count, keysOf(want.Kvs), want.Count)
	}
	for i := range got.Kvs {
		if !proto.Equal(got.Kvs[i], want.Kvs[i]) {
			t.Fatalf("at rev %d: got %v, before compaction %v", rev, got.Kvs[i], want.Kvs[i])
		}
	}
}
