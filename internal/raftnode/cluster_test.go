package raftnode_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/raft/v3"
)

// startCluster starts three members wired through nw. At the end of the test the network is
// shut down (every node stopped, deliveries drained) before the engines close.
func startCluster(t *testing.T, nw *memNet, snapshotCount, catchUp uint64) []*member {
	t.Helper()
	peers := []raft.Peer{{ID: 1}, {ID: 2}, {ID: 3}}
	var ms []*member
	for id := uint64(1); id <= 3; id++ {
		m := newMember(t, id, "", memberOptions{
			peers: peers, snapshotCount: snapshotCount, catchUpEntries: catchUp, transport: nw.transport(id),
		})
		nw.add(m)
		ms = append(ms, m)
	}
	t.Cleanup(func() { nw.shutdown(ms...) })
	return ms
}

func byID(ms []*member, id uint64) *member {
	for _, m := range ms {
		if m.id == id {
			return m
		}
	}
	return nil
}

func others(ms []*member, id uint64) []*member {
	var out []*member
	for _, m := range ms {
		if m.id != id {
			out = append(out, m)
		}
	}
	return out
}

func TestClusterProposalsOnFollowerApplyEverywhere(t *testing.T) {
	nw := newMemNet(t)
	ms := startCluster(t, nw, 10000, 0)
	lead := waitLeader(t, ms...)
	follower := others(ms, lead)[0]

	want := payloads("f", 30)
	proposeAll(t, follower.node, want)
	for _, m := range ms {
		waitData(t, m, want)
		m.sm.checkOrder(t)
	}

	// A read barrier on a follower waits for everything the leader committed before it.
	more := payloads("g", 10)
	proposeAll(t, byID(ms, lead).node, more)
	waitData(t, byID(ms, lead), append(want, more...))
	commit := byID(ms, lead).node.Status().GetCommit()
	other := others(ms, lead)[1]
	if err := other.node.ReadBarrier(ctxTimeout(t, waitTimeout)); err != nil {
		t.Fatalf("ReadBarrier on follower %d: %v", other.id, err)
	}
	if a := other.node.AppliedIndex(); a < commit {
		t.Errorf("follower %d: ReadBarrier returned at applied index %d, below the leader's commit index %d", other.id, a, commit)
	}
	if err := other.node.WaitApplied(ctxTimeout(t, waitTimeout), commit); err != nil {
		t.Errorf("WaitApplied(%d) on follower: %v", commit, err)
	}
	for _, m := range ms {
		if m.node.Leader() != lead {
			t.Errorf("member %d sees leader %d, want %d", m.id, m.node.Leader(), lead)
		}
	}
}

// TestClusterLaggingMemberCatchesUp cuts a follower off while the others go on, then heals the
// network: it must end with exactly the same applied entries, from the log when the leader
// still has them, and through a streamed snapshot when the leader compacted them away.
func TestClusterLaggingMemberCatchesUp(t *testing.T) {
	for _, tc := range []struct {
		name                   string
		snapshotCount, catchUp uint64
		wantSnapshot           bool
	}{
		{"from the log", 10000, 0, false},
		{"by snapshot", 10, 5, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nw := newMemNet(t)
			ms := startCluster(t, nw, tc.snapshotCount, tc.catchUp)
			lead := waitLeader(t, ms...)
			leader := byID(ms, lead)
			lag := others(ms, lead)[0]

			want := payloads("before", 10)
			proposeAll(t, leader.node, want)
			for _, m := range ms {
				waitData(t, m, want)
			}

			nw.isolate(lag.id, true)
			during := payloads("during", 60)
			proposeAll(t, leader.node, during)
			want = append(want, during...)
			for _, m := range others(ms, lag.id) {
				waitData(t, m, want)
			}
			lagApplied := lag.node.AppliedIndex()
			if lag.sm.count() != 10 {
				t.Fatalf("isolated member applied %d payloads, want 10", lag.sm.count())
			}
			if tc.wantSnapshot {
				waitFor(t, waitTimeout, "the leader to compact past the lagging member", func() bool {
					first, _ := leader.log.FirstIndex()
					return first > lagApplied+1
				})
			}

			nw.isolate(lag.id, false)
			waitData(t, lag, want)
			lag.sm.checkOrder(t)
			snaps := nw.snapCount(lag.id)
			lag.sm.mu.Lock()
			restores := lag.sm.restores
			lag.sm.mu.Unlock()
			if tc.wantSnapshot && (snaps == 0 || restores == 0) {
				t.Errorf("lagging member caught up with %d snapshots sent and %d restores, want a snapshot", snaps, restores)
			}
			if !tc.wantSnapshot && snaps != 0 {
				t.Errorf("lagging member was sent %d snapshots, want none (the leader kept the log)", snaps)
			}

			// It is a full member again: a proposal on it is applied everywhere.
			after := payloads("after", 10)
			proposeAll(t, lag.node, after)
			want = append(want, after...)
			for _, m := range ms {
				waitData(t, m, want)
			}
			if tc.wantSnapshot {
				if si := lag.log.SnapshotIndex(); si <= lagApplied {
					t.Errorf("lagging member's snapshot index %d, want past %d", si, lagApplied)
				}
			}
		})
	}
}

// TestClusterDeposedLeaderDropsUncommitted isolates the leader right after it accepted some
// proposals; the others elect a new leader and go on. When the old leader rejoins, its
// uncommitted suffix is overwritten and none of it may ever be applied anywhere.
func TestClusterDeposedLeaderDropsUncommitted(t *testing.T) {
	nw := newMemNet(t)
	ms := startCluster(t, nw, 10000, 0)
	lead := waitLeader(t, ms...)
	old := byID(ms, lead)
	want := payloads("a", 5)
	proposeAll(t, old.node, want)
	for _, m := range ms {
		waitData(t, m, want)
	}

	nw.isolate(old.id, true)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	for _, p := range payloads("lost", 5) {
		if err := old.node.Propose(ctx, []byte(p)); err != nil {
			break
		}
	}
	cancel()
	rest := others(ms, old.id)
	var newLead uint64
	waitFor(t, waitTimeout, "a new leader among the others", func() bool {
		l := rest[0].node.Leader()
		if l == 0 || l == old.id || rest[1].node.Leader() != l {
			return false
		}
		newLead = l
		return true
	})
	kept := payloads("b", 20)
	proposeAll(t, byID(ms, newLead).node, kept)
	want = append(want, kept...)
	for _, m := range rest {
		waitData(t, m, want)
	}

	nw.isolate(old.id, false)
	waitData(t, old, want)
	more := payloads("c", 5)
	proposeAll(t, old.node, more)
	want = append(want, more...)
	for _, m := range ms {
		waitData(t, m, want)
		m.sm.checkOrder(t)
		data, _ := m.sm.snapshot()
		if i := slices.IndexFunc(data, func(s string) bool { return strings.HasPrefix(s, "lost") }); i >= 0 {
			t.Errorf("member %d applied the uncommitted %q", m.id, data[i])
		}
	}
	if got := old.node.Leader(); got == old.id {
		t.Errorf("deposed leader still thinks it leads")
	}
}
