package abuse_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/ordo-db/ordo/internal/testcluster"
)

// memLimit is the memory a member must live within: its peak resident set size must stay
// below it, and it is the limit of the memory cgroup the member runs in when one can be made.
const memLimit = 1 << 30

// callTimeout bounds a single client call made by the checks of these tests.
const callTimeout = 15 * time.Second

// longTests reports whether the long variants were asked for (ORDO_LONG_TESTS=1).
func longTests() bool { return os.Getenv("ORDO_LONG_TESTS") == "1" }

// pick returns short in the default run and long with ORDO_LONG_TESTS=1.
func pick[T any](short, long T) T {
	if longTests() {
		return long
	}
	return short
}

// baseArgs keep the store and the raft log small while values are overwritten again and again
// (the tests do not rely on the backend quota).
var baseArgs = []string{"--quota-backend-bytes", "-1", "--snapshot-count", "500", "--snapshot-catchup-entries", "100"}

// newCluster starts n members as processes, each watched by a memory monitor (and run in a
// 1 GiB memory cgroup where possible).
func newCluster(t *testing.T, n int, args ...string) (*testcluster.Cluster, []*memWatch) {
	t.Helper()
	c := testcluster.New(t, n, testcluster.Options{Process: true, Quiet: true, Args: append(slices.Clone(baseArgs), args...)})
	var ws []*memWatch
	for _, m := range c.Members {
		ws = append(ws, watchMemory(t, m))
	}
	return c, ws
}

// ctx returns a context for one check call; it is canceled when the test ends at the latest.
func ctx(t testing.TB) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), callTimeout)
	t.Cleanup(cancel)
	return c
}

