// Package testcluster starts real Ordo clusters on free loopback ports for tests: members run
// in-process (fast, shared goroutine leak checks) or as separate ordo processes (for SIGKILL and
// restart tests). Clients are etcd's own clientv3.
package testcluster

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/ordo-db/ordo/internal/config"
	"github.com/ordo-db/ordo/internal/server"
)

// Options tune a cluster.
type Options struct {
	// Args are extra ordo flags given to every member.
	Args []string
	// Process runs every member as a separate ordo process instead of in-process.
	Process bool
	// Quiet drops member logs instead of sending them to t.Log.
	Quiet bool
	// LogDir, if set, receives each process member's complete log as <name>.log (appended
	// to across restarts), whatever Quiet says.
	LogDir string
	// PeerProxy routes all inbound peer traffic of each member through a Proxy of its own,
	// so the test can partition, delay and drop peer links (Cluster.Partition, Delay, ...).
	// Each member listens for peers on its own port and advertises the proxy's port.
	PeerProxy bool
}

// Cluster is a set of members started together.
type Cluster struct {
	t       testing.TB
	opts    Options
	Members []*Member
	mu      sync.Mutex
	clients []*clientv3.Client
	ids     []uint64 // member ids by index, once learned; guarded by mu
}

// Member is one member of a test cluster.
type Member struct {
	c         *Cluster
	Name      string
	DataDir   string
	ClientURL string
	// PeerURL is the peer URL the member advertises: the URL of its proxy with
	// Options.PeerProxy, else the URL it listens on.
	PeerURL string
	// ListenPeerURL is the URL the member listens on for peers.
	ListenPeerURL string
	args          []string

	proxy *Proxy // with Options.PeerProxy; outlives restarts of the member

	srv  *server.Member // in-process
	proc *process       // process mode
}

// dataRoot returns a fresh directory for one member's data, removed when the test ends, after
// the cluster stopped (cleanups run last-registered first, and New registers Close later).
// Unlike t.TempDir, the removal is retried for a while: a file written just as a member's
// storage closes once made t.TempDir's single RemoveAll fail a test that had passed.
func dataRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ordo-member-")
	if err != nil {
		t.Fatalf("member data dir: %v", err)
	}
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := os.RemoveAll(dir)
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Logf("leaving member data dir %s: %v", dir, err)
				return
			}
			waitShort()
		}
	})
	return dir
}

// FreePorts reserves n loopback ports (they are released before use, as in every such harness).
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("reserve port: %v", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		_ = l.Close()
	}
	return ports
}

// New starts an n-member cluster and waits until every member is ready. It is stopped when the
// test ends.
func New(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	c := &Cluster{t: t, opts: opts}
	ports := FreePorts(t, 2*n)
	var initial []string
	// Close is registered before anything is started, so a failed start still tears down
	// what was started.
	t.Cleanup(c.Close)
	for i := 0; i < n; i++ {
		m := &Member{
			c:             c,
			Name:          fmt.Sprintf("m%d", i),
			DataDir:       filepath.Join(dataRoot(t), "data.ordo"),
			ClientURL:     fmt.Sprintf("http://127.0.0.1:%d", ports[2*i]),
			ListenPeerURL: fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1]),
		}
		m.PeerURL = m.ListenPeerURL
		c.Members = append(c.Members, m)
		if opts.PeerProxy {
			p, err := NewProxy("127.0.0.1:0", strings.TrimPrefix(m.ListenPeerURL, "http://"))
			if err != nil {
				t.Fatalf("start peer proxy: %v", err)
			}
			m.proxy = p
			m.PeerURL = "http://" + p.Addr()
		}
		initial = append(initial, m.Name+"="+m.PeerURL)
	}
	for _, m := range c.Members {
		m.args = append([]string{
			"--name", m.Name,
			"--data-dir", m.DataDir,
			"--listen-client-urls", m.ClientURL,
			"--advertise-client-urls", m.ClientURL,
			"--listen-peer-urls", m.ListenPeerURL,
			"--initial-advertise-peer-urls", m.PeerURL,
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-state", "new",
			"--heartbeat-interval", "50",
			"--election-timeout", "500",
		}, opts.Args...)
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, m := range c.Members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = m.start()
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("start cluster: %v", err)
		}
	}
	for _, m := range c.Members {
		if err := m.WaitReady(30 * time.Second); err != nil {
			t.Fatalf("cluster not ready: %v", err)
		}
	}
	if opts.PeerProxy {
		if err := c.learnIDs(); err != nil {
			t.Fatalf("cluster member ids: %v", err)
		}
	}
	return c
}

func (m *Member) start() error {
	if m.c.opts.Process {
		logPath := ""
		if m.c.opts.LogDir != "" {
			logPath = filepath.Join(m.c.opts.LogDir, m.Name+".log")
		}
		p, err := startProcess(m.c.t, m.Name, m.args, m.c.opts.Quiet, logPath)
		if err != nil {
			return err
		}
		m.proc = p
		return nil
	}
	cfg, err := config.Load(m.args, nil, io.Discard)
	if err != nil {
		return fmt.Errorf("member %s config: %w", m.Name, err)
	}
	lg := zap.NewNop()
	if !m.c.opts.Quiet {
		lg = zaptest.NewLogger(m.c.t, zaptest.Level(zap.WarnLevel)).Named(m.Name)
	}
	srv, err := server.New(cfg, lg)
	if err != nil {
		return err
	}
	if err := srv.Start(); err != nil {
		return fmt.Errorf("member %s: %w", m.Name, err)
	}
	m.srv = srv
	return nil
}

