package check

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Config describes one checking run.
type Config struct {
	// Endpoints are the cluster's client URLs.
	Endpoints []string
	// Duration bounds the workload phase; Ops bounds the number of operations (0 = no bound).
	// The run stops at whichever comes first.
	Duration time.Duration
	Ops      int
	// Clients is the number of concurrent workers; Conns the number of client connections
	// they share (each connected to every endpoint).
	Clients int
	Conns   int
	// Keys is the size of the key space the workers contend on.
	Keys int
	// Watchers is the number of watchers started at random moments of the run.
	Watchers int
	// Prefix is where the run's keys live; a fresh sub-prefix is added per run.
	Prefix string
	// OpTimeout bounds each operation; a write that times out has an unknown outcome.
	OpTimeout time.Duration
	// CheckTimeout bounds the linearizability search (an exhausted search is reported as
	// "unknown", not as a violation).
	CheckTimeout time.Duration
	// SettleTimeout bounds the final phase: reading the cluster's change log and waiting
	// for watchers to catch up once the workload is over.
	SettleTimeout time.Duration
	// Exclusive declares that no other client writes to the cluster during the run, which
	// enables the check that revisions are contiguous.
	Exclusive bool
	// Seed seeds the workload's choices (0 picks one from the clock).
	Seed int64
	// Logger receives progress; nil logs nothing.
	Logger *zap.Logger
	// VisualizePath, if set, receives porcupine's HTML visualisation of the history.
	VisualizePath string
	// VisualizeFailurePath, if set, receives the visualisation only when the history is not
	// linearizable.
	VisualizeFailurePath string
}

func (c *Config) defaults() {
	if c.Duration <= 0 && c.Ops <= 0 {
		c.Duration = 10 * time.Second
	}
	if c.Clients <= 0 {
		c.Clients = 8
	}
	if c.Conns <= 0 {
		c.Conns = 2
	}
	if c.Keys <= 0 {
		c.Keys = 8
	}
	if c.Prefix == "" {
		c.Prefix = "/ordo-check/"
	}
	if c.OpTimeout <= 0 {
		c.OpTimeout = 3 * time.Second
	}
	if c.CheckTimeout <= 0 {
		c.CheckTimeout = 2 * time.Minute
	}
	if c.SettleTimeout <= 0 {
		c.SettleTimeout = time.Minute
	}
	if c.Seed == 0 {
		c.Seed = time.Now().UnixNano()
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
}

// recorder collects the history; its clock is the run's monotonic clock.
type recorder struct {
	start  time.Time
	mu     sync.Mutex
	ops    []porcupine.Operation
	past   []pastRead
	maxRev int64 // the highest revision any response carried
}

// pastRead is a read at a past revision; it is checked against the change log.
type pastRead struct {
	Rev int64
	KVs []kvOut
	Err string // set when the read failed in a way that is itself a violation
}

func (r *recorder) now() int64 { return int64(time.Since(r.start)) }

func (r *recorder) add(client int, in input, call int64, out output) {
	ret := r.now()
	if out.Unknown {
		ret = math.MaxInt64 // it may take effect at any moment after the call
	}
	r.mu.Lock()
	r.ops = append(r.ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret})
	if !out.Unknown && out.Revision > r.maxRev {
		r.maxRev = out.Revision
	}
	r.mu.Unlock()
}

// seenRev is the highest revision a response carried so far.
func (r *recorder) seenRev() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.maxRev
}

// leases is the set of lease ids granted during the run (whatever the outcome).
type leases struct {
	mu  sync.Mutex
	ids []int64
}

func (l *leases) add(id int64) {
	l.mu.Lock()
	l.ids = append(l.ids, id)
	l.mu.Unlock()
}

func (l *leases) pick(rng *rand.Rand) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.ids) == 0 {
		return 0
	}
	return l.ids[rng.Intn(len(l.ids))]
}

func (l *leases) all() []int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]int64(nil), l.ids...)
}

