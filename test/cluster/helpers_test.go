package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/ordo-db/ordo/internal/testcluster"
)

// callTimeout bounds every single client call made by these tests, except the writers' puts.
const callTimeout = 15 * time.Second

// putTimeout bounds one put of a load writer; a put that runs out is "unknown".
const putTimeout = 5 * time.Second

// longTests reports whether the long variants were asked for (ORDO_LONG_TESTS=1).
func longTests() bool { return os.Getenv("ORDO_LONG_TESTS") == "1" }

// pick returns short in the default run and long with ORDO_LONG_TESTS=1.
func pick[T any](short, long T) T {
	if longTests() {
		return long
	}
	return short
}

// newRand returns a random source whose seed is logged; ORDO_TEST_SEED replays a run.
func newRand(t testing.TB) *rand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("ORDO_TEST_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("ORDO_TEST_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("random seed %d (set ORDO_TEST_SEED to replay)", seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// ctx returns a context for one client call; it is canceled when the test ends at the latest.
func ctx(t testing.TB) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), callTimeout)
	t.Cleanup(cancel)
	return c
}

// newClient builds a client on eps with cfg's other fields as given; it is closed when the test
// ends.
func newClient(t testing.TB, eps []string, cfg clientv3.Config) *clientv3.Client {
	t.Helper()
	cfg.Endpoints = eps
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// waitFor polls cond until it holds or timeout passes. It waits on a ticker, never a bare
// sleep standing in for the condition.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	testcluster.WaitFor(t, timeout, what, cond)
}

// leader waits for an agreed leader among the running members.
func leader(t testing.TB, c *testcluster.Cluster, timeout time.Duration) int {
	t.Helper()
	lead, err := c.Leader(timeout)
	if err != nil {
		t.Fatalf("leader: %v", err)
	}
	return lead
}

// restartAll restarts the given stopped members concurrently (a member that needs a quorum to
// become ready must not wait for the others one by one).
func restartAll(t testing.TB, ms ...*testcluster.Member) {
	t.Helper()
	errs := make([]error, len(ms))
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = m.Restart()
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("restart: %v", err)
	}
}

func mustPut(t testing.TB, kv clientv3.KV, key, val string) *clientv3.PutResponse {
	t.Helper()
	resp, err := kv.Put(ctx(t), key, val)
	if err != nil {
		t.Fatalf("put %q: %v", key, err)
	}
	return resp
}

func mustGet(t testing.TB, kv clientv3.KV, key string, opts ...clientv3.OpOption) *clientv3.GetResponse {
	t.Helper()
	resp, err := kv.Get(ctx(t), key, opts...)
	if err != nil {
		t.Fatalf("get %q: %v", key, err)
	}
	return resp
}

// isErr and errCode compare client errors with etcd's errors (see testcluster.IsErr).
var (
	isErr   = testcluster.IsErr
	errCode = testcluster.ErrCode
)

// sameKVs fails unless a and b hold the same keys with the same values and revisions.
func sameKVs(t testing.TB, what string, a, b []*mvccpb.KeyValue) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("%s: %d kvs vs %d kvs", what, len(a), len(b))
	}
	for i := range a {
		x, y := a[i], b[i]
		if string(x.Key) != string(y.Key) || string(x.Value) != string(y.Value) ||
			x.CreateRevision != y.CreateRevision || x.ModRevision != y.ModRevision || x.Version != y.Version || x.Lease != y.Lease {
			t.Fatalf("%s: kv %d differs: %s vs %s", what, i, fmtKV(x), fmtKV(y))
		}
	}
}

func fmtKV(kv *mvccpb.KeyValue) string {
	return fmt.Sprintf("{key %q value %q create %d mod %d version %d lease %d}", kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease)
}

// ack is an acknowledged put.
type ack struct {
	val   string
	rev   int64 // the response header revision: the put's own revision
	start time.Time
	end   time.Time
}

