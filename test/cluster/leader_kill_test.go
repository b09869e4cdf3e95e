package cluster_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ordo-db/ordo/internal/testcluster"
)

// electionTimeout is the harness's --election-timeout.
const electionTimeout = 500 * time.Millisecond

// TestLeaderKilledUnderLoad SIGKILLs the leader of a 3-member cluster while clients write through
// every member: writes resume once a new leader is elected, the killed member restarts and
// catches up, and every acknowledged put is on every member with its acked value and revision.
func TestLeaderKilledUnderLoad(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{Process: true})
	leader(t, c, 30*time.Second)
	const prefix = "leaderkill/"
	l := newLedger()
	cli := c.Client()
	ld := startLoad(t, cli, prefix, 4, l)
	waitAcked(t, l, ld.started, 100, 30*time.Second, "acks before the first kill")

	for round := 0; round < pick(1, 5); round++ {
		lead := leader(t, c, 30*time.Second)
		before := l.numAcked()
		killed := time.Now()
		c.Members[lead].Kill()
		t.Logf("round %d: SIGKILLed leader m%d after %d acks", round, lead, before)

		// A new leader is elected within a few election timeouts, and a put started once it is
		// known is acknowledged within a few more.
		newLead := leader(t, c, 10*electionTimeout)
		elected := time.Since(killed)
		if newLead == lead {
			t.Fatalf("round %d: killed member m%d still reported as leader", round, lead)
		}
		var probed time.Duration
		attempt := 0
		waitFor(t, 10*electionTimeout, fmt.Sprintf("round %d: put through the cluster after the new leader was elected", round), func() (bool, error) {
			cctx, cancel := context.WithTimeout(ctx(t), 2*electionTimeout)
			defer cancel()
			attempt++
			probeKey := fmt.Sprintf("%sprobe/%d-%d", prefix, round, attempt)
			l.try(probeKey, "probe")
			p, err := cli.Put(cctx, probeKey, "probe")
			if err != nil {
				return false, err
			}
			l.ack(probeKey, ack{val: "probe", rev: p.Header.Revision})
			probed = time.Since(killed)
			return true, nil
		})
		// The load's writers go on too; those whose puts were forwarded to the dead leader
		// first wait out their own timeout (the proposal is lost, as in etcd).
		waitAcked(t, l, killed, 50, putTimeout+20*electionTimeout, fmt.Sprintf("round %d: load acks after killing the leader", round))
		t.Logf("round %d: new leader m%d agreed %v after the kill; probe put acked at %v; first load ack of a put started after the kill at %v",
			round, newLead, elected.Round(time.Millisecond), probed.Round(time.Millisecond), l.firstAckSince(killed).Sub(killed).Round(time.Millisecond))

		if err := c.Members[lead].Restart(); err != nil {
			t.Fatalf("round %d: restart m%d: %v", round, lead, err)
		}
		restarted := time.Now()
		waitAcked(t, l, restarted, 50, 30*time.Second, fmt.Sprintf("round %d: acks after restarting the killed member", round))
		// The restarted member serves linearizable reads again (it caught up).
		rangeAll(t, c.Members[lead].Client(), prefix+"probe/")
	}
	ld.stop()
	t.Logf("load: %s", l.summary())
	rev := checkMembers(t, c, prefix, l)
	if rev < l.highestRev() {
		t.Fatalf("read revision %d is below the highest acked revision %d", rev, l.highestRev())
	}
}