// Run runs the workload against cfg.Endpoints until ctx ends, the duration passes or the
// operation budget is spent, then checks the history. Faults may be injected meanwhile; the
// cluster must be whole again (a quorum serving, every member reachable) once ctx or the
// duration ends, because the final phase reads the cluster's change log. It returns an
// error only if the run could not be carried out; what the checks found is in the Report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.defaults()
	lg := cfg.Logger
	rep := &Report{Seed: cfg.Seed, Kinds: map[string]*KindStats{}}

	clients := make([]*clientv3.Client, cfg.Conns)
	for i := range clients {
		cli, err := clientv3.New(clientv3.Config{
			Endpoints:            cfg.Endpoints,
			DialTimeout:          5 * time.Second,
			DialKeepAliveTime:    2 * time.Second,
			DialKeepAliveTimeout: 2 * time.Second,
			Logger:               zap.NewNop(),
		})
		if err != nil {
			return nil, fmt.Errorf("connect to %v: %w", cfg.Endpoints, err)
		}
		defer cli.Close()
		clients[i] = cli
	}

	rng := rand.New(rand.NewSource(cfg.Seed))
	prefix := fmt.Sprintf("%s%x/", strings.TrimSuffix(cfg.Prefix, "/")+"/", rng.Uint32())
	rep.Prefix = prefix
	keys := make([]string, cfg.Keys)
	for i := range keys {
		keys[i] = fmt.Sprintf("%sk%03d", prefix, i)
	}

	// The starting revision: every event of the run lies above it.
	startRev, err := currentRevision(ctx, clients[0], cfg.SettleTimeout)
	if err != nil {
		return nil, fmt.Errorf("read the starting revision: %w", err)
	}
	rep.StartRevision = startRev
	lg.Info("check workload starting", zap.String("prefix", prefix), zap.Int64("start-revision", startRev),
		zap.Int64("seed", cfg.Seed), zap.Int("clients", cfg.Clients))

	rec := &recorder{start: time.Now()}
	var ls leases
	runCtx, cancel := context.WithCancel(ctx)
	if cfg.Duration > 0 {
		runCtx, cancel = context.WithTimeout(ctx, cfg.Duration)
	}
	defer cancel()

	var budget chan struct{}
	if cfg.Ops > 0 {
		budget = make(chan struct{}, cfg.Ops)
		for i := 0; i < cfg.Ops; i++ {
			budget <- struct{}{}
		}
		close(budget)
	}

	ws := newWatchSet(clients, prefix, startRev)
	defer ws.stopAll()
	var starters, workers sync.WaitGroup
	// Watchers start at random moments of the run: from the start, or from "now".
	for i := 0; i < cfg.Watchers; i++ {
		delay := time.Duration(rng.Int63n(int64(maxDur(cfg.Duration, time.Second)) * 3 / 4))
		fromStart := i%2 == 0
		prevKV := i%3 == 0
		starters.Add(1)
		go func() {
			defer starters.Done()
			t := time.NewTimer(delay)
			defer t.Stop()
			select {
			case <-t.C:
			case <-runCtx.Done():
			}
			ws.start(ctx, i, fromStart, prevKV)
		}()
	}

	for c := 0; c < cfg.Clients; c++ {
		wrng := rand.New(rand.NewSource(cfg.Seed + int64(c) + 1))
		w := &worker{id: c, cli: clients[c%len(clients)], rng: wrng, keys: keys, rec: rec, leases: &ls,
			timeout: cfg.OpTimeout, leaseBase: wrng.Int63n(1<<40) << 16, startRev: startRev}
		workers.Add(1)
		go func() {
			defer workers.Done()
			for runCtx.Err() == nil {
				if budget != nil {
					if _, ok := <-budget; !ok {
						cancel() // the budget is spent: the run is over
						return
					}
				}
				w.one(runCtx)
			}
		}()
	}
	workers.Wait()
	starters.Wait()
	rep.WorkloadTime = time.Since(rec.start)

	// Final phase: the cluster is whole again. Read every key once more (so the final state
	// is part of the checked history), read the change log, and let watchers catch up.
	settle, settleCancel := context.WithTimeout(context.Background(), cfg.SettleTimeout)
	defer settleCancel()
	fw := &worker{id: cfg.Clients, cli: clients[0], keys: keys, rec: rec, timeout: cfg.SettleTimeout}
	endRev, err := fw.finalList(settle)
	if err != nil {
		return nil, fmt.Errorf("final read of %s: %w", prefix, err)
	}
	rep.EndRevision = endRev
	log, sentRev, err := readLog(settle, clients[0], prefix, startRev+1, endRev)
	if err != nil {
		return nil, fmt.Errorf("read the change log of %s: %w", prefix, err)
	}
	ws.waitFor(settle, sentRev)
	ws.stopAll()

	rec.mu.Lock()
	history := rec.ops
	rec.mu.Unlock()

	rep.countOps(history)
	rep.LogEvents = len(log)
	rep.checkLog(log, history, startRev, endRev, cfg.Exclusive)
	rep.checkWatchers(ws.snapshot(), log, endRev)
	rec.mu.Lock()
	rep.checkPastReads(rec.past, log)
	rec.mu.Unlock()
	history = resolveUnknown(prefix, history, log)

	checkStart := time.Now()
	model := newModel(startRev)
	// The plain search is much faster than the verbose one, which also tracks the longest
	// linearizable prefixes for the visualisation: run that only when it is wanted.
	res := porcupine.CheckOperationsTimeout(model, history, cfg.CheckTimeout)
	rep.CheckTime = time.Since(checkStart)
	rep.Linearizable = string(res)
	rep.HistoryOps = len(history)
	if res == porcupine.Illegal {
		rep.addViolation("linearizability", "the history is not linearizable (seed %d)", cfg.Seed)
	}
	if path := cfg.VisualizePath; path != "" || (res == porcupine.Illegal && cfg.VisualizeFailurePath != "") {
		if path == "" {
			path = cfg.VisualizeFailurePath
		}
		_, info := porcupine.CheckOperationsVerbose(model, history, cfg.CheckTimeout)
		if err := porcupine.VisualizePath(model, info, path); err != nil {
			lg.Warn("cannot write the visualisation", zap.Error(err))
		}
	}

	// Clean up: revoke the run's leases and delete its keys (best effort).
	cleanCtx, cleanCancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cleanCancel()
	for _, id := range ls.all() {
		_, _ = clients[0].Revoke(cleanCtx, clientv3.LeaseID(id))
	}
	_, _ = clients[0].Delete(cleanCtx, prefix, clientv3.WithPrefix())
	return rep, nil
}

