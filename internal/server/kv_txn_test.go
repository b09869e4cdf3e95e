package server_test

import (
	"fmt"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ordo-db/ordo/internal/testcluster"
)

func testTxn(t *testing.T, c *testcluster.Cluster) {
	cli := c.Client()
	txnErr := func(t *testing.T, cmps []clientv3.Cmp, thenOps, elseOps []clientv3.Op) error {
		_, err := cli.Txn(ctx(t)).If(cmps...).Then(thenOps...).Else(elseOps...).Commit()
		return err
	}
	cmp := clientv3.Compare

	t.Run("Compares", func(t *testing.T) {
		k := keyer(t)
		key := k("k")
		r1 := mustPut(t, cli, key, "v1").Header.Revision
		r2 := mustPut(t, cli, key, "v2").Header.Revision // value v2, version 2, create r1, mod r2, lease 0
		missing := k("missing")
		for i, tc := range []struct {
			name string
			cmp  clientv3.Cmp
			want bool
		}{
			{"value = v2", cmp(clientv3.Value(key), "=", "v2"), true},
			{"value = v1", cmp(clientv3.Value(key), "=", "v1"), false},
			{"value > v1", cmp(clientv3.Value(key), ">", "v1"), true},
			{"value > v3", cmp(clientv3.Value(key), ">", "v3"), false},
			{"value > v2", cmp(clientv3.Value(key), ">", "v2"), false},
			{"value < v3", cmp(clientv3.Value(key), "<", "v3"), true},
			{"value < v2", cmp(clientv3.Value(key), "<", "v2"), false},
			{"value < v20", cmp(clientv3.Value(key), "<", "v20"), true},
			{"value != v1", cmp(clientv3.Value(key), "!=", "v1"), true},
			{"value != v2", cmp(clientv3.Value(key), "!=", "v2"), false},
			{"value > empty", cmp(clientv3.Value(key), ">", ""), true},
			{"version = 2", cmp(clientv3.Version(key), "=", 2), true},
			{"version = 1", cmp(clientv3.Version(key), "=", 1), false},
			{"version > 1", cmp(clientv3.Version(key), ">", 1), true},
			{"version > 2", cmp(clientv3.Version(key), ">", 2), false},
			{"version < 3", cmp(clientv3.Version(key), "<", 3), true},
			{"version < 2", cmp(clientv3.Version(key), "<", 2), false},
			{"version != 1", cmp(clientv3.Version(key), "!=", 1), true},
			{"version != 2", cmp(clientv3.Version(key), "!=", 2), false},
			{"create = r1", cmp(clientv3.CreateRevision(key), "=", r1), true},
			{"create = r2", cmp(clientv3.CreateRevision(key), "=", r2), false},
			{"create > r1-1", cmp(clientv3.CreateRevision(key), ">", r1-1), true},
			{"create > r1", cmp(clientv3.CreateRevision(key), ">", r1), false},
			{"create < r1+1", cmp(clientv3.CreateRevision(key), "<", r1+1), true},
			{"create < r1", cmp(clientv3.CreateRevision(key), "<", r1), false},
			{"create != r2", cmp(clientv3.CreateRevision(key), "!=", r2), true},
			{"create != r1", cmp(clientv3.CreateRevision(key), "!=", r1), false},
			{"mod = r2", cmp(clientv3.ModRevision(key), "=", r2), true},
			{"mod = r1", cmp(clientv3.ModRevision(key), "=", r1), false},
			{"mod > r1", cmp(clientv3.ModRevision(key), ">", r1), true},
			{"mod > r2", cmp(clientv3.ModRevision(key), ">", r2), false},
			{"mod < r2+1", cmp(clientv3.ModRevision(key), "<", r2+1), true},
			{"mod < r2", cmp(clientv3.ModRevision(key), "<", r2), false},
			{"mod != r1", cmp(clientv3.ModRevision(key), "!=", r1), true},
			{"mod != r2", cmp(clientv3.ModRevision(key), "!=", r2), false},
			{"lease = 0", cmp(clientv3.LeaseValue(key), "=", clientv3.NoLease), true},
			{"lease = 5", cmp(clientv3.LeaseValue(key), "=", 5), false},
			{"lease > 0", cmp(clientv3.LeaseValue(key), ">", 0), false},
			{"lease < 1", cmp(clientv3.LeaseValue(key), "<", 1), true},
			{"lease != 0", cmp(clientv3.LeaseValue(key), "!=", 0), false},
			{"lease != 7", cmp(clientv3.LeaseValue(key), "!=", 7), true},
			// A missing key has zero revisions, version and lease, and fails every value compare.
			{"missing version = 0", cmp(clientv3.Version(missing), "=", 0), true},
			{"missing version > 0", cmp(clientv3.Version(missing), ">", 0), false},
			{"missing create = 0", cmp(clientv3.CreateRevision(missing), "=", 0), true},
			{"missing mod = 0", cmp(clientv3.ModRevision(missing), "=", 0), true},
			{"missing mod < 1", cmp(clientv3.ModRevision(missing), "<", 1), true},
			{"missing lease = 0", cmp(clientv3.LeaseValue(missing), "=", 0), true},
			{"missing value = empty", cmp(clientv3.Value(missing), "=", ""), false},
			{"missing value != x", cmp(clientv3.Value(missing), "!=", "x"), false},
			{"missing value < x", cmp(clientv3.Value(missing), "<", "x"), false},
		} {
			// Read-only branches (served without raft).
			resp := mustTxn(t, cli, []clientv3.Cmp{tc.cmp}, []clientv3.Op{clientv3.OpGet(key)}, []clientv3.Op{clientv3.OpGet(missing)})
			if resp.Succeeded != tc.want {
				t.Fatalf("%s (read-only txn): succeeded %v, want %v", tc.name, resp.Succeeded, tc.want)
			}
			// Writing branches (applied through raft).
			marker := k(fmt.Sprintf("marker%02d", i))
			resp = mustTxn(t, cli, []clientv3.Cmp{tc.cmp}, []clientv3.Op{clientv3.OpPut(marker, "then")}, []clientv3.Op{clientv3.OpPut(marker, "else")})
			if resp.Succeeded != tc.want {
				t.Fatalf("%s (write txn): succeeded %v, want %v", tc.name, resp.Succeeded, tc.want)
			}
			want := map[bool]string{true: "then", false: "else"}[tc.want]
			if kv := getOne(t, cli, marker); string(kv.Value) != want {
				t.Fatalf("%s: branch wrote %q, want %q", tc.name, kv.Value, want)
			}
		}
		// Several compares must all hold.
		both := []clientv3.Cmp{cmp(clientv3.Version(key), "=", 2), cmp(clientv3.Value(key), "=", "v2")}
		if !mustTxn(t, cli, both, nil, nil).Succeeded {
			t.Fatalf("two true compares: not succeeded")
		}
		one := []clientv3.Cmp{cmp(clientv3.Version(key), "=", 2), cmp(clientv3.Value(key), "=", "v1")}
		if mustTxn(t, cli, one, nil, nil).Succeeded {
			t.Fatalf("a true and a false compare: succeeded")
		}
		// A compare of an empty key is rejected.
		wantErr(t, "compare of an empty key", txnErr(t, []clientv3.Cmp{cmp(clientv3.Version(""), "=", 0)}, nil, nil), rpctypes.ErrEmptyKey)
	})

	t.Run("CompareRange", func(t *testing.T) {
		k := keyer(t)
		mustPut(t, cli, k("r/a"), "x")
		mustPut(t, cli, k("r/b"), "x")
		rc := mustPut(t, cli, k("r/c"), "y").Header.Revision
		mustPut(t, cli, k("r0"), "outside")
		for _, tc := range []struct {
			name string
			cmp  clientv3.Cmp
			want bool
		}{
			{"value [a,c) = x", cmp(clientv3.Value(k("r/a")), "=", "x").WithRange(k("r/c")), true},
			{"value prefix = x", cmp(clientv3.Value(k("r/")), "=", "x").WithPrefix(), false},
			{"value prefix != z", cmp(clientv3.Value(k("r/")), "!=", "z").WithPrefix(), true},
			{"value prefix < z", cmp(clientv3.Value(k("r/")), "<", "z").WithPrefix(), true},
			{"value prefix > x", cmp(clientv3.Value(k("r/")), ">", "x").WithPrefix(), false},
			{"version prefix > 0", cmp(clientv3.Version(k("r/")), ">", 0).WithPrefix(), true},
			{"version prefix = 1", cmp(clientv3.Version(k("r/")), "=", 1).WithPrefix(), true},
			{"create prefix < rc", cmp(clientv3.CreateRevision(k("r/")), "<", rc).WithPrefix(), false},
			{"mod prefix < rc+1", cmp(clientv3.ModRevision(k("r/")), "<", rc+1).WithPrefix(), true},
			{"lease prefix = 0", cmp(clientv3.LeaseValue(k("r/")), "=", 0).WithPrefix(), true},
			{"empty range version = 0", cmp(clientv3.Version(k("r/zz")), "=", 0).WithPrefix(), true},
			{"empty range value = empty", cmp(clientv3.Value(k("r/zz")), "=", "").WithPrefix(), false},
			{"empty range create > 0", cmp(clientv3.CreateRevision(k("r/zz")), ">", 0).WithPrefix(), false},
			{"from key version > 0", cmp(clientv3.Version(k("r/")), ">", 0).WithRange("\x00"), true},
		} {
			if got := mustTxn(t, cli, []clientv3.Cmp{tc.cmp}, nil, nil).Succeeded; got != tc.want {
				t.Fatalf("%s: succeeded %v, want %v", tc.name, got, tc.want)
			}
		}
	})

	t.Run("Branches", func(t *testing.T) {
		k := keyer(t)
		mustPut(t, cli, k("flag"), "on")
		ops := func(tag string) []clientv3.Op {
			return []clientv3.Op{clientv3.OpPut(k(tag), tag), clientv3.OpGet(k("flag")), clientv3.OpDelete(k("nothing"))}
		}
		for _, tc := range []struct {
			flag string
			then bool
		}{{"on", true}, {"off", false}} {
			resp := mustTxn(t, cli, []clientv3.Cmp{cmp(clientv3.Value(k("flag")), "=", tc.flag)}, ops("then-"+tc.flag), ops("else-"+tc.flag))
			if resp.Succeeded != tc.then {
				t.Fatalf("flag %s: succeeded %v", tc.flag, resp.Succeeded)
			}
			if len(resp.Responses) != 3 || resp.Responses[0].GetResponsePut() == nil || resp.Responses[1].GetResponseRange() == nil || resp.Responses[2].GetResponseDeleteRange() == nil {
				t.Fatalf("flag %s: responses %v", tc.flag, resp.Responses)
			}
			written, skipped := "then-"+tc.flag, "else-"+tc.flag
			if !tc.then {
				written, skipped = skipped, written
			}
			getOne(t, cli, k(written))
			if g := mustGet(t, cli, k(skipped)); len(g.Kvs) != 0 {
				t.Fatalf("flag %s: the branch not taken wrote %q", tc.flag, skipped)
			}
		}
		// Only the branch taken is checked against the store: the other may hold a put that
		// would fail.
		resp := mustTxn(t, cli, []clientv3.Cmp{cmp(clientv3.Value(k("flag")), "=", "on")},
			[]clientv3.Op{clientv3.OpPut(k("ok"), "1")},
			[]clientv3.Op{clientv3.OpPut(k("bad"), "1", clientv3.WithLease(0x4242)), clientv3.OpPut(k("absent"), "", clientv3.WithIgnoreValue())})
		if !resp.Succeeded {
			t.Fatalf("txn with a failing else branch: not succeeded")
		}
		getOne(t, cli, k("ok"))
	})

	t.Run("Nested", func(t *testing.T) {
		k := keyer(t)
		mustPut(t, cli, k("flag"), "on")
		r0 := currentRev(t, cli)
		inner := clientv3.OpTxn(
			[]clientv3.Cmp{cmp(clientv3.Version(k("x")), "=", 0)}, // x is put by the outer txn, but compares see the state before the txn
			[]clientv3.Op{clientv3.OpPut(k("y"), "inner-then"), clientv3.OpTxn(nil, []clientv3.Op{clientv3.OpPut(k("z"), "deep"), clientv3.OpGet(k("x"))}, nil)},
			[]clientv3.Op{clientv3.OpPut(k("y"), "inner-else")},
		)
		resp := mustTxn(t, cli, []clientv3.Cmp{cmp(clientv3.Value(k("flag")), "=", "on")},
			[]clientv3.Op{clientv3.OpPut(k("x"), "outer"), inner},
			[]clientv3.Op{clientv3.OpPut(k("x"), "outer-else")})
		if !resp.Succeeded || resp.Header.Revision != r0+1 || len(resp.Responses) != 2 {
			t.Fatalf("outer: succeeded %v revision %d (want %d) responses %d", resp.Succeeded, resp.Header.Revision, r0+1, len(resp.Responses))
		}
		in := resp.Responses[1].GetResponseTxn()
		if in == nil || !in.Succeeded || len(in.Responses) != 2 {
			t.Fatalf("inner response: %v", in)
		}
		deep := in.Responses[1].GetResponseTxn()
		if deep == nil || !deep.Succeeded || len(deep.Responses) != 2 {
			t.Fatalf("deep response: %v", deep)
		}
		rr := deep.Responses[1].GetResponseRange()
		if rr == nil || len(rr.Kvs) != 1 || string(rr.Kvs[0].Value) != "outer" || rr.Header.GetRevision() != r0+1 {
			t.Fatalf("get in the deep txn: %v", rr)
		}
		for key, val := range map[string]string{"x": "outer", "y": "inner-then", "z": "deep"} {
			wantKV(t, key, getOne(t, cli, k(key)), k(key), val, r0+1, r0+1, 1)
		}
		// Nested txn in the else branch, itself taking its else branch.
		resp = mustTxn(t, cli, []clientv3.Cmp{cmp(clientv3.Value(k("flag")), "=", "off")},
			[]clientv3.Op{clientv3.OpPut(k("w"), "then")},
			[]clientv3.Op{clientv3.OpTxn([]clientv3.Cmp{cmp(clientv3.Value(k("y")), "=", "nope")},
				[]clientv3.Op{clientv3.OpPut(k("w"), "else-then")},
				[]clientv3.Op{clientv3.OpPut(k("w"), "else-else"), clientv3.OpGet(k("w"))})})
		if resp.Succeeded {
			t.Fatalf("else nesting: succeeded")
		}
		in = resp.Responses[0].GetResponseTxn()
		if in == nil || in.Succeeded || len(in.Responses) != 2 {
			t.Fatalf("else nesting: inner %v", in)
		}
		if rr := in.Responses[1].GetResponseRange(); len(rr.GetKvs()) != 1 || string(rr.Kvs[0].Value) != "else-else" {
			t.Fatalf("else nesting: inner get %v", rr)
		}
		if kv := getOne(t, cli, k("w")); string(kv.Value) != "else-else" {
			t.Fatalf("else nesting wrote %q", kv.Value)
		}
		// A nested txn that only reads: nothing changes.
		r1 := currentRev(t, cli)
		resp = mustTxn(t, cli, nil, []clientv3.Op{clientv3.OpTxn(nil, []clientv3.Op{clientv3.OpGet(k("w"))}, nil)}, nil)
		if resp.Header.Revision != r1 || currentRev(t, cli) != r1 {
			t.Fatalf("read-only nested txn changed the revision %d -> %d", r1, resp.Header.Revision)
		}
	})

	t.Run("ReadYourWrites", func(t *testing.T) {
		k := keyer(t)
		r1 := mustPut(t, cli, k("g"), "old").Header.Revision
		r0 := currentRev(t, cli)
		resp := mustTxn(t, cli, nil, []clientv3.Op{
			clientv3.OpGet(k("g")),
			clientv3.OpDelete(k("missing")),
			clientv3.OpPut(k("g"), "new"),
			clientv3.OpGet(k("g")),
			clientv3.OpDelete(k("missing2")),
			clientv3.OpGet(k("g2")),
			clientv3.OpPut(k("g2"), "fresh"),
			clientv3.OpGet(k("g"), clientv3.WithPrefix()),
		}, nil)
		if resp.Header.Revision != r0+1 {
			t.Fatalf("txn revision %d, want %d", resp.Header.Revision, r0+1)
		}
		get0 := resp.Responses[0].GetResponseRange()
		wantKV(t, "get before put", get0.Kvs[0], k("g"), "old", r1, r1, 1)
		// etcd reports the revision as of each op: before the first change the old one.
		if get0.Header.Revision != r0 {
			t.Fatalf("get before put: header revision %d, want %d", get0.Header.Revision, r0)
		}
		if d := resp.Responses[1].GetResponseDeleteRange(); d.Deleted != 0 || d.Header.Revision != r0 {
			t.Fatalf("no-op delete before any change: deleted %d revision %d, want 0 %d", d.Deleted, d.Header.Revision, r0)
		}
		if p := resp.Responses[2].GetResponsePut(); p.Header.Revision != r0+1 {
			t.Fatalf("put in txn: header revision %d, want %d", p.Header.Revision, r0+1)
		}
		get3 := resp.Responses[3].GetResponseRange()
		wantKV(t, "get after put", get3.Kvs[0], k("g"), "new", r1, r0+1, 2)
		if get3.Header.Revision != r0+1 {
			t.Fatalf("get after put: header revision %d, want %d", get3.Header.Revision, r0+1)
		}
		if d := resp.Responses[4].GetResponseDeleteRange(); d.Deleted != 0 || d.Header.Revision != r0+1 {
			t.Fatalf("no-op delete after a change: deleted %d revision %d, want 0 %d", d.Deleted, d.Header.Revision, r0+1)
		}
		if g := resp.Responses[5].GetResponseRange(); len(g.Kvs) != 0 {
			t.Fatalf("get before create: %v", g.Kvs)
		}
		all := resp.Responses[7].GetResponseRange()
		wantKeys(t, "prefix get at the end", all.Kvs, k("g"), k("g2"))
		wantKV(t, "g2 in txn", all.Kvs[1], k("g2"), "fresh", r0+1, r0+1, 1)

		// A delete then a get in one txn.
		resp = mustTxn(t, cli, nil, []clientv3.Op{clientv3.OpDelete(k("g"), clientv3.WithPrevKV()), clientv3.OpGet(k("g"))}, nil)
		if d := resp.Responses[0].GetResponseDeleteRange(); d.Deleted != 1 || len(d.PrevKvs) != 1 || string(d.PrevKvs[0].Value) != "new" {
			t.Fatalf("delete in txn: %v", d)
		}
		if g := resp.Responses[1].GetResponseRange(); len(g.Kvs) != 0 || g.Count != 0 {
			t.Fatalf("get after delete in txn: %v", g.Kvs)
		}
	})

	t.Run("OneRevision", func(t *testing.T) {
		k := keyer(t)
		mustPut(t, cli, k("c"), "c")
		mustPut(t, cli, k("d"), "d")
		r0 := currentRev(t, cli)
		resp := mustTxn(t, cli, nil, []clientv3.Op{
			clientv3.OpPut(k("a"), "a"),
			clientv3.OpPut(k("b"), "b", clientv3.WithPrevKV()),
			clientv3.OpDelete(k("c")),
			clientv3.OpDelete(k("d"), clientv3.WithPrevKV()),
			clientv3.OpPut(k("e"), "e"),
		}, nil)
		if resp.Header.Revision != r0+1 {
			t.Fatalf("txn revision %d, want %d", resp.Header.Revision, r0+1)
		}
		for _, op := range resp.Responses {
			var h *pb.ResponseHeader
			switch {
			case op.GetResponsePut() != nil:
				h = op.GetResponsePut().Header
			case op.GetResponseDeleteRange() != nil:
				h = op.GetResponseDeleteRange().Header
			}
			if h.GetRevision() != r0+1 {
				t.Fatalf("op response revision %d, want %d", h.GetRevision(), r0+1)
			}
		}
		g := mustGet(t, cli, prefix(t), clientv3.WithPrefix())
		wantKeys(t, "after txn", g.Kvs, k("a"), k("b"), k("e"))
		for _, kv := range g.Kvs {
			wantKV(t, "txn write", kv, string(kv.Key), string(kv.Key[len(kv.Key)-1:]), r0+1, r0+1, 1)
		}
		if p := mustPut(t, cli, k("f"), "f"); p.Header.Revision != r0+2 {
			t.Fatalf("put after txn: revision %d, want %d", p.Header.Revision, r0+2)
		}
		// Everything the txn wrote is visible together at its revision and not before.
		if g := mustGet(t, cli, prefix(t), clientv3.WithPrefix(), clientv3.WithRev(r0)); len(g.Kvs) != 2 {
			t.Fatalf("before the txn: %q", keysOf(g.Kvs))
		}
	})

	t.Run("ReadOnlyNoRevisionBump", func(t *testing.T) {
		k := keyer(t)
		mustPut(t, cli, k("a"), "a")
		r0 := currentRev(t, cli)
		for _, tc := range []struct {
			name       string
			cmps       []clientv3.Cmp
			then, els  []clientv3.Op
			wantSucced bool
			// serializable: etcd serves the txn from the local state without a read barrier
			// (an empty txn counts as serializable), so a follower may report an older revision.
			serializable bool
		}{
			{"empty txn", nil, nil, nil, true, true},
			{"get only", nil, []clientv3.Op{clientv3.OpGet(k("a")), clientv3.OpGet(prefix(t), clientv3.WithPrefix())}, nil, true, false},
			{"serializable get", nil, []clientv3.Op{clientv3.OpGet(k("a"), clientv3.WithSerializable())}, nil, true, true},
			{"false compare, writes only in then", []clientv3.Cmp{cmp(clientv3.Value(k("a")), "=", "b")}, []clientv3.Op{clientv3.OpPut(k("x"), "x")}, []clientv3.Op{clientv3.OpGet(k("a"))}, false, false},
			{"true compare, writes only in else", []clientv3.Cmp{cmp(clientv3.Value(k("a")), "=", "a")}, []clientv3.Op{clientv3.OpGet(k("a"))}, []clientv3.Op{clientv3.OpDelete(k("a"))}, true, false},
			{"delete of nothing", nil, []clientv3.Op{clientv3.OpDelete(k("nothing"))}, nil, true, false},
		} {
			resp := mustTxn(t, cli, tc.cmps, tc.then, tc.els)
			if resp.Succeeded != tc.wantSucced || resp.Header.Revision > r0 || (!tc.serializable && resp.Header.Revision != r0) {
				t.Fatalf("%s: succeeded %v revision %d, want %v %d", tc.name, resp.Succeeded, resp.Header.Revision, tc.wantSucced, r0)
			}
		}
		if p := mustPut(t, cli, k("b"), "b"); p.Header.Revision != r0+1 {
			t.Fatalf("put after read-only txns: revision %d, want %d", p.Header.Revision, r0+1)
		}
	})

	t.Run("DuplicateKey", func(t *testing.T) {
		k := keyer(t)
		mustPut(t, cli, k("k"), "0")
		r0 := currentRev(t, cli)
		put := func(s string) clientv3.Op { return clientv3.OpPut(k(s), "v") }
		del := func(s string) clientv3.Op { return clientv3.OpDelete(k(s)) }
		delPrefix := func(s string) clientv3.Op { return clientv3.OpDelete(k(s), clientv3.WithPrefix()) }
		nested := func(then, els []clientv3.Op) clientv3.Op { return clientv3.OpTxn(nil, then, els) }
		ops := func(o ...clientv3.Op) []clientv3.Op { return o }
		always := []clientv3.Cmp{cmp(clientv3.Version(k("k")), ">", 0)}
		for _, tc := range []struct {
			name      string
			then, els []clientv3.Op
			dup       bool
		}{
			{"two puts", ops(put("k"), put("k")), nil, true},
			{"two puts in the branch not taken", nil, ops(put("k"), put("k")), true},
			{"put in a deleted key", ops(del("k"), put("k")), nil, true},
			{"deleted after put", ops(put("k"), del("k")), nil, true},
			{"put in a deleted prefix", ops(delPrefix("p/"), put("p/x")), nil, true},
			{"put in a deleted range", ops(clientv3.OpDelete(k("a"), clientv3.WithRange(k("c"))), put("b")), nil, true},
			{"put at a deleted range's end", ops(clientv3.OpDelete(k("a"), clientv3.WithRange(k("c"))), put("c")), nil, false},
			{"put and nested put", ops(put("k"), nested(ops(put("k")), nil)), nil, true},
			{"two nested puts", ops(nested(ops(put("k")), nil), nested(ops(put("k")), nil)), nil, true},
			{"nested then and else", ops(nested(ops(put("k")), ops(put("k")))), nil, false},
			{"nested else and put", ops(nested(nil, ops(put("k"))), put("k")), nil, true},
			{"deleted prefix and nested put", ops(delPrefix("p/"), nested(ops(put("p/x")), nil)), nil, true},
			{"nested deleted prefix and put", ops(nested(ops(delPrefix("p/")), nil), put("p/x")), nil, true},
			{"then and else of the outer txn", ops(put("k")), ops(put("k")), false},
			{"two deletes", ops(del("k"), del("k")), nil, false},
			{"overlapping deletes", ops(delPrefix("p/"), del("p/x")), nil, false},
			{"get and put", ops(clientv3.OpGet(k("k")), put("k")), nil, false},
			{"distinct keys", ops(put("k"), put("k2"), nested(ops(put("k3")), ops(put("k4")))), nil, false},
		} {
			_, err := cli.Txn(ctx(t)).If(always...).Then(tc.then...).Else(tc.els...).Commit()
			if tc.dup {
				wantErr(t, tc.name, err, rpctypes.ErrDuplicateKey)
				if rpctypes.ErrorDesc(err) != "etcdserver: duplicate key given in txn request" {
					t.Fatalf("%s: error text %q", tc.name, rpctypes.ErrorDesc(err))
				}
			} else if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if tc.dup {
				if rev := currentRev(t, cli); rev != r0 {
					t.Fatalf("%s: rejected txn changed the revision %d -> %d", tc.name, r0, rev)
				}
			} else {
				r0 = currentRev(t, cli)
			}
		}
	})

	t.Run("TooManyOps", func(t *testing.T) {
		k := keyer(t)
		puts := func(tag string, n int) []clientv3.Op {
			var ops []clientv3.Op
			for i := 0; i < n; i++ {
				ops = append(ops, clientv3.OpPut(k(fmt.Sprintf("%s%03d", tag, i)), "v"))
			}
			return ops
		}
		cmps := func(n int) []clientv3.Cmp {
			var out []clientv3.Cmp
			for i := 0; i < n; i++ {
				out = append(out, cmp(clientv3.Version(k(fmt.Sprintf("c%03d", i))), "=", 0))
			}
			return out
		}
		r0 := currentRev(t, cli)
		resp := mustTxn(t, cli, cmps(128), puts("then", 128), puts("else", 128))
		if !resp.Succeeded || len(resp.Responses) != 128 || resp.Header.Revision != r0+1 {
			t.Fatalf("128 ops: succeeded %v responses %d revision %d", resp.Succeeded, len(resp.Responses), resp.Header.Revision)
		}
		if g := mustGet(t, cli, k("then"), clientv3.WithPrefix(), clientv3.WithCountOnly()); g.Count != 128 {
			t.Fatalf("128 puts: %d keys", g.Count)
		}
		wantErr(t, "129 then ops", txnErr(t, nil, puts("x", 129), nil), rpctypes.ErrTooManyOps)
		wantErr(t, "129 else ops", txnErr(t, nil, nil, puts("x", 129)), rpctypes.ErrTooManyOps)
		wantErr(t, "129 compares", txnErr(t, cmps(129), nil, nil), rpctypes.ErrTooManyOps)
		// A nested txn may use what its parent left: 128 - max(len(compare), len(then), len(else)).
		outer := append(puts("o", 99), clientv3.OpTxn(nil, puts("n", 28), nil)) // 100 ops, inner limit 28
		if _, err := cli.Txn(ctx(t)).Then(outer...).Commit(); err != nil {
			t.Fatalf("nested txn with 28 ops under 100: %v", err)
		}
		outer = append(puts("p", 99), clientv3.OpTxn(nil, puts("q", 29), nil))
		wantErr(t, "nested txn with 29 ops under 100", txnErr(t, nil, outer, nil), rpctypes.ErrTooManyOps)
		if rev := currentRev(t, cli); rev != r0+2 {
			t.Fatalf("revision %d after one rejected and two accepted txns, want %d", rev, r0+2)
		}
	})

	t.Run("FailedChecksChangeNothing", func(t *testing.T) {
		k := keyer(t)
		mustPut(t, cli, k("a"), "0")
		r0 := currentRev(t, cli)
		for _, tc := range []struct {
			name string
			ops  []clientv3.Op
			want error
		}{
			{"unknown lease", []clientv3.Op{clientv3.OpPut(k("a"), "1"), clientv3.OpPut(k("b"), "1", clientv3.WithLease(0x999))}, rpctypes.ErrLeaseNotFound},
			{"ignore_value on a missing key", []clientv3.Op{clientv3.OpPut(k("a"), "1"), clientv3.OpPut(k("missing"), "", clientv3.WithIgnoreValue())}, rpctypes.ErrKeyNotFound},
			{"ignore_lease on a missing key", []clientv3.Op{clientv3.OpDelete(k("a")), clientv3.OpPut(k("missing"), "x", clientv3.WithIgnoreLease())}, rpctypes.ErrKeyNotFound},
			{"future revision get", []clientv3.Op{clientv3.OpPut(k("a"), "1"), clientv3.OpGet(k("a"), clientv3.WithRev(r0+100))}, rpctypes.ErrFutureRev},
			{"nested unknown lease", []clientv3.Op{clientv3.OpPut(k("a"), "1"), clientv3.OpTxn(nil, []clientv3.Op{clientv3.OpPut(k("c"), "1", clientv3.WithLease(0x999))}, nil)}, rpctypes.ErrLeaseNotFound},
			{"ignore_value with a value", []clientv3.Op{clientv3.OpPut(k("a"), "1", clientv3.WithIgnoreValue())}, rpctypes.ErrValueProvided},
			{"empty key put", []clientv3.Op{clientv3.OpPut(k("a"), "1"), clientv3.OpPut("", "1")}, rpctypes.ErrEmptyKey},
			{"empty key get", []clientv3.Op{clientv3.OpPut(k("a"), "1"), clientv3.OpGet("")}, rpctypes.ErrEmptyKey},
		} {
			wantErr(t, tc.name, txnErr(t, nil, tc.ops, nil), tc.want)
			if g := mustGet(t, cli, prefix(t), clientv3.WithPrefix()); g.Header.Revision != r0 || len(g.Kvs) != 1 || string(g.Kvs[0].Value) != "0" {
				t.Fatalf("%s: the failed txn changed the store: revision %d (was %d), kvs %v", tc.name, g.Header.Revision, r0, g.Kvs)
			}
		}
		// The same (write) txns fail through the raw API with etcd's gRPC errors too.
		_, err := rawKV(cli).Txn(ctx(t), &pb.TxnRequest{Success: []*pb.RequestOp{{}}})
		wantErr(t, "empty request op", err, rpctypes.ErrGRPCKeyNotFound)
	})
}