// newClient connects to the given members with clientv3; cfg's other fields are used as given.
// It is closed when the test ends.
func newClient(t testing.TB, cfg clientv3.Config, ms ...*testcluster.Member) *clientv3.Client {
	t.Helper()
	for _, m := range ms {
		cfg.Endpoints = append(cfg.Endpoints, m.ClientURL)
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	cfg.Logger = zap.NewNop()
	cli, err := clientv3.New(cfg)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	testcluster.WaitFor(t, timeout, what, cond)
}

// memWatch follows one member process's memory.
type memWatch struct {
	m      *testcluster.Member
	pid    int
	cgroup *memCgroup // nil when the member runs without a memory limit
}

// watchMemory starts following m's memory and, when possible, moves it into a memory cgroup
// limited to memLimit, removed again when the test ends.
func watchMemory(t *testing.T, m *testcluster.Member) *memWatch {
	t.Helper()
	pid := m.Pid()
	if pid == 0 {
		t.Fatalf("member %s: no process id (not in process mode?)", m.Name)
	}
	w := &memWatch{m: m, pid: pid}
	cg, err := newMemCgroup(pid, memLimit)
	if err != nil {
		t.Logf("member %s runs without a memory cgroup: %v", m.Name, err)
		return w
	}
	w.cgroup = cg
	t.Cleanup(func() {
		if err := cg.remove(); err != nil {
			t.Logf("remove memory cgroup %s: %v", cg.dir, err)
		}
	})
	return w
}

// procStatus returns a field of /proc/<pid>/status in bytes (for kB fields) or as text.
func procStatus(pid int, field string) (string, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "", fmt.Errorf("read process status: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), ":")
		if ok && name == field {
			return strings.TrimSpace(val), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read process status: %w", err)
	}
	return "", fmt.Errorf("process %d status has no %s", pid, field)
}

func procBytes(pid int, field string) (int64, error) {
	v, err := procStatus(pid, field)
	if err != nil {
		return 0, err
	}
	kb, err := strconv.ParseInt(strings.TrimSuffix(v, " kB"), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse %s %q: %w", field, v, err)
	}
	return kb << 10, nil
}

// peak returns the member's peak resident set size (VmHWM).
func (w *memWatch) peak() (int64, error) { return procBytes(w.pid, "VmHWM") }

// rss returns the member's current resident set size (VmRSS).
func (w *memWatch) rss() (int64, error) { return procBytes(w.pid, "VmRSS") }

// alive reports whether the member process still runs (and is not a zombie).
func (w *memWatch) alive() error {
	if err := syscall.Kill(w.pid, 0); err != nil {
		return fmt.Errorf("member %s (pid %d) is gone: %w", w.m.Name, w.pid, err)
	}
	st, err := procStatus(w.pid, "State")
	if err != nil {
		return err
	}
	if strings.HasPrefix(st, "Z") || strings.HasPrefix(st, "X") {
		return fmt.Errorf("member %s (pid %d) exited (state %s)", w.m.Name, w.pid, st)
	}
	return nil
}

// check fails unless the member is alive, serves a put and a linearizable get through a fresh
// client, and its peak resident set size stayed below memLimit. It returns the peak.
func (w *memWatch) check(t *testing.T) int64 {
	t.Helper()
	if err := w.alive(); err != nil {
		t.Fatalf("%v", err)
	}
	cli := newClient(t, clientv3.Config{}, w.m)
	key := fmt.Sprintf("/alive/%s/%s", t.Name(), w.m.Name)
	val := strconv.FormatInt(time.Now().UnixNano(), 10)
	if _, err := cli.Put(ctx(t), key, val); err != nil {
		t.Fatalf("member %s after the abuse: put: %v", w.m.Name, err)
	}
	g, err := cli.Get(ctx(t), key)
	if err != nil || len(g.Kvs) != 1 || string(g.Kvs[0].Value) != val {
		t.Fatalf("member %s after the abuse: get: %v %v", w.m.Name, g, err)
	}
	peak, err := w.peak()
	if err != nil {
		t.Fatalf("member %s: %v", w.m.Name, err)
	}
	rss, _ := w.rss()
	msg := fmt.Sprintf("member %s: peak RSS %s, RSS now %s", w.m.Name, mib(peak), mib(rss))
	if w.cgroup != nil {
		msg += ", " + w.cgroup.stats()
	}
	t.Log(msg)
	if peak >= memLimit {
		t.Fatalf("member %s: peak RSS %s is not below %s", w.m.Name, mib(peak), mib(memLimit))
	}
	return peak
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// memCgroup is a memory cgroup made for one member process.
type memCgroup struct {
	pid    int
	dir    string // the cgroup made for the member
	parent string // where the member is moved back to before dir is removed
	v2     bool
}

// newMemCgroup moves pid into a new child of this test process's own memory cgroup, limited
// to limit bytes. It fails (and changes nothing) unless that is possible: root, cgroup v1 with
// the memory controller mounted writable, or cgroup v2 with the memory controller available.
func newMemCgroup(pid int, limit int64) (*memCgroup, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("not running as root")
	}
	own, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("read own cgroup: %w", err)
	}
	var v1Path, v2Path string
	hasV2Path := false
	for _, line := range strings.Split(strings.TrimSpace(string(own)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if slices.Contains(strings.Split(parts[1], ","), "memory") {
			v1Path = parts[2]
		}
		if parts[0] == "0" && parts[1] == "" {
			v2Path, hasV2Path = parts[2], true
		}
	}
	cg := &memCgroup{pid: pid}
	limitFile := "memory.limit_in_bytes"
	switch {
	case v1Path != "" && isDir("/sys/fs/cgroup/memory"):
		cg.parent = filepath.Join("/sys/fs/cgroup/memory", v1Path)
	case hasV2Path && fileHas("/sys/fs/cgroup/cgroup.controllers", "memory"):
		cg.parent, cg.v2, limitFile = filepath.Join("/sys/fs/cgroup", v2Path), true, "memory.max"
	default:
		return nil, errors.New("no memory cgroup controller found")
	}
	cg.dir = filepath.Join(cg.parent, fmt.Sprintf("ordo-abuse-%d", pid))
	if err := os.Mkdir(cg.dir, 0o755); err != nil {
		return nil, fmt.Errorf("create cgroup: %w", err)
	}
	if err := os.WriteFile(filepath.Join(cg.dir, limitFile), []byte(strconv.FormatInt(limit, 10)), 0o644); err != nil {
		_ = os.Remove(cg.dir)
		return nil, fmt.Errorf("set cgroup memory limit: %w", err)
	}
	if err := os.WriteFile(filepath.Join(cg.dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
		_ = os.Remove(cg.dir)
		return nil, fmt.Errorf("move member into cgroup: %w", err)
	}
	return cg, nil
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

func fileHas(p, word string) bool {
	b, err := os.ReadFile(p)
	return err == nil && slices.Contains(strings.Fields(string(b)), word)
}

// stats describes the cgroup's memory accounting (page cache included).
func (cg *memCgroup) stats() string {
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(cg.dir, name))
		if err != nil {
			return "?"
		}
		return strings.TrimSpace(string(b))
	}
	if cg.v2 {
		return fmt.Sprintf("cgroup v2 limit %s: memory.peak %s, events %q", mib(memLimit), read("memory.peak"),
			strings.ReplaceAll(read("memory.events"), "\n", ", "))
	}
	maxUse, _ := strconv.ParseInt(read("memory.max_usage_in_bytes"), 10, 64)
	return fmt.Sprintf("cgroup v1 limit %s: max usage %s (page cache included), limit hit %s times", mib(memLimit), mib(maxUse), read("memory.failcnt"))
}

// remove moves the member (if it still runs) back to the parent cgroup and removes the cgroup.
func (cg *memCgroup) remove() error {
	if syscall.Kill(cg.pid, 0) == nil {
		// Best effort: the process may exit at any moment.
		_ = os.WriteFile(filepath.Join(cg.parent, "cgroup.procs"), []byte(strconv.Itoa(cg.pid)), 0o644)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := os.Remove(cg.dir)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		// The cgroup stays busy until the exiting process is reaped.
		time.Sleep(50 * time.Millisecond)
	}
}

// latencies collects durations from many goroutines.
type latencies struct {
	mu sync.Mutex
	ds []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.ds = append(l.ds, d)
	l.mu.Unlock()
}

// quantile returns the q-quantile (0..1) of the durations so far.
func (l *latencies) quantile(q float64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.ds) == 0 {
		return 0
	}
	s := slices.Clone(l.ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func (l *latencies) String() string {
	l.mu.Lock()
	n := len(l.ds)
	l.mu.Unlock()
	return fmt.Sprintf("%d ops, p50 %v, p99 %v, max %v", n, l.quantile(0.5).Round(time.Microsecond),
		l.quantile(0.99).Round(time.Microsecond), l.quantile(1).Round(time.Microsecond))
}

// errCounts counts client errors by their text.
type errCounts struct {
	mu sync.Mutex
	m  map[string]int
}

func (e *errCounts) add(err error) {
	msg := err.Error()
	e.mu.Lock()
	if e.m == nil {
		e.m = map[string]int{}
	}
	e.m[msg]++
	e.mu.Unlock()
}

func (e *errCounts) String() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.m) == 0 {
		return "none"
	}
	var out []string
	for msg, n := range e.m {
		out = append(out, fmt.Sprintf("%dx %q", n, msg))
	}
	slices.Sort(out)
	return strings.Join(out, "; ")
}
