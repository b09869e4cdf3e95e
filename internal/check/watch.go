package check

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// event is one change as a watcher (or the change log) saw it.
type event struct {
	Rev     int64
	Delete  bool
	Key     string
	Value   string
	Create  int64
	Version int64
	Lease   int64
	HasPrev bool
	Prev    kvOut
}

func toEvent(ev *clientv3.Event) event {
	e := event{Rev: ev.Kv.ModRevision, Delete: ev.Type == mvccpb.DELETE, Key: string(ev.Kv.Key)}
	if !e.Delete {
		e.Value, e.Create, e.Version, e.Lease = string(ev.Kv.Value), ev.Kv.CreateRevision, ev.Kv.Version, ev.Kv.Lease
	}
	if ev.PrevKv != nil {
		e.HasPrev = true
		p := ev.PrevKv
		e.Prev = kvOut{Key: string(p.Key), Value: string(p.Value), CreateRevision: p.CreateRevision,
			ModRevision: p.ModRevision, Version: p.Version, Lease: p.Lease}
	}
	return e
}

// watcherResult is what one watcher received.
type watcherResult struct {
	ID        int
	StartRev  int64
	PrevKV    bool
	Events    []event
	Compacted int64 // the compact revision, if the watch was cancelled by a compaction
	Err       string
}

// watchSet runs the run's watchers.
type watchSet struct {
	clients  []*clientv3.Client
	prefix   string
	startRev int64

	mu      sync.Mutex
	cond    *sync.Cond
	results []*watcherResult
	last    map[int]int64 // watcher -> revision of the last event received
	cancels []context.CancelFunc
	done    sync.WaitGroup
}

func newWatchSet(clients []*clientv3.Client, prefix string, startRev int64) *watchSet {
	ws := &watchSet{clients: clients, prefix: prefix, startRev: startRev, last: map[int]int64{}}
	ws.cond = sync.NewCond(&ws.mu)
	return ws
}

// start opens watcher id over the prefix, from the run's start revision or from the
// revision current now, and collects its events until stopAll.
func (ws *watchSet) start(ctx context.Context, id int, fromStart, prevKV bool) {
	cli := ws.clients[id%len(ws.clients)]
	rev := ws.startRev + 1
	if !fromStart {
		r, err := currentRevision(ctx, cli, 30*time.Second)
		if err != nil {
			ws.mu.Lock()
			ws.results = append(ws.results, &watcherResult{ID: id, Err: fmt.Sprintf("read current revision: %v", err)})
			ws.mu.Unlock()
			return
		}
		rev = r + 1
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(context.WithoutCancel(ctx)))
	res := &watcherResult{ID: id, StartRev: rev, PrevKV: prevKV}
	ws.mu.Lock()
	ws.results = append(ws.results, res)
	ws.cancels = append(ws.cancels, cancel)
	ws.mu.Unlock()
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithRev(rev)}
	if prevKV {
		opts = append(opts, clientv3.WithPrevKV())
	}
	ws.done.Add(1)
	go func() {
		defer ws.done.Done()
		ws.collect(wctx, cli, id, res, opts)
	}()
}

// collect receives events into res. A watch that fails for a reason other than compaction
// or the end of the run (a lost leader, say) is opened again from the revision after the
// last one received, as any careful client would.
func (ws *watchSet) collect(ctx context.Context, cli *clientv3.Client, id int, res *watcherResult, opts []clientv3.OpOption) {
	next := res.StartRev
	for ctx.Err() == nil {
		wch := cli.Watch(ctx, ws.prefix, append(opts, clientv3.WithRev(next))...)
		for resp := range wch {
			if resp.CompactRevision != 0 {
				ws.mu.Lock()
				res.Compacted = resp.CompactRevision
				ws.cond.Broadcast()
				ws.mu.Unlock()
				return
			}
			if err := resp.Err(); err != nil {
				ws.mu.Lock()
				res.Err = err.Error()
				ws.mu.Unlock()
				break
			}
			ws.mu.Lock()
			for _, ev := range resp.Events {
				res.Events = append(res.Events, toEvent(ev))
				ws.last[id] = ev.Kv.ModRevision
				next = ev.Kv.ModRevision + 1
			}
			ws.cond.Broadcast()
			ws.mu.Unlock()
		}
	}
}

// waitFor waits until every watcher has received an event at rev or later (or ended).
func (ws *watchSet) waitFor(ctx context.Context, rev int64) {
	stop := context.AfterFunc(ctx, func() {
		ws.mu.Lock()
		ws.cond.Broadcast()
		ws.mu.Unlock()
	})
	defer stop()
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for ctx.Err() == nil {
		behind := false
		for _, r := range ws.results {
			if r.Compacted == 0 && r.StartRev != 0 && ws.last[r.ID] < rev {
				behind = true
			}
		}
		if !behind {
			return
		}
		ws.cond.Wait()
	}
}

func (ws *watchSet) stopAll() {
	ws.mu.Lock()
	for _, c := range ws.cancels {
		c()
	}
	ws.mu.Unlock()
	ws.done.Wait()
}

func (ws *watchSet) snapshot() []watcherResult {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	out := make([]watcherResult, 0, len(ws.results))
	for _, r := range ws.results {
		out = append(out, *r)
	}
	return out
}

// readLog reads the change log of prefix from revision from on, until it sees the sentinel
// key written at the end of the run; it returns the events up to and including endRev, and
// the sentinel's revision.
func readLog(ctx context.Context, cli *clientv3.Client, prefix string, from, endRev int64) ([]event, int64, error) {
	sentinel := prefix + "~end"
	var resp *clientv3.PutResponse
	for {
		var err error
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		resp, err = cli.Put(pctx, sentinel, "end")
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil, 0, fmt.Errorf("write the end marker: %w", err)
		}
	}
	sentRev := resp.Header.Revision
	var log []event
	next := from
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for wr := range cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(next)) {
			if wr.CompactRevision != 0 {
				cancel()
				return nil, 0, fmt.Errorf("the change log from revision %d is compacted (compact revision %d)", from, wr.CompactRevision)
			}
			if wr.Err() != nil {
				break
			}
			for _, ev := range wr.Events {
				next = ev.Kv.ModRevision + 1
				if ev.Kv.ModRevision >= sentRev {
					cancel()
					return log, sentRev, nil
				}
				if ev.Kv.ModRevision <= endRev {
					log = append(log, toEvent(ev))
				}
			}
		}
		cancel()
	}
	return nil, 0, fmt.Errorf("read the change log: %w", ctx.Err())
}