func maxDur(a, b time.Duration) time.Duration {
	if a > b {
		return a
	}
	return b
}

// currentRevision reads the store revision with a linearizable read, retrying until timeout.
func currentRevision(ctx context.Context, cli *clientv3.Client, timeout time.Duration) (int64, error) {
	deadline := time.Now().Add(timeout)
	for {
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		resp, err := cli.Get(rctx, "\x00", clientv3.WithCountOnly())
		cancel()
		if err == nil {
			return resp.Header.Revision, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return 0, err
		}
	}
}

// worker is one client issuing operations one at a time.
type worker struct {
	id        int
	cli       *clientv3.Client
	rng       *rand.Rand
	keys      []string
	rec       *recorder
	leases    *leases
	timeout   time.Duration
	seq       int
	leaseBase int64
	own       []int64 // leases this worker granted and has not revoked
	startRev  int64
	lastSeen  map[string]string // last value this worker read for a key (for cas)
}

func (w *worker) value() string {
	w.seq++
	return fmt.Sprintf("c%d-%d", w.id, w.seq)
}

// one runs one randomly chosen operation and records it.
func (w *worker) one(ctx context.Context) {
	key := w.keys[w.rng.Intn(len(w.keys))]
	p := w.rng.Intn(100)
	switch {
	case p < 30:
		w.put(ctx, key, 0)
	case p < 37:
		w.put(ctx, key, w.leases.pick(w.rng))
	case p < 52:
		w.get(ctx, key)
	case p < 57:
		w.getPast(ctx)
	case p < 62:
		w.list(ctx)
	case p < 77:
		w.cas(ctx, key)
	case p < 87:
		w.del(ctx, key)
	case p < 92:
		w.grant(ctx)
	default:
		if id := w.leases.pick(w.rng); id != 0 {
			w.revoke(ctx, id)
		} else {
			w.grant(ctx)
		}
	}
}

// classify turns a write's error into its output: a known failure, or an unknown outcome.
func classify(err error) output {
	if errors.Is(rpctypes.Error(err), rpctypes.ErrLeaseNotFound) {
		return output{LeaseNotFound: true}
	}
	return output{Unknown: true}
}

func (w *worker) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	// Operations are not cut short when the run ends: an operation in flight finishes or
	// times out on its own, so no acknowledged write goes unrecorded.
	return context.WithTimeout(context.WithoutCancel(ctx), w.timeout)
}

