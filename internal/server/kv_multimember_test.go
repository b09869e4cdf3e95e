package server_test

import (
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ordo-db/ordo/internal/testcluster"
)

// testMultiMember checks reads across members: a linearizable read through any member sees a
// write acknowledged by another at once; a serializable read on a follower sees it eventually.
// On a 1-member cluster the first and last member are the same one.
func testMultiMember(t *testing.T, c *testcluster.Cluster) {
	first, last := c.Members[0], c.Members[len(c.Members)-1]
	w, r := first.Client(), last.Client()

	t.Run("LinearizableAcrossMembers", func(t *testing.T) {
		k := keyer(t)
		for i := 0; i < 20; i++ {
			writer, reader := w, r
			if i%2 == 1 {
				writer, reader = r, w
			}
			val := fmt.Sprintf("v%d", i)
			p := mustPut(t, writer, k("lin"), val)
			g := mustGet(t, reader, k("lin"))
			if len(g.Kvs) != 1 || string(g.Kvs[0].Value) != val || g.Kvs[0].ModRevision != p.Header.Revision || g.Header.Revision < p.Header.Revision {
				t.Fatalf("write %d acknowledged at %d; linearizable read on another member: %v (header revision %d)", i, p.Header.Revision, g.Kvs, g.Header.Revision)
			}
		}
		// Deletes and txns too.
		d := mustDelete(t, w, k("lin"))
		if g := mustGet(t, r, k("lin")); len(g.Kvs) != 0 || g.Header.Revision < d.Header.Revision {
			t.Fatalf("delete at %d not visible on another member: %v at %d", d.Header.Revision, g.Kvs, g.Header.Revision)
		}
		tx := mustTxn(t, w, []clientv3.Cmp{clientv3.Compare(clientv3.Version(k("lin")), "=", 0)},
			[]clientv3.Op{clientv3.OpPut(k("t1"), "1"), clientv3.OpPut(k("t2"), "2")}, nil)
		g := mustGet(t, r, k("t"), clientv3.WithPrefix())
		wantKeys(t, "txn writes on another member", g.Kvs, k("t1"), k("t2"))
		if g.Kvs[0].ModRevision != tx.Header.Revision {
			t.Fatalf("txn at %d, read mod revision %d", tx.Header.Revision, g.Kvs[0].ModRevision)
		}
		// A linearizable read-only txn on another member also sees the latest write.
		p := mustPut(t, w, k("lin2"), "x")
		rt := mustTxn(t, r, nil, []clientv3.Op{clientv3.OpGet(k("lin2"))}, nil)
		if rr := rt.Responses[0].GetResponseRange(); len(rr.Kvs) != 1 || rr.Kvs[0].ModRevision != p.Header.Revision {
			t.Fatalf("read-only txn on another member after put at %d: %v", p.Header.Revision, rr.Kvs)
		}
	})

	t.Run("SerializableEventually", func(t *testing.T) {
		k := keyer(t)
		p := mustPut(t, w, k("ser"), "1")
		for i, m := range c.Members {
			mc := m.Client()
			waitFor(t, 10*time.Second, fmt.Sprintf("serializable read on member %d", i), func() (bool, error) {
				g, err := mc.Get(ctx(t), k("ser"), clientv3.WithSerializable())
				if err != nil {
					return false, err
				}
				return len(g.Kvs) == 1 && g.Kvs[0].ModRevision == p.Header.Revision && g.Header.Revision >= p.Header.Revision, nil
			})
		}
		// Once caught up, every member holds the same data at that revision.
		var want *clientv3.GetResponse
		for _, m := range c.Members {
			g := mustGet(t, m.Client(), k(""), clientv3.WithPrefix(), clientv3.WithSerializable(), clientv3.WithRev(p.Header.Revision))
			if want == nil {
				want = g
				continue
			}
			sameKVs(t, p.Header.Revision, g, want)
		}
	})

	t.Run("SameLeader", func(t *testing.T) {
		lead, err := c.Leader(10 * time.Second)
		if err != nil {
			t.Fatalf("leader: %v", err)
		}
		st, err := c.Members[lead].Client().Status(ctx(t), c.Members[lead].ClientURL)
		if err != nil {
			t.Fatalf("status: %v", err)
		}
		if st.Leader != st.Header.MemberId {
			t.Fatalf("the leader's status names %x as leader, itself %x", st.Leader, st.Header.MemberId)
		}
	})
}