// WaitReady waits until the member logged that it serves clients.
func (m *Member) WaitReady(timeout time.Duration) error {
	if m.proc == nil && m.srv == nil {
		return fmt.Errorf("member %s is not running", m.Name)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	if m.proc != nil {
		select {
		case <-m.proc.ready:
			return nil
		case <-m.proc.exited:
			return fmt.Errorf("member %s exited before ready: %v", m.Name, m.proc.err)
		case <-timer.C:
			return fmt.Errorf("member %s not ready after %v", m.Name, timeout)
		}
	}
	select {
	case <-m.srv.Ready():
		return nil
	case <-m.srv.Done():
		return fmt.Errorf("member %s stopped before ready: %v", m.Name, m.srv.Err())
	case <-timer.C:
		return fmt.Errorf("member %s not ready after %v", m.Name, timeout)
	}
}

// Stop stops the member gracefully (in-process) or with SIGTERM (process).
func (m *Member) Stop() {
	if m.proc != nil {
		m.proc.stop()
		m.proc = nil
	}
	if m.srv != nil {
		m.srv.Stop()
		m.srv = nil
	}
}

// Kill stops the member at once: SIGKILL in process mode, an abrupt stop in-process.
func (m *Member) Kill() {
	if m.proc != nil {
		m.proc.kill()
		m.proc = nil
		return
	}
	m.Stop()
}

// Restart starts a stopped member again from its data dir and waits until it is ready.
func (m *Member) Restart() error {
	if err := m.start(); err != nil {
		return err
	}
	return m.WaitReady(30 * time.Second)
}

// Running reports whether the member is started.
func (m *Member) Running() bool { return m.proc != nil || m.srv != nil }

// Client returns a client connected to this member only.
func (m *Member) Client() *clientv3.Client {
	return m.c.newClient([]string{m.ClientURL})
}

// Client returns a client connected to every member.
func (c *Cluster) Client() *clientv3.Client {
	var eps []string
	for _, m := range c.Members {
		eps = append(eps, m.ClientURL)
	}
	return c.newClient(eps)
}

func (c *Cluster) newClient(eps []string) *clientv3.Client {
	c.t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   eps,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		c.t.Fatalf("client: %v", err)
	}
	c.mu.Lock()
	c.clients = append(c.clients, cli)
	c.mu.Unlock()
	return cli
}

// Leader returns the index of the member every running member agrees leads, waiting up to
// timeout for one.
func (c *Cluster) Leader(timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	for {
		lead, ok := c.agreedLeader()
		if ok {
			return lead, nil
		}
		if time.Now().After(deadline) {
			return -1, fmt.Errorf("no agreed leader after %v", timeout)
		}
		waitShort()
	}
}

func (c *Cluster) agreedLeader() (int, bool) {
	var lead uint64
	ids := map[uint64]int{}
	for i, m := range c.Members {
		if !m.Running() {
			continue
		}
		cli := m.Client()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := cli.Status(ctx, m.ClientURL)
		cancel()
		c.closeClient(cli)
		if err != nil || st.Leader == 0 {
			return -1, false
		}
		ids[st.Header.MemberId] = i
		if lead != 0 && st.Leader != lead {
			return -1, false
		}
		lead = st.Leader
	}
	i, ok := ids[lead]
	return i, ok
}

func (c *Cluster) closeClient(cli *clientv3.Client) {
	c.mu.Lock()
	for i, x := range c.clients {
		if x == cli {
			c.clients = append(c.clients[:i], c.clients[i+1:]...)
			break
		}
	}
	c.mu.Unlock()
	_ = cli.Close()
}

// waitShort yields between condition polls; polling waits on a condition, never a fixed delay
// standing in for one.
func waitShort() { time.Sleep(20 * time.Millisecond) }

// Close stops clients and members.
func (c *Cluster) Close() {
	c.mu.Lock()
	clients := c.clients
	c.clients = nil
	c.mu.Unlock()
	for _, cli := range clients {
		_ = cli.Close()
	}
	// Faults left in place (a failed test) would slow down the members' graceful stop.
	for _, m := range c.Members {
		if m.proxy != nil {
			m.proxy.HealAll()
		}
	}
	var wg sync.WaitGroup
	for _, m := range c.Members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.Stop()
		}()
	}
	wg.Wait()
	// Proxies last: members stop without faults getting in the way of their goodbyes.
	for _, m := range c.Members {
		if m.proxy != nil {
			if err := m.proxy.Close(); err != nil {
				c.t.Errorf("%v", err)
			}
		}
	}
}