// ledger records what load writers attempted and what was acknowledged. Every key is written
// at most once, so an acknowledged key must be present with exactly its acked value and
// revision, and any key present must hold the value that was attempted for it.
type ledger struct {
	mu     sync.Mutex
	tried  map[string]string
	acked  map[string]ack
	maxRev int64
	failed int
	errs   map[string]int
}

func newLedger() *ledger {
	return &ledger{tried: map[string]string{}, acked: map[string]ack{}, errs: map[string]int{}}
}

func (l *ledger) try(key, val string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.tried[key] = val
}

func (l *ledger) ack(key string, a ack) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.acked[key] = a
	l.maxRev = max(l.maxRev, a.rev)
}

func (l *ledger) fail(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failed++
	msg := err.Error()
	if i := strings.Index(msg, "dial tcp"); i >= 0 {
		msg = msg[:i] + "dial tcp ..."
	}
	l.errs[msg]++
}

// ackedSince counts acks of puts started after t0.
func (l *ledger) ackedSince(t0 time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, a := range l.acked {
		if a.start.After(t0) {
			n++
		}
	}
	return n
}

// firstAckSince returns when the first put started after t0 was acknowledged (zero if none).
func (l *ledger) firstAckSince(t0 time.Time) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	var first time.Time
	for _, a := range l.acked {
		if a.start.After(t0) && (first.IsZero() || a.end.Before(first)) {
			first = a.end
		}
	}
	return first
}

func (l *ledger) numAcked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

func (l *ledger) highestRev() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.maxRev
}

func (l *ledger) summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []string
	for e, n := range l.errs {
		errs = append(errs, fmt.Sprintf("%dx %s", n, e))
	}
	sort.Strings(errs)
	return fmt.Sprintf("%d attempted, %d acked, %d failed or unknown, highest acked revision %d; errors: %v",
		len(l.tried), len(l.acked), l.failed, l.maxRev, errs)
}

// check fails unless kvs (a full range over the ledger's keys) hold every acked put with its
// value and revision, and nothing that was never attempted.
func (l *ledger) check(t testing.TB, what string, kvs []*mvccpb.KeyValue) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	got := make(map[string]*mvccpb.KeyValue, len(kvs))
	for _, kv := range kvs {
		k := string(kv.Key)
		got[k] = kv
		val, ok := l.tried[k]
		if !ok {
			t.Errorf("%s: key %q was never written: %s", what, k, fmtKV(kv))
			continue
		}
		if string(kv.Value) != val || kv.Version != 1 || kv.CreateRevision != kv.ModRevision {
			t.Errorf("%s: key %q written once with value %q holds %s", what, k, val, fmtKV(kv))
		}
	}
	var missing []string
	for k, a := range l.acked {
		kv, ok := got[k]
		if !ok {
			missing = append(missing, fmt.Sprintf("%s (acked at revision %d)", k, a.rev))
			continue
		}
		if string(kv.Value) != a.val || kv.ModRevision != a.rev {
			t.Errorf("%s: key %q acked with value %q at revision %d holds %s", what, k, a.val, a.rev, fmtKV(kv))
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		t.Errorf("%s: %d of %d acknowledged puts lost, e.g. %v", what, len(missing), len(l.acked), missing[:min(len(missing), 10)])
	}
	if t.Failed() {
		t.FailNow()
	}
}

// load is a set of goroutines putting distinct keys until stopped.
type load struct {
	l       *ledger
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	once    sync.Once
	started time.Time
	puts    atomic.Int64
}

