// Package testcluster starts real Ordo clusters on free loopback ports for tests: members run
// in-process (fast, shared goroutine leak checks) or as separate ordo processes (for SIGKILL and
// restart tests). Clients are etcd's own clientv3.
package testcluster

import (
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
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
}

// Cluster is a set of members started together.
type Cluster struct {
	t       testing.TB
	opts    Options
	Members []*Member
	mu      sync.Mutex
	clients []*clientv3.Client
}

// Member is one member of a test cluster.
type Member struct {
	c         *Cluster
	Name      string
	DataDir   string
	ClientURL string
	PeerURL   string
	args      []string

	srv  *server.Member // in-process
	proc *process       // process mode
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
	for i := 0; i < n; i++ {
		m := &Member{
			c:         c,
			Name:      fmt.Sprintf("m%d", i),
			DataDir:   filepath.Join(t.TempDir(), "data.ordo"),
			ClientURL: fmt.Sprintf("http://127.0.0.1:%d", ports[2*i]),
			PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1]),
		}
		initial = append(initial, m.Name+"="+m.PeerURL)
		c.Members = append(c.Members, m)
	}
	for _, m := range c.Members {
		m.args = append([]string{
			"--name", m.Name,
			"--data-dir", m.DataDir,
			"--listen-client-urls", m.ClientURL,
			"--advertise-client-urls", m.ClientURL,
			"--listen-peer-urls", m.PeerURL,
			"--initial-advertise-peer-urls", m.PeerURL,
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-state", "new",
			"--heartbeat-interval", "50",
			"--election-timeout", "500",
		}, opts.Args...)
	}
	t.Cleanup(c.Close)
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
	return c
}

func (m *Member) start() error {
	if m.c.opts.Process {
		p, err := startProcess(m.c.t, m.Name, m.args, m.c.opts.Quiet)
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
	var wg sync.WaitGroup
	for _, m := range c.Members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.Stop()
		}()
	}
	wg.Wait()
}
