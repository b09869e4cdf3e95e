package cluster_test

import (
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ordo-db/ordo/internal/testcluster"
)

// TestKillRestartSingleMember SIGKILLs a 1-member cluster at a random moment under concurrent
// writes and restarts it from the same data dir, several times: every acknowledged put survives
// with its revision, and the revision never goes backwards.
func TestKillRestartSingleMember(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{Process: true})
	m := c.Members[0]
	cli := m.Client()
	rng := newRand(t)
	const prefix = "crash1/"
	l := newLedger()
	var lastRev int64 // the revision seen after the previous restart
	for round := 0; round < pick(3, 20); round++ {
		ld := startLoad(t, cli, fmt.Sprintf("%sr%02d/", prefix, round), 4, l)
		// A random moment: after a random number of acknowledged puts of this round.
		target := 1 + rng.IntN(400)
		waitAcked(t, l, ld.started, target, 60*time.Second, fmt.Sprintf("round %d: %d acks", round, target))
		m.Kill()
		ld.stop()
		highest := l.highestRev()
		t.Logf("round %d: SIGKILLed after %d acks of this round; %s", round, target, l.summary())

		if err := m.Restart(); err != nil {
			t.Fatalf("round %d: restart: %v", round, err)
		}
		// A fresh client: the old one's connection would first wait out its reconnect backoff.
		_ = cli.Close()
		cli = newClient(t, []string{m.ClientURL}, clientv3.Config{})
		resp := rangeAll(t, cli, prefix)
		l.check(t, fmt.Sprintf("round %d after restart", round), resp.Kvs)
		if resp.Header.Revision < highest {
			t.Fatalf("round %d: revision after restart %d is below the highest acked revision %d", round, resp.Header.Revision, highest)
		}
		if resp.Header.Revision < lastRev {
			t.Fatalf("round %d: revision after restart %d is below the revision %d seen after the previous restart", round, resp.Header.Revision, lastRev)
		}
		// New writes continue above every revision seen.
		p := mustPut(t, cli, fmt.Sprintf("%sr%02d/after", prefix, round), "x")
		if p.Header.Revision <= resp.Header.Revision {
			t.Fatalf("round %d: put after restart got revision %d, not above the current revision %d", round, p.Header.Revision, resp.Header.Revision)
		}
		l.try(fmt.Sprintf("%sr%02d/after", prefix, round), "x")
		l.ack(fmt.Sprintf("%sr%02d/after", prefix, round), ack{val: "x", rev: p.Header.Revision})
		lastRev = p.Header.Revision
	}
}

// TestKillRestartWholeCluster SIGKILLs every member of a 3-member cluster under load and
// restarts them all: every acknowledged put survives on every member.
func TestKillRestartWholeCluster(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{Process: true})
	leader(t, c, 30*time.Second)
	const prefix = "crash3/"
	l := newLedger()
	for round := 0; round < pick(1, 5); round++ {
		ld := startLoad(t, c.Client(), fmt.Sprintf("%sr%02d/", prefix, round), 4, l)
		waitAcked(t, l, ld.started, 200, 60*time.Second, fmt.Sprintf("round %d: acks", round))
		for _, m := range c.Members {
			m.Kill()
		}
		ld.stop()
		highest := l.highestRev()
		t.Logf("round %d: SIGKILLed every member; %s", round, l.summary())
		restartAll(t, c.Members...)
		leader(t, c, 30*time.Second)
		if rev := checkMembers(t, c, prefix, l); rev < highest {
			t.Fatalf("round %d: revision after restart %d is below the highest acked revision %d", round, rev, highest)
		}
	}
}

// TestKillAfterLastWriteSingleMember acknowledges one put on a 1-member cluster, SIGKILLs the
// member before anything else is written and restarts it: the first linearizable read must
// see the put (and a header revision not below it). The read is sent as soon as the member
// reports a leader, that is while it may not yet have committed an entry of its new term.
//
// This is the case where the commit index on disk can be older than acknowledged writes (a
// hard state whose commit alone advanced is written without fsync, and nothing fsyncs after
// the last put), and raft answers a single voter's ReadIndex with that commit index at once
// (see etcd-io/raft#105). Each round hits the window with some probability; 30 rounds make
// a miss unlikely.
func TestKillAfterLastWriteSingleMember(t *testing.T) {
	// A short election timeout keeps the rounds short (the later flag wins).
	c := testcluster.New(t, 1, testcluster.Options{Process: true, Args: []string{"--heartbeat-interval", "20", "--election-timeout", "150"}})
	m := c.Members[0]
	cli := m.Client()
	var stale, fine int
	for round := 0; round < pick(30, 300); round++ {
		key := fmt.Sprintf("lastwrite/%03d", round)
		p := mustPut(t, cli, key, "v")
		m.Kill()
		_ = cli.Close()
		if err := m.Restart(); err != nil {
			t.Fatalf("round %d: restart: %v", round, err)
		}
		// A fresh client: the old one's connection would wait out its reconnect backoff.
		cli = newClient(t, []string{m.ClientURL}, clientv3.Config{})
		if _, err := cli.Get(ctx(t), key, clientv3.WithSerializable()); err != nil {
			t.Fatalf("round %d: serializable get after restart: %v", round, err)
		}
		// Poll without pause (etcd's /health answers 200 once the member knows a leader): the
		// window between winning the election and committing the first entry of the new term
		// is about one fsync long.
		waitHealthy(t, m.ClientURL, 10*time.Second)
		g := mustGet(t, cli, key)
		if len(g.Kvs) == 1 && g.Kvs[0].ModRevision == p.Header.Revision && g.Header.Revision >= p.Header.Revision {
			fine++
			continue
		}
		stale++
		// Is it lost, or was the read stale? Once the restarted leader committed an entry of
		// its own term, the put must be back.
		mustPut(t, cli, "lastwrite/probe", "x")
		later := mustGet(t, cli, key)
		t.Errorf("round %d: put acked at revision %d; first linearizable read after SIGKILL and restart returned %d kvs at header revision %d; after one more put the key is %s",
			round, p.Header.Revision, len(g.Kvs), g.Header.Revision, map[bool]string{true: "present (a stale linearizable read)", false: "still missing (lost)"}[len(later.Kvs) == 1])
	}
	t.Logf("%d rounds: %d correct, %d stale or lost", stale+fine, fine, stale)
}

// waitHealthy polls the member's /health endpoint without pause until it answers 200 (the
// member knows a leader).
func waitHealthy(t testing.TB, clientURL string, timeout time.Duration) {
	t.Helper()
	hc := &http.Client{Timeout: time.Second}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		resp, err := hc.Get(clientURL + "/health")
		if err != nil {
			lastErr = err
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return
		}
		lastErr = fmt.Errorf("/health: %s", resp.Status)
	}
	t.Fatalf("%s not healthy after %v: %v", clientURL, timeout, lastErr)
}
