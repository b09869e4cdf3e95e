package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ordo-db/ordo/internal/testcluster"
)

// newProxiedCluster starts a 3-member process cluster whose peer traffic runs through
// fault-injecting proxies, and returns it with its agreed leader and one client per member.
func newProxiedCluster(t *testing.T) (*testcluster.Cluster, int, []*clientv3.Client) {
	t.Helper()
	c := testcluster.New(t, 3, testcluster.Options{Process: true, PeerProxy: true, Quiet: true})
	t.Cleanup(func() { logProxyStats(t, c) })
	lead := leader(t, c, 30*time.Second)
	clis := make([]*clientv3.Client, len(c.Members))
	for i, m := range c.Members {
		clis[i] = m.Client()
	}
	return c, lead, clis
}

// logProxyStats logs the peer traffic counters per link, for the test report.
func logProxyStats(t *testing.T, c *testcluster.Cluster) {
	name := map[uint64]string{}
	for i, m := range c.Members {
		name[c.MemberID(i)] = m.Name
	}
	for p, s := range c.ProxyStats() {
		if p == (testcluster.Pair{}) {
			t.Logf("peer link of unknown sender: %d bytes, %d connections", s.Bytes, s.Conns)
			continue
		}
		t.Logf("peer link %s->%s: %d bytes, %d connections, %d cut", name[p.From], name[p.To], s.Bytes, s.Conns, s.Cut)
	}
}

// others returns the member indexes other than i.
func others(c *testcluster.Cluster, i int) []int {
	var out []int
	for j := range c.Members {
		if j != i {
			out = append(out, j)
		}
	}
	return out
}

// newLeaderOf waits until the members idxs all report the same leader, other than member
// old, and returns its index.
func newLeaderOf(t *testing.T, c *testcluster.Cluster, clis []*clientv3.Client, timeout time.Duration, old int, idxs ...int) int {
	t.Helper()
	byID := map[uint64]int{}
	for i := range c.Members {
		byID[c.MemberID(i)] = i
	}
	lead := -1
	waitFor(t, timeout, fmt.Sprintf("members %v agree on a leader other than m%d", idxs, old), func() (bool, error) {
		var agreed uint64
		for _, i := range idxs {
			l, _, err := memberLeader(clis[i], c.Members[i].ClientURL)
			if err != nil {
				return false, err
			}
			if l == 0 || (agreed != 0 && l != agreed) {
				return false, fmt.Errorf("member %d reports leader %x, another %x", i, l, agreed)
			}
			agreed = l
		}
		if agreed == c.MemberID(old) {
			return false, fmt.Errorf("members %v still follow m%d", idxs, old)
		}
		lead = byID[agreed]
		return true, nil
	})
	return lead
}

// converge waits until every member reports the same revision, then checks that their
// HashKV at that revision agree.
func converge(t *testing.T, c *testcluster.Cluster, clis []*clientv3.Client, timeout time.Duration) {
	t.Helper()
	var rev int64
	waitFor(t, timeout, "members reach the same revision", func() (bool, error) {
		revs := make([]int64, len(c.Members))
		for i, m := range c.Members {
			cctx, cancel := context.WithTimeout(ctx(t), time.Second)
			st, err := clis[i].Status(cctx, m.ClientURL)
			cancel()
			if err != nil {
				return false, fmt.Errorf("status of %s: %w", m.Name, err)
			}
			revs[i] = st.Header.Revision
		}
		for _, r := range revs[1:] {
			if r != revs[0] {
				return false, fmt.Errorf("revisions %v", revs)
			}
		}
		rev = revs[0]
		return true, nil
	})
	var first *clientv3.HashKVResponse
	for i, m := range c.Members {
		h, err := clis[i].HashKV(ctx(t), m.ClientURL, rev)
		if err != nil {
			t.Fatalf("HashKV of %s at revision %d: %v", m.Name, rev, err)
		}
		if first == nil {
			first = h
			continue
		}
		if h.Hash != first.Hash || h.CompactRevision != first.CompactRevision {
			t.Fatalf("HashKV at revision %d: %s has hash %x (compacted at %d), %s has %x (compacted at %d)",
				rev, m.Name, h.Hash, h.CompactRevision, c.Members[0].Name, first.Hash, first.CompactRevision)
		}
	}
	t.Logf("all members at revision %d with hash %x", rev, first.Hash)
}

// TestPartitionIsolatedLeader cuts the leader off from both followers: they elect a new
// leader and keep taking writes, the old leader cannot serve a linearizable read, and after
// healing all three converge on the same data.
func TestPartitionIsolatedLeader(t *testing.T) {
	c, lead, clis := newProxiedCluster(t)
	mustPut(t, c.Client(), "part/before", "x")

	c.Isolate(lead)
	rest := others(c, lead)
	isolated := time.Now()
	newLead := newLeaderOf(t, c, clis, 10*electionTimeout, lead, rest...)
	if newLead == lead {
		t.Fatalf("the isolated member m%d is still the majority's leader", lead)
	}
	t.Logf("isolated m%d; m%d leads the majority after %v", lead, newLead, time.Since(isolated).Round(time.Millisecond))

	majority := newClient(t, []string{c.Members[rest[0]].ClientURL, c.Members[rest[1]].ClientURL}, clientv3.Config{})
	for i := range 20 {
		mustPut(t, majority, fmt.Sprintf("part/during/%02d", i), "y")
	}
	cctx, cancel := context.WithTimeout(ctx(t), time.Second)
	_, err := clis[lead].Get(cctx, "part/before")
	cancel()
	if err == nil {
		t.Fatalf("the isolated old leader m%d served a linearizable read", lead)
	}
	t.Logf("linearizable read on the isolated member fails: %v", err)

	c.Heal()
	agreed := leader(t, c, 30*time.Second)
	converge(t, c, clis, 30*time.Second)
	resp := mustGet(t, clis[lead], "part/during/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if resp.Count != 20 {
		t.Fatalf("old leader m%d sees %d of the 20 keys written during the partition", lead, resp.Count)
	}
	t.Logf("healed: m%d leads", agreed)
}

