package cluster_test

import (
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ordo-db/ordo/internal/testcluster"
)

// TestWholeClusterRestart stops every member of a 3-member cluster and starts them all again:
// the data is intact on every member and writes continue with higher revisions.
func TestWholeClusterRestart(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{})
	leader(t, c, 30*time.Second)
	const prefix = "restart/"
	l := newLedger()
	cli := c.Client()
	for round := 0; round < pick(2, 10); round++ {
		for i := 0; i < 50; i++ {
			k, v := fmt.Sprintf("%sr%02d/%04d", prefix, round, i), fmt.Sprintf("v%d-%d", round, i)
			l.try(k, v)
			p := mustPut(t, cli, k, v)
			l.ack(k, ack{val: v, rev: p.Header.Revision})
		}
		highest := l.highestRev()
		for _, m := range c.Members {
			m.Stop()
		}
		restartAll(t, c.Members...)
		lead := leader(t, c, 30*time.Second)
		t.Logf("round %d: restarted; leader m%d", round, lead)
		if rev := checkMembers(t, c, prefix, l); rev < highest {
			t.Fatalf("round %d: revision after restart %d is below the highest acked revision %d", round, rev, highest)
		}
		// Writes continue through every member, above the old revisions.
		for i, m := range c.Members {
			k := fmt.Sprintf("%sr%02d/after-m%d", prefix, round, i)
			var p *clientv3.PutResponse
			waitFor(t, 30*time.Second, fmt.Sprintf("put through member %d after restart", i), func() (bool, error) {
				var err error
				p, err = m.Client().Put(ctx(t), k, "x")
				return err == nil, err
			})
			if p.Header.Revision <= highest {
				t.Fatalf("round %d: put after restart got revision %d, not above %d", round, p.Header.Revision, highest)
			}
			l.try(k, "x")
			l.ack(k, ack{val: "x", rev: p.Header.Revision})
		}
		checkMembers(t, c, prefix, l)
	}
}
