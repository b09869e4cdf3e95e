package server_test

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ordo-db/ordo/internal/testcluster"
)

func testRange(t *testing.T, c *testcluster.Cluster) {
	cli := c.Client()

	// Four keys a..d under one prefix, plus a neighbour key outside it.
	basic := func(t *testing.T) (k func(string) string, revs map[string]int64) {
		k = keyer(t)
		revs = map[string]int64{}
		for _, s := range []string{"a", "b", "c", "d"} {
			revs[s] = mustPut(t, cli, k(s), "val-"+s).Header.Revision
		}
		mustPut(t, cli, prefix(t)[:len(prefix(t))-1]+"0", "outside") // "<name>0" sorts after "<name>/"
		return k, revs
	}

	t.Run("SingleKey", func(t *testing.T) {
		k, revs := basic(t)
		g := mustGet(t, cli, k("b"))
		if g.Count != 1 || g.More {
			t.Fatalf("count %d more %v", g.Count, g.More)
		}
		wantKV(t, "single", g.Kvs[0], k("b"), "val-b", revs["b"], revs["b"], 1)
		g = mustGet(t, cli, k("nope"))
		if len(g.Kvs) != 0 || g.Count != 0 || g.More {
			t.Fatalf("missing key: kvs %q count %d more %v", keysOf(g.Kvs), g.Count, g.More)
		}
		if rev := currentRev(t, cli); g.Header.Revision != rev {
			t.Fatalf("header revision %d, current %d", g.Header.Revision, rev)
		}
	})

	t.Run("Interval", func(t *testing.T) {
		k, _ := basic(t)
		g := mustGet(t, cli, k("a"), clientv3.WithRange(k("c")))
		wantKeys(t, "[a,c)", g.Kvs, k("a"), k("b"))
		if g.Count != 2 {
			t.Fatalf("[a,c) count %d", g.Count)
		}
		wantKeys(t, "[b,b\\x00)", mustGet(t, cli, k("b"), clientv3.WithRange(k("b\x00"))).Kvs, k("b"))
		// An empty or inverted interval holds nothing.
		for _, end := range []string{k("a"), k("0")} {
			g := mustGet(t, cli, k("a"), clientv3.WithRange(end))
			if len(g.Kvs) != 0 || g.Count != 0 {
				t.Fatalf("[a,%q): kvs %q count %d", end, keysOf(g.Kvs), g.Count)
			}
		}
	})

	t.Run("Prefix", func(t *testing.T) {
		k, _ := basic(t)
		g := mustGet(t, cli, prefix(t), clientv3.WithPrefix())
		wantKeys(t, "prefix", g.Kvs, k("a"), k("b"), k("c"), k("d"))
		if g.Count != 4 || g.More {
			t.Fatalf("prefix: count %d more %v", g.Count, g.More)
		}
		for _, kv := range g.Kvs {
			if string(kv.Value) != "val-"+string(kv.Key[len(kv.Key)-1:]) {
				t.Fatalf("prefix: %q has value %q", kv.Key, kv.Value)
			}
		}
	})

	t.Run("FromKey", func(t *testing.T) {
		k, _ := basic(t)
		rev := currentRev(t, cli)
		g := mustGet(t, cli, k("c"), clientv3.WithFromKey(), clientv3.WithRev(rev))
		all := mustGet(t, cli, "\x00", clientv3.WithFromKey(), clientv3.WithRev(rev))
		var want []string
		for _, kv := range all.Kvs {
			if bytes.Compare(kv.Key, []byte(k("c"))) >= 0 {
				want = append(want, string(kv.Key))
			}
		}
		wantKeys(t, "from c", g.Kvs, want...)
		if len(want) < 3 || want[0] != k("c") || want[1] != k("d") {
			t.Fatalf("from c: %q does not start with c, d and the outside key", want)
		}
		if g.Count != int64(len(want)) {
			t.Fatalf("from c: count %d, want %d", g.Count, len(want))
		}
		if all.Count != int64(len(all.Kvs)) {
			t.Fatalf("all keys: count %d for %d kvs", all.Count, len(all.Kvs))
		}
		if !slices.IsSorted(keysOf(all.Kvs)) {
			t.Fatalf("all keys are not in key order")
		}
	})

	t.Run("BinaryKeyOrder", func(t *testing.T) {
		k := keyer(t)
		keys := []string{k("a"), k("a\x00"), k("a\x00\x00"), k("a\x00\x01"), k("a\x01"), k("a\xff"), k("a\xff\xff"), k("b")}
		for i := len(keys) - 1; i >= 0; i-- {
			mustPut(t, cli, keys[i], keys[i])
		}
		wantKeys(t, "prefix", mustGet(t, cli, prefix(t), clientv3.WithPrefix()).Kvs, keys...)
		wantKeys(t, "single a", mustGet(t, cli, k("a")).Kvs, k("a"))
		wantKeys(t, "single a\\x00", mustGet(t, cli, k("a\x00")).Kvs, k("a\x00"))
		wantKeys(t, "[a, a\\x01)", mustGet(t, cli, k("a"), clientv3.WithRange(k("a\x01"))).Kvs, keys[:4]...)
		wantKeys(t, "[a\\x00, a\\x00\\x01)", mustGet(t, cli, k("a\x00"), clientv3.WithRange(k("a\x00\x01"))).Kvs, keys[1:3]...)
		wantKeys(t, "prefix a\\xff", mustGet(t, cli, k("a\xff"), clientv3.WithPrefix()).Kvs, keys[5:7]...)
		wantKeys(t, "prefix a", mustGet(t, cli, k("a"), clientv3.WithPrefix()).Kvs, keys[:7]...)
		for _, kv := range mustGet(t, cli, prefix(t), clientv3.WithPrefix()).Kvs {
			if !bytes.Equal(kv.Key, kv.Value) {
				t.Fatalf("key %q has value %q", kv.Key, kv.Value)
			}
		}
	})

	t.Run("Limit", func(t *testing.T) {
		k, _ := basic(t)
		for _, tc := range []struct {
			limit int64
			keys  []string
			more  bool
		}{
			{1, []string{"a"}, true},
			{2, []string{"a", "b"}, true},
			{3, []string{"a", "b", "c"}, true},
			{4, []string{"a", "b", "c", "d"}, false},
			{5, []string{"a", "b", "c", "d"}, false},
			{0, []string{"a", "b", "c", "d"}, false},
			{-1, []string{"a", "b", "c", "d"}, false}, // etcd treats a negative limit as none
		} {
			g := mustGet(t, cli, prefix(t), clientv3.WithPrefix(), clientv3.WithLimit(tc.limit))
			var want []string
			for _, s := range tc.keys {
				want = append(want, k(s))
			}
			wantKeys(t, "limit", g.Kvs, want...)
			if g.More != tc.more || g.Count != 4 {
				t.Fatalf("limit %d: more %v count %d, want %v 4", tc.limit, g.More, g.Count, tc.more)
			}
		}
		// A single key with limit 1 has no more.
		if g := mustGet(t, cli, k("a"), clientv3.WithLimit(1)); g.More || g.Count != 1 {
			t.Fatalf("single key limit 1: more %v count %d", g.More, g.Count)
		}
		// Limit with count only: the count is unaffected.
		if g := mustGet(t, cli, prefix(t), clientv3.WithPrefix(), clientv3.WithLimit(1), clientv3.WithCountOnly()); g.Count != 4 || len(g.Kvs) != 0 {
			t.Fatalf("count only with limit: count %d kvs %d", g.Count, len(g.Kvs))
		}
	})

	t.Run("Revision", func(t *testing.T) {
		k := keyer(t)
		r1 := mustPut(t, cli, k("x"), "x1").Header.Revision
		r2 := mustPut(t, cli, k("y"), "y1").Header.Revision
		r3 := mustPut(t, cli, k("x"), "x2").Header.Revision
		r4 := mustDelete(t, cli, k("y")).Header.Revision
		r5 := mustPut(t, cli, k("y"), "y2").Header.Revision
		cur := currentRev(t, cli)

		type kvAt struct {
			val                  string
			create, mod, version int64
		}
		for _, tc := range []struct {
			rev  int64
			want map[string]kvAt
		}{
			{r1 - 1, map[string]kvAt{}},
			{r1, map[string]kvAt{"x": {"x1", r1, r1, 1}}},
			{r2, map[string]kvAt{"x": {"x1", r1, r1, 1}, "y": {"y1", r2, r2, 1}}},
			{r3, map[string]kvAt{"x": {"x2", r1, r3, 2}, "y": {"y1", r2, r2, 1}}},
			{r4, map[string]kvAt{"x": {"x2", r1, r3, 2}}},
			{r5, map[string]kvAt{"x": {"x2", r1, r3, 2}, "y": {"y2", r5, r5, 1}}},
			{0, map[string]kvAt{"x": {"x2", r1, r3, 2}, "y": {"y2", r5, r5, 1}}},
		} {
			g := mustGet(t, cli, prefix(t), clientv3.WithPrefix(), clientv3.WithRev(tc.rev))
			if g.Header.Revision != cur {
				t.Fatalf("rev %d: header revision %d, want the current revision %d", tc.rev, g.Header.Revision, cur)
			}
			if len(g.Kvs) != len(tc.want) || g.Count != int64(len(tc.want)) {
				t.Fatalf("rev %d: got %q (count %d), want %d keys", tc.rev, keysOf(g.Kvs), g.Count, len(tc.want))
			}
			for _, kv := range g.Kvs {
				w, ok := tc.want[string(kv.Key[len(kv.Key)-1:])]
				if !ok {
					t.Fatalf("rev %d: unexpected key %q", tc.rev, kv.Key)
				}
				wantKV(t, "at rev", kv, string(kv.Key), w.val, w.create, w.mod, w.version)
			}
			// The single-key read agrees.
			gx := mustGet(t, cli, k("x"), clientv3.WithRev(tc.rev))
			if w, ok := tc.want["x"]; ok {
				wantKV(t, "x at rev", gx.Kvs[0], k("x"), w.val, w.create, w.mod, w.version)
			} else if len(gx.Kvs) != 0 {
				t.Fatalf("rev %d: x exists: %v", tc.rev, gx.Kvs)
			}
		}
	})

	t.Run("HistoryModel", func(t *testing.T) {
		// Random puts and deletes over a few keys, checked at every revision against a model:
		// keys with many versions, keys created after a revision, deleted and recreated keys.
		k := keyer(t)
		type kvAt struct {
			val                  string
			create, mod, version int64
		}
		state := map[string]kvAt{}
		history := map[int64]map[string]kvAt{}
		names := []string{"a", "b", "c", "d", "e"}
		start := currentRev(t, cli)
		history[start] = map[string]kvAt{}
		rng := uint32(7)
		next := func(n uint32) uint32 { rng = rng*1103515245 + 12345; return (rng >> 16) % n }
		for i := 0; i < 120; i++ {
			name := names[next(uint32(len(names)))]
			var rev int64
			if next(5) == 0 {
				d := mustDelete(t, cli, k(name))
				if d.Deleted == 0 {
					continue
				}
				rev = d.Header.Revision
				delete(state, name)
			} else {
				val := fmt.Sprintf("%s-%d", name, i)
				rev = mustPut(t, cli, k(name), val).Header.Revision
				old, ok := state[name]
				if !ok {
					old = kvAt{create: rev}
				}
				state[name] = kvAt{val, old.create, rev, old.version + 1}
			}
			history[rev] = maps.Clone(state)
		}
		end := currentRev(t, cli)
		want := map[string]kvAt{}
		for rev := start; rev <= end; rev++ {
			if h, ok := history[rev]; ok {
				want = h
			}
			g := mustGet(t, cli, prefix(t), clientv3.WithPrefix(), clientv3.WithRev(rev))
			var wantNames []string
			for _, n := range names {
				if _, ok := want[n]; ok {
					wantNames = append(wantNames, k(n))
				}
			}
			wantKeys(t, fmt.Sprintf("prefix at %d", rev), g.Kvs, wantNames...)
			if g.Count != int64(len(wantNames)) {
				t.Fatalf("prefix at %d: count %d, want %d", rev, g.Count, len(wantNames))
			}
			for _, kv := range g.Kvs {
				w := want[string(kv.Key[len(kv.Key)-1:])]
				wantKV(t, fmt.Sprintf("at %d", rev), kv, string(kv.Key), w.val, w.create, w.mod, w.version)
			}
			for _, n := range names {
				g := mustGet(t, cli, k(n), clientv3.WithRev(rev), clientv3.WithKeysOnly())
				w, ok := want[n]
				if ok != (len(g.Kvs) == 1) || len(g.Kvs) > 1 {
					t.Fatalf("%s at %d: got %d kvs, want exists=%v", n, rev, len(g.Kvs), ok)
				}
				if ok {
					wantKV(t, fmt.Sprintf("%s at %d (keys only)", n, rev), g.Kvs[0], k(n), "", w.create, w.mod, w.version)
				}
			}
			if len(wantNames) > 0 {
				g = mustGet(t, cli, prefix(t), clientv3.WithPrefix(), clientv3.WithRev(rev), clientv3.WithLimit(1))
				wantKeys(t, fmt.Sprintf("limit 1 at %d", rev), g.Kvs, wantNames[0])
				if g.More != (len(wantNames) > 1) || g.Count != int64(len(wantNames)) {
					t.Fatalf("limit 1 at %d: more %v count %d, want %v %d", rev, g.More, g.Count, len(wantNames) > 1, len(wantNames))
				}
			}
		}
	})

	t.Run("NegativeRevision", func(t *testing.T) {
		// etcd serves a range at a revision <= 0 at the current revision.
		k, _ := basic(t)
		for _, rev := range []int64{-1, -1000} {
			g, err := cli.Get(ctx(t), k("a"), clientv3.WithRev(rev))
			if err != nil {
				t.Fatalf("get at revision %d: %v (etcd reads the current revision)", rev, err)
			}
			if len(g.Kvs) != 1 || string(g.Kvs[0].Value) != "val-a" {
				t.Fatalf("get at revision %d: %v", rev, g.Kvs)
			}
		}
	})

	t.Run("Sort", func(t *testing.T) {
		k := keyer(t)
		// Puts chosen so that every target orders the four keys differently:
		//   create: b d a c   mod: d b a c   version: d c b a   value: c a d b   key: a b c d
		vals := map[string]string{"a": "v2", "b": "v4", "c": "v1", "d": "v3"}
		for _, s := range []string{"b", "d", "a", "c", "b", "a", "a", "b", "a", "c"} {
			mustPut(t, cli, k(s), vals[s])
		}
		orders := map[clientv3.SortTarget]string{
			clientv3.SortByKey:            "abcd",
			clientv3.SortByCreateRevision: "bdac",
			clientv3.SortByModRevision:    "dbac",
			clientv3.SortByVersion:        "dcba",
			clientv3.SortByValue:          "cadb",
		}
		names := map[clientv3.SortTarget]string{clientv3.SortByKey: "KEY", clientv3.SortByCreateRevision: "CREATE", clientv3.SortByModRevision: "MOD", clientv3.SortByVersion: "VERSION", clientv3.SortByValue: "VALUE"}
		keysFor := func(order string) []string {
			var out []string
			for _, r := range order {
				out = append(out, k(string(r)))
			}
			return out
		}
		for target, asc := range orders {
			desc := []byte(asc)
			slices.Reverse(desc)
			for _, tc := range []struct {
				order clientv3.SortOrder
				want  string
			}{
				{clientv3.SortAscend, asc},
				{clientv3.SortDescend, string(desc)},
				{clientv3.SortNone, asc}, // NONE with a target other than KEY sorts ascending; by KEY it is key order.
			} {
				g := mustGet(t, cli, prefix(t), clientv3.WithPrefix(), clientv3.WithSort(target, tc.order))
				wantKeys(t, "sort by "+names[target]+" "+[]string{"NONE", "ASCEND", "DESCEND"}[tc.order], g.Kvs, keysFor(tc.want)...)
				if g.Count != 4 || g.More {
					t.Fatalf("sort by %s: count %d more %v", names[target], g.Count, g.More)
				}
				// Limit applies after sorting the whole range. etcd quirk: with order NONE the
				// ordering counts as default, so etcd reads limit+1 keys in key order (a, b, c)
				// first and sorts only those.
				wantLimited := tc.want[:2]
				if tc.order == clientv3.SortNone {
					wantLimited = strings.Map(func(r rune) rune {
						if r == 'd' {
							return -1
						}
						return r
					}, tc.want)[:2]
				}
				g = mustGet(t, cli, prefix(t), clientv3.WithPrefix(), clientv3.WithSort(target, tc.order), clientv3.WithLimit(2))
				wantKeys(t, "sort by "+names[target]+" "+[]string{"NONE", "ASCEND", "DESCEND"}[tc.order]+" with limit 2", g.Kvs, keysFor(wantLimited)...)
				if g.Count != 4 || !g.More {
					t.Fatalf("sort by %s limit 2: count %d more %v", names[target], g.Count, g.More)
				}
			}
		}
		// KEY ASCEND explicitly (clientv3 rewrites it to NONE), through the raw API.
		resp, err := rawKV(cli).Range(ctx(t), &pb.RangeRequest{Key: []byte(prefix(t)), RangeEnd: []byte(clientv3.GetPrefixRangeEnd(prefix(t))),
			SortTarget: pb.RangeRequest_KEY, SortOrder: pb.RangeRequest_ASCEND, Limit: 3})
		if err != nil {
			t.Fatalf("raw range: %v", err)
		}
		wantKeys(t, "raw KEY ASCEND limit 3", resp.Kvs, keysFor("abc")...)
		if !resp.More || resp.Count != 4 {
			t.Fatalf("raw KEY ASCEND: more %v count %d", resp.More, resp.Count)
		}
		// Invalid sort enums.
		_, err = rawKV(cli).Range(ctx(t), &pb.RangeRequest{Key: []byte(k("a")), SortOrder: 7})
		wantErr(t, "invalid sort order", err, rpctypes.ErrGRPCInvalidSortOption)
		_, err = rawKV(cli).Range(ctx(t), &pb.RangeRequest{Key: []byte(k("a")), SortTarget: 9, SortOrder: pb.RangeRequest_ASCEND})
		wantErr(t, "invalid sort target", err, rpctypes.ErrGRPCInvalidSortOption)
	})

	t.Run("KeysOnlyAndCountOnly", func(t *testing.T) {
		k, revs := basic(t)
		g := mustGet(t, cli, prefix(t), clientv3.WithPrefix(), clientv3.WithKeysOnly())
		wantKeys(t, "keys only", g.Kvs, k("a"), k("b"), k("c"), k("d"))
		for _, kv := range g.Kvs {
			s := string(kv.Key[len(kv.Key)-1:])
			wantKV(t, "keys only", kv, string(kv.Key), "", revs[s], revs[s], 1)
		}
		if g.Count != 4 {
			t.Fatalf("keys only: count %d", g.Count)
		}
		g = mustGet(t, cli, prefix(t), clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithSort(clientv3.SortByValue, clientv3.SortDescend))
		wantKeys(t, "keys only sorted by value", g.Kvs, k("d"), k("c"), k("b"), k("a"))
		for _, kv := range g.Kvs {
			if len(kv.Value) != 0 {
				t.Fatalf("keys only sorted by value: %q has value %q", kv.Key, kv.Value)
			}
		}
		g = mustGet(t, cli, prefix(t), clientv3.WithPrefix(), clientv3.WithCountOnly())
		if g.Count != 4 || len(g.Kvs) != 0 || g.More {
			t.Fatalf("count only: count %d kvs %d more %v", g.Count, len(g.Kvs), g.More)
		}
		g = mustGet(t, cli, k("b"), clientv3.WithCountOnly(), clientv3.WithRev(revs["a"]))
		if g.Count != 0 {
			t.Fatalf("count only of b before b existed: %d", g.Count)
		}
	})

	t.Run("RevisionFilters", func(t *testing.T) {
		k, revs := basic(t)
		ra, rb, rc, rd := revs["a"], revs["b"], revs["c"], revs["d"]
		mustPut(t, cli, k("a"), "val-a2") // a: create ra, mod > rd
		ra2 := currentRev(t, cli)
		for _, tc := range []struct {
			name string
			opts []clientv3.OpOption
			want string
		}{
			{"min mod rb", []clientv3.OpOption{clientv3.WithMinModRev(rb)}, "abcd"},
			{"min mod rc", []clientv3.OpOption{clientv3.WithMinModRev(rc)}, "acd"},
			{"min mod ra2", []clientv3.OpOption{clientv3.WithMinModRev(ra2)}, "a"},
			{"max mod rc", []clientv3.OpOption{clientv3.WithMaxModRev(rc)}, "bc"},
			{"max mod rb", []clientv3.OpOption{clientv3.WithMaxModRev(rb)}, "b"},
			{"min create rb", []clientv3.OpOption{clientv3.WithMinCreateRev(rb)}, "bcd"},
			{"max create rb", []clientv3.OpOption{clientv3.WithMaxCreateRev(rb)}, "ab"},
			{"max create ra", []clientv3.OpOption{clientv3.WithMaxCreateRev(ra)}, "a"},
			{"create [rb,rc]", []clientv3.OpOption{clientv3.WithMinCreateRev(rb), clientv3.WithMaxCreateRev(rc)}, "bc"},
			{"mod [rc,rd]", []clientv3.OpOption{clientv3.WithMinModRev(rc), clientv3.WithMaxModRev(rd)}, "cd"},
			{"min mod beyond", []clientv3.OpOption{clientv3.WithMinModRev(ra2 + 1)}, ""},
		} {
			g := mustGet(t, cli, prefix(t), append([]clientv3.OpOption{clientv3.WithPrefix()}, tc.opts...)...)
			var want []string
			for _, r := range tc.want {
				want = append(want, k(string(r)))
			}
			wantKeys(t, tc.name, g.Kvs, want...)
			// etcd counts the whole range, before filtering.
			if g.Count != 4 || g.More {
				t.Fatalf("%s: count %d more %v, want 4 false", tc.name, g.Count, g.More)
			}
		}
		// Filters apply before limit.
		g := mustGet(t, cli, prefix(t), clientv3.WithPrefix(), clientv3.WithMinModRev(rc), clientv3.WithLimit(2))
		wantKeys(t, "min mod rc limit 2", g.Kvs, k("a"), k("c"))
		if !g.More || g.Count != 4 {
			t.Fatalf("min mod rc limit 2: more %v count %d", g.More, g.Count)
		}
		g = mustGet(t, cli, prefix(t), clientv3.WithPrefix(), clientv3.WithMinModRev(rc), clientv3.WithLimit(3))
		wantKeys(t, "min mod rc limit 3", g.Kvs, k("a"), k("c"), k("d"))
		if g.More {
			t.Fatalf("min mod rc limit 3: more")
		}
	})

	t.Run("Serializable", func(t *testing.T) {
		k := keyer(t)
		for i, m := range c.Members {
			mc := m.Client()
			p := mustPut(t, mc, k("s"), string(rune('a'+i)))
			// The member that served the put applied it before answering.
			g := mustGet(t, mc, k("s"), clientv3.WithSerializable())
			if len(g.Kvs) != 1 || g.Kvs[0].ModRevision != p.Header.Revision || g.Header.Revision < p.Header.Revision {
				t.Fatalf("member %d: serializable read after own put at %d: %v (header %d)", i, p.Header.Revision, g.Kvs, g.Header.Revision)
			}
		}
	})

	t.Run("FutureRevision", func(t *testing.T) {
		k, _ := basic(t)
		rev := currentRev(t, cli)
		_, err := cli.Get(ctx(t), k("a"), clientv3.WithRev(rev+1))
		wantErr(t, "get at rev+1", err, rpctypes.ErrFutureRev)
		_, err = cli.Get(ctx(t), k("a"), clientv3.WithRev(rev+1000), clientv3.WithSerializable())
		wantErr(t, "serializable get at rev+1000", err, rpctypes.ErrFutureRev)
		if g := mustGet(t, cli, k("a"), clientv3.WithRev(rev)); len(g.Kvs) != 1 {
			t.Fatalf("get at current revision: %v", g.Kvs)
		}
	})

	t.Run("CompactedRevision", func(t *testing.T) {
		k := keyer(t)
		r1 := mustPut(t, cli, k("x"), "1").Header.Revision
		r2 := mustPut(t, cli, k("x"), "2").Header.Revision
		if _, err := cli.Compact(ctx(t), r2); err != nil {
			t.Fatalf("compact: %v", err)
		}
		_, err := cli.Get(ctx(t), k("x"), clientv3.WithRev(r1))
		wantErr(t, "get below the compact revision", err, rpctypes.ErrCompacted)
		_, err = cli.Get(ctx(t), k("x"), clientv3.WithRev(1))
		wantErr(t, "get at revision 1 after compaction", err, rpctypes.ErrCompacted)
		wantKV(t, "at the compact revision", getOne(t, cli, k("x"), clientv3.WithRev(r2)), k("x"), "2", r1, r2, 2)
	})

	t.Run("EmptyKey", func(t *testing.T) {
		_, err := cli.Get(ctx(t), "")
		wantErr(t, "get of an empty key", err, rpctypes.ErrEmptyKey)
		_, err = rawKV(cli).Range(ctx(t), &pb.RangeRequest{RangeEnd: []byte("z")})
		wantErr(t, "range with an empty key", err, rpctypes.ErrGRPCEmptyKey)
	})
}