// TestPartitionOneWayLeader cuts what the leader sends to both followers while it still
// hears them: the followers elect a new leader, and no acknowledged write is lost.
func TestPartitionOneWayLeader(t *testing.T) {
	c, lead, clis := newProxiedCluster(t)
	const prefix = "oneway/"
	rest := others(c, lead)
	l := newLedger()
	// Writers through every member, the old leader included (its puts time out once it can
	// no longer reach a leader), and writers through the two followers only.
	all := startLoad(t, c.Client(), prefix+"all/", 2, l)
	majority := newClient(t, []string{c.Members[rest[0]].ClientURL, c.Members[rest[1]].ClientURL}, clientv3.Config{})
	maj := startLoad(t, majority, prefix+"majority/", 2, l)
	waitAcked(t, l, all.started, 50, 30*time.Second, "acks before the partition")

	for _, j := range rest {
		c.PartitionOneWay(lead, j)
	}
	cut := time.Now()
	newLead := newLeaderOf(t, c, clis, 10*electionTimeout, lead, rest...)
	if newLead == lead {
		t.Fatalf("followers still follow m%d, whose messages they no longer receive", lead)
	}
	t.Logf("cut m%d->followers; m%d leads after %v", lead, newLead, time.Since(cut).Round(time.Millisecond))
	waitAcked(t, l, cut, 50, putTimeout+10*electionTimeout, "acks after the one-way partition")

	c.Heal()
	all.stop()
	maj.stop()
	t.Logf("load: %s", l.summary())
	leader(t, c, 30*time.Second)
	checkMembers(t, c, prefix, l)
	converge(t, c, clis, 30*time.Second)
}

// TestPauseLeader SIGSTOPs the leader for several election timeouts: the others elect a new
// leader and keep serving; after SIGCONT the old leader steps down and catches up.
func TestPauseLeader(t *testing.T) {
	c, lead, clis := newProxiedCluster(t)
	const prefix = "pause/"
	rest := others(c, lead)
	l := newLedger()
	majority := newClient(t, []string{c.Members[rest[0]].ClientURL, c.Members[rest[1]].ClientURL}, clientv3.Config{})
	ld := startLoad(t, majority, prefix, 2, l)
	waitAcked(t, l, ld.started, 20, 30*time.Second, "acks before the pause")

	c.Members[lead].Pause()
	paused := time.Now()
	newLead := newLeaderOf(t, c, clis, 10*electionTimeout, lead, rest...)
	if newLead == lead {
		t.Fatalf("the majority still follows the paused member m%d", lead)
	}
	waitAcked(t, l, paused, 20, putTimeout+10*electionTimeout, "acks while the old leader is paused")
	// Hold the pause for at least three election timeouts in all.
	if hold := 3*electionTimeout - time.Since(paused); hold > 0 {
		time.Sleep(hold)
	}
	c.Members[lead].Resume()
	resumed := time.Now()
	t.Logf("paused m%d for %v; m%d took over", lead, resumed.Sub(paused).Round(time.Millisecond), newLead)

	// The old leader hears the higher term and follows; the cluster keeps taking writes.
	waitFor(t, 10*electionTimeout, "resumed old leader follows the new one", func() (bool, error) {
		l, self, err := memberLeader(clis[lead], c.Members[lead].ClientURL)
		if err != nil {
			return false, err
		}
		if l == 0 || l == self {
			return false, fmt.Errorf("m%d reports leader %x (itself %x)", lead, l, self)
		}
		return true, nil
	})
	waitAcked(t, l, resumed, 20, putTimeout+10*electionTimeout, "acks after the resume")
	ld.stop()
	checkMembers(t, c, prefix, l)
	converge(t, c, clis, 30*time.Second)
}

// TestDelayAllLinks delays every peer link by 200 ms ± 50 ms: writes and linearizable reads
// still succeed, only slower.
func TestDelayAllLinks(t *testing.T) {
	c, _, clis := newProxiedCluster(t)
	c.DelayAll(200*time.Millisecond, 50*time.Millisecond)
	cli := c.Client()

	const writers, puts = 4, 5
	var wg sync.WaitGroup
	errs := make([]error, writers)
	start := time.Now()
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range puts {
				cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := cli.Put(cctx, fmt.Sprintf("delay/w%d/%d", w, i), "v")
				cancel()
				if err != nil {
					errs[w] = fmt.Errorf("writer %d put %d: %w", w, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("puts with delayed peer links: %v", err)
	}
	t.Logf("%d puts by %d writers over delayed links took %v", writers*puts, writers, time.Since(start).Round(time.Millisecond))
	for i := range c.Members {
		resp := mustGet(t, clis[i], "delay/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if resp.Count != writers*puts {
			t.Fatalf("m%d sees %d of %d keys", i, resp.Count, writers*puts)
		}
	}
	c.Heal()
	converge(t, c, clis, 30*time.Second)
}
