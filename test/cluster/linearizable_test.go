package cluster_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/ordo-db/ordo/internal/testcluster"
)

// TestLinearizableReadAfterWrite: a put acknowledged through member 0 is seen at once by a
// linearizable get through member 2, every time, whichever of them leads.
func TestLinearizableReadAfterWrite(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{})
	lead := leader(t, c, 30*time.Second)
	t.Logf("leader m%d", lead)
	w, r := c.Members[0].Client(), c.Members[2].Client()
	const key = "linread/key"
	n := pick(200, 2000)
	for i := 0; i < n; i++ {
		val := fmt.Sprintf("v%d", i)
		p := mustPut(t, w, key, val)
		g := mustGet(t, r, key)
		if len(g.Kvs) != 1 || string(g.Kvs[0].Value) != val || g.Kvs[0].ModRevision != p.Header.Revision || g.Header.Revision < p.Header.Revision {
			var got string
			if len(g.Kvs) == 1 {
				got = fmtKV(g.Kvs[0])
			}
			t.Fatalf("iteration %d: put %q acked at revision %d through member 0; linearizable get through member 2 returned %s (%d kvs) at header revision %d",
				i, val, p.Header.Revision, got, len(g.Kvs), g.Header.Revision)
		}
	}
}