// learnIDs records the member id of every member, matched by advertised peer URL.
func (c *Cluster) learnIDs() error {
	cli := c.Client()
	defer c.closeClient(cli)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.MemberList(ctx)
	if err != nil {
		return fmt.Errorf("member list: %w", err)
	}
	ids := make([]uint64, len(c.Members))
	for i, m := range c.Members {
		for _, mm := range resp.Members {
			if slices.Contains(mm.PeerURLs, m.PeerURL) || (mm.Name != "" && mm.Name == m.Name) {
				ids[i] = mm.ID
			}
		}
		if ids[i] == 0 {
			return fmt.Errorf("member %s (%s) is not in the member list", m.Name, m.PeerURL)
		}
	}
	c.mu.Lock()
	c.ids = ids
	c.mu.Unlock()
	return nil
}

// MemberID returns the raft member id of member i.
func (c *Cluster) MemberID(i int) uint64 {
	c.t.Helper()
	c.mu.Lock()
	ids := c.ids
	c.mu.Unlock()
	if ids == nil {
		if err := c.learnIDs(); err != nil {
			c.t.Fatalf("member ids: %v", err)
		}
		c.mu.Lock()
		ids = c.ids
		c.mu.Unlock()
	}
	return ids[i]
}

// faults applies f to every member's proxy with the ids of members from and to. Each proxy
// only sees the connections addressed to its member, so applying a rule everywhere is
// exact: the cut of from→to acts in to's proxy, a delay of from→to in both.
func (c *Cluster) faults(from, to int, f func(p *Proxy, from, to uint64)) {
	c.t.Helper()
	if !c.opts.PeerProxy {
		c.t.Fatalf("peer faults need Options.PeerProxy")
	}
	idFrom, idTo := c.MemberID(from), c.MemberID(to)
	for _, m := range c.Members {
		f(m.proxy, idFrom, idTo)
	}
}

// PartitionOneWay cuts the raft traffic member from sends to member to; to still reaches
// from. See Proxy.Partition.
func (c *Cluster) PartitionOneWay(from, to int) {
	c.t.Helper()
	c.faults(from, to, (*Proxy).Partition)
}

// Partition cuts the traffic between members a and b in both directions.
func (c *Cluster) Partition(a, b int) {
	c.t.Helper()
	c.PartitionOneWay(a, b)
	c.PartitionOneWay(b, a)
}

// Isolate cuts member i off from every other member, both ways.
func (c *Cluster) Isolate(i int) {
	c.t.Helper()
	for j := range c.Members {
		if j != i {
			c.Partition(i, j)
		}
	}
}

// Heal removes every partition, delay and drop rate.
func (c *Cluster) Heal() {
	c.t.Helper()
	if !c.opts.PeerProxy {
		c.t.Fatalf("peer faults need Options.PeerProxy")
	}
	for _, m := range c.Members {
		m.proxy.HealAll()
	}
}

// Delay delays the traffic from member from to member to by d ± jitter. See Proxy.Delay.
func (c *Cluster) Delay(from, to int, d, jitter time.Duration) {
	c.t.Helper()
	c.faults(from, to, func(p *Proxy, from, to uint64) { p.Delay(from, to, d, jitter) })
}

// DelayAll delays the traffic on every link, both ways, by d ± jitter.
func (c *Cluster) DelayAll(d, jitter time.Duration) {
	c.t.Helper()
	for i := range c.Members {
		for j := range c.Members {
			if i != j {
				c.Delay(i, j, d, jitter)
			}
		}
	}
}

// DropRate makes the link from member from to member to lossy. See Proxy.DropRate.
func (c *Cluster) DropRate(from, to int, p float64) {
	c.t.Helper()
	c.faults(from, to, func(px *Proxy, from, to uint64) { px.DropRate(from, to, p) })
}

// ProxyStats sums the traffic counters of every member's proxy, per pair of member ids
// (nil without Options.PeerProxy).
func (c *Cluster) ProxyStats() map[Pair]PairStats {
	if !c.opts.PeerProxy {
		return nil
	}
	out := map[Pair]PairStats{}
	for _, m := range c.Members {
		for k, v := range m.proxy.Stats() {
			s := out[k]
			s.Bytes += v.Bytes
			s.Conns += v.Conns
			s.Cut += v.Cut
			out[k] = s
		}
	}
	return out
}

// Pause stops the member's process with SIGSTOP (process mode only): it keeps its sockets
// but does nothing until Resume. Stop, Kill and Close work on a paused member.
func (m *Member) Pause() {
	m.c.t.Helper()
	if m.proc == nil {
		m.c.t.Fatalf("Pause of member %s: not a running process member", m.Name)
	}
	if err := m.proc.signal(syscall.SIGSTOP); err != nil {
		m.c.t.Fatalf("Pause of member %s: %v", m.Name, err)
	}
}

// Resume continues a paused member's process with SIGCONT.
func (m *Member) Resume() {
	m.c.t.Helper()
	if m.proc == nil {
		m.c.t.Fatalf("Resume of member %s: not a running process member", m.Name)
	}
	if err := m.proc.signal(syscall.SIGCONT); err != nil {
		m.c.t.Fatalf("Resume of member %s: %v", m.Name, err)
	}
}