func (w *worker) put(ctx context.Context, key string, lease int64) {
	in := input{Kind: opPut, Key: key, Value: w.value(), Lease: lease, ClientID: w.id}
	call := w.rec.now()
	octx, cancel := w.opCtx(ctx)
	var opts []clientv3.OpOption
	if lease != 0 {
		opts = append(opts, clientv3.WithLease(clientv3.LeaseID(lease)))
	}
	resp, err := w.cli.Put(octx, key, in.Value, opts...)
	cancel()
	if err != nil {
		w.rec.add(w.id, in, call, classify(err))
		return
	}
	w.rec.add(w.id, in, call, output{Revision: resp.Header.Revision})
}

func kvsOut(kvs []*mvccpb.KeyValue) []kvOut {
	out := make([]kvOut, 0, len(kvs))
	for _, kv := range kvs {
		out = append(out, kvOut{Key: string(kv.Key), Value: string(kv.Value), CreateRevision: kv.CreateRevision,
			ModRevision: kv.ModRevision, Version: kv.Version, Lease: kv.Lease})
	}
	return out
}

func (w *worker) get(ctx context.Context, key string) {
	in := input{Kind: opGet, Key: key, ClientID: w.id}
	call := w.rec.now()
	octx, cancel := w.opCtx(ctx)
	resp, err := w.cli.Get(octx, key)
	cancel()
	if err != nil {
		return // a failed read has no effect
	}
	w.remember(key, resp.Kvs)
	w.rec.add(w.id, in, call, output{Revision: resp.Header.Revision, KVs: kvsOut(resp.Kvs)})
}