// startLoad starts n writers putting keys under prefix through cli; stopped when the test ends
// at the latest. Puts that fail or time out are retried with a new key; they are unknown.
func startLoad(t testing.TB, cli *clientv3.Client, prefix string, n int, l *ledger) *load {
	t.Helper()
	base, cancel := context.WithCancel(context.Background())
	ld := &load{l: l, cancel: cancel, started: time.Now()}
	for w := 0; w < n; w++ {
		ld.wg.Add(1)
		go func() {
			defer ld.wg.Done()
			backoff := time.NewTimer(0)
			defer backoff.Stop()
			for i := 0; base.Err() == nil; i++ {
				key := fmt.Sprintf("%sw%d/%08d", prefix, w, i)
				val := fmt.Sprintf("v-%d-%d-%d", w, i, time.Now().UnixNano())
				l.try(key, val)
				start := time.Now()
				cctx, ccancel := context.WithTimeout(base, putTimeout)
				resp, err := cli.Put(cctx, key, val)
				ccancel()
				ld.puts.Add(1)
				if err == nil {
					l.ack(key, ack{val: val, rev: resp.Header.Revision, start: start, end: time.Now()})
					continue
				}
				if base.Err() != nil {
					return
				}
				l.fail(err)
				// Fast failures (a dead endpoint) must not spin: back off a little.
				backoff.Reset(20 * time.Millisecond)
				select {
				case <-backoff.C:
				case <-base.Done():
					return
				}
			}
		}()
	}
	t.Cleanup(ld.stop)
	return ld
}

// stop stops the writers and waits for them; puts in flight become unknown.
func (ld *load) stop() {
	ld.once.Do(func() {
		ld.cancel()
		ld.wg.Wait()
	})
}

// waitAcked waits until at least n puts started after t0 were acknowledged.
func waitAcked(t testing.TB, l *ledger, t0 time.Time, n int, timeout time.Duration, what string) {
	t.Helper()
	waitFor(t, timeout, what, func() (bool, error) {
		if l.ackedSince(t0) >= n {
			return true, nil
		}
		return false, errors.New(l.summary())
	})
}

// rangeAll reads every key under prefix through cli (linearizable unless opts say otherwise).
func rangeAll(t testing.TB, cli *clientv3.Client, prefix string, opts ...clientv3.OpOption) *clientv3.GetResponse {
	t.Helper()
	return mustGet(t, cli, prefix, append([]clientv3.OpOption{clientv3.WithPrefix()}, opts...)...)
}

// checkMembers reads prefix linearizably through each running member on its own and checks
// the ledger against each; then all members must return the same data at one revision (puts
// that timed out may still be applied in between). Returns the highest header revision seen.
func checkMembers(t testing.TB, c *testcluster.Cluster, prefix string, l *ledger) int64 {
	t.Helper()
	var rev int64
	for i, m := range c.Members {
		if !m.Running() {
			continue
		}
		resp := rangeAll(t, m.Client(), prefix)
		l.check(t, fmt.Sprintf("member %d", i), resp.Kvs)
		rev = max(rev, resp.Header.Revision)
	}
	var first []*mvccpb.KeyValue
	for i, m := range c.Members {
		if !m.Running() {
			continue
		}
		resp := rangeAll(t, m.Client(), prefix, clientv3.WithRev(rev))
		if first == nil {
			first = resp.Kvs
			continue
		}
		sameKVs(t, fmt.Sprintf("member %d vs the first member at revision %d", i, rev), resp.Kvs, first)
	}
	return rev
}

// ctlRunner returns a function that runs "ordo ctl" (etcdctl) with args against c's members
// (all of them, or the ones listed) and returns its combined output.
func ctlRunner(t *testing.T, c *testcluster.Cluster, members ...int) func(args ...string) (string, error) {
	bin := testcluster.Binary(t)
	if len(members) == 0 {
		for i := range c.Members {
			members = append(members, i)
		}
	}
	var eps []string
	for _, i := range members {
		eps = append(eps, c.Members[i].ClientURL)
	}
	return func(args ...string) (string, error) {
		t.Helper()
		cctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		cmd := exec.CommandContext(cctx, bin, append([]string{"ctl", "--endpoints=" + strings.Join(eps, ","), "--command-timeout=10s"}, args...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
}