// getPast reads every key at a revision some response already carried: the read must
// succeed (the revision is neither compacted, in an exclusive run, nor in the future of a
// linearizable read) and match the change log at that revision.
func (w *worker) getPast(ctx context.Context) {
	top := w.rec.seenRev()
	if top <= w.startRev {
		return
	}
	rev := w.startRev + 1 + w.rng.Int63n(top-w.startRev)
	start, end := w.keyRange()
	octx, cancel := w.opCtx(ctx)
	resp, err := w.cli.Get(octx, start, clientv3.WithRange(end), clientv3.WithRev(rev), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	cancel()
	pr := pastRead{Rev: rev}
	switch {
	case err == nil:
		pr.KVs = kvsOut(resp.Kvs)
	case errors.Is(rpctypes.Error(err), rpctypes.ErrFutureRev):
		pr.Err = fmt.Sprintf("revision %d, already acknowledged to a client, is a future revision for a linearizable read", rev)
	default:
		return // compacted (a cluster with auto-compaction), or unavailable
	}
	w.rec.mu.Lock()
	w.rec.past = append(w.rec.past, pr)
	w.rec.mu.Unlock()
}

func (w *worker) remember(key string, kvs []*mvccpb.KeyValue) {
	if w.lastSeen == nil {
		w.lastSeen = map[string]string{}
	}
	if len(kvs) == 0 {
		w.lastSeen[key] = ""
		return
	}
	w.lastSeen[key] = string(kvs[0].Value)
}

func (w *worker) list(ctx context.Context) {
	in := input{Kind: opList, ClientID: w.id}
	start, end := w.keyRange()
	call := w.rec.now()
	octx, cancel := w.opCtx(ctx)
	resp, err := w.cli.Get(octx, start, clientv3.WithRange(end), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	cancel()
	if err != nil {
		return
	}
	w.rec.add(w.id, in, call, output{Revision: resp.Header.Revision, KVs: kvsOut(resp.Kvs)})
}

// finalList reads the whole prefix once the workload is over, retrying until it succeeds,
// and records it; it returns the revision it read at.
func (w *worker) finalList(ctx context.Context) (int64, error) {
	start, end := w.keyRange()
	for {
		call := w.rec.now()
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		resp, err := w.cli.Get(rctx, start, clientv3.WithRange(end), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
		cancel()
		if err == nil {
			w.rec.add(w.id, input{Kind: opList, ClientID: w.id}, call, output{Revision: resp.Header.Revision, KVs: kvsOut(resp.Kvs)})
			return resp.Header.Revision, nil
		}
		if ctx.Err() != nil {
			return 0, err
		}
	}
}

func (w *worker) cas(ctx context.Context, key string) {
	if w.lastSeen == nil {
		w.lastSeen = map[string]string{}
	}
	expect := w.lastSeen[key]
	in := input{Kind: opCAS, Key: key, Value: w.value(), Expect: expect, ClientID: w.id}
	var cmp clientv3.Cmp
	if expect == "" {
		cmp = clientv3.Compare(clientv3.Version(key), "=", 0)
	} else {
		cmp = clientv3.Compare(clientv3.Value(key), "=", expect)
	}
	call := w.rec.now()
	octx, cancel := w.opCtx(ctx)
	resp, err := w.cli.Txn(octx).If(cmp).Then(clientv3.OpPut(key, in.Value)).Else(clientv3.OpGet(key)).Commit()
	cancel()
	if err != nil {
		w.rec.add(w.id, in, call, output{Unknown: true})
		return
	}
	out := output{Revision: resp.Header.Revision, Succeeded: resp.Succeeded}
	if resp.Succeeded {
		w.lastSeen[key] = in.Value
	} else if len(resp.Responses) == 1 {
		if r := resp.Responses[0].GetResponseRange(); r != nil {
			out.KVs = kvsOut(r.Kvs)
			w.remember(key, r.Kvs)
		}
	}
	w.rec.add(w.id, in, call, out)
}

// del deletes key in a transaction that also writes a marker key named after the operation,
// so the change log tells which delete took effect at which revision, even for a delete whose
// outcome the client never learnt.
func (w *worker) del(ctx context.Context, key string) {
	id := w.value()
	in := input{Kind: opDelete, Key: key, Value: id, ClientID: w.id}
	call := w.rec.now()
	octx, cancel := w.opCtx(ctx)
	resp, err := w.cli.Txn(octx).Then(clientv3.OpDelete(key), clientv3.OpPut(markerKey(key, id), "")).Commit()
	cancel()
	if err != nil {
		w.rec.add(w.id, in, call, output{Unknown: true})
		return
	}
	out := output{Revision: resp.Header.Revision}
	if len(resp.Responses) > 0 {
		if d := resp.Responses[0].GetResponseDeleteRange(); d != nil {
			out.Deleted = d.Deleted
		}
	}
	w.rec.add(w.id, in, call, out)
}

// markerKey is the key a delete of key writes alongside: under the run's prefix, outside
// the range of the keys the workload reads.
func markerKey(key, id string) string {
	return key[:strings.LastIndexByte(key, '/')+1] + "m/" + id
}

// isMarker reports whether key is a delete marker, and the operation it names.
func isMarker(prefix, key string) (string, bool) {
	return strings.CutPrefix(key, prefix+"m/")
}

// keyRange is the range [start, end) holding the workload's keys (not the markers).
func (w *worker) keyRange() (string, string) {
	prefix := w.keys[0][:strings.LastIndexByte(w.keys[0], '/')+1]
	return prefix + "k", prefix + "l"
}

// maxOwnLeases bounds the leases each worker keeps granted: the model's state (and the
// linearizability search) grows with the number of live leases.
const maxOwnLeases = 4

func (w *worker) grant(ctx context.Context) {
	if len(w.own) >= maxOwnLeases {
		id := w.own[0]
		w.own = w.own[1:]
		w.revoke(ctx, id)
		return
	}
	w.seq++
	id := w.leaseBase + int64(w.seq)
	w.leases.add(id)
	w.own = append(w.own, id)
	in := input{Kind: opGrant, Lease: id, ClientID: w.id}
	call := w.rec.now()
	octx, cancel := w.opCtx(ctx)
	// Leases outlive the run (they are revoked at its end), so none expires mid-check. The id
	// is the client's choice, which clientv3's Grant does not offer: use the raw service.
	_, err := pb.NewLeaseClient(w.cli.ActiveConnection()).LeaseGrant(octx, &pb.LeaseGrantRequest{ID: id, TTL: 600})
	cancel()
	if err != nil {
		w.rec.add(w.id, in, call, output{Unknown: true})
		return
	}
	w.rec.add(w.id, in, call, output{})
}

func (w *worker) revoke(ctx context.Context, id int64) {
	for i, o := range w.own {
		if o == id {
			w.own = append(w.own[:i:i], w.own[i+1:]...)
			break
		}
	}
	in := input{Kind: opRevoke, Lease: id, ClientID: w.id}
	call := w.rec.now()
	octx, cancel := w.opCtx(ctx)
	// The raw service, not clientv3's Revoke: clientv3 retries a revocation whose connection
	// broke, so a revocation that took effect could come back as "lease not found".
	_, err := pb.NewLeaseClient(w.cli.ActiveConnection()).LeaseRevoke(octx, &pb.LeaseRevokeRequest{ID: id})
	cancel()
	if err != nil {
		w.rec.add(w.id, in, call, classify(err))
		return
	}
	w.rec.add(w.id, in, call, output{})
}

// sortedKeys returns the keys of m in order.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
