package difftest

import (
	"context"
	"fmt"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// watchSide is one watch on one server: a stream of its own with a single watcher, whose
// responses after the created one are collected by a goroutine.
type watchSide struct {
	stream pb.Watch_WatchClient
	cancel context.CancelFunc
	done   chan struct{}

	mu struct {
		sync.Mutex
		resps       []*pb.WatchResponse // everything but progress notifications
		progressRev int64               // highest revision a progress notification reported
		canceled    bool
		err         error
	}
}

// watchPair is the same watch opened on both servers.
type watchPair struct {
	op   int
	req  *pb.WatchCreateRequest
	etcd *watchSide
	ordo *watchSide
}

// openWatch opens the watch on etcd and on Ordo, compares the created responses and starts
// collecting the rest.
func (r *runner) openWatch(i int, req *pb.WatchCreateRequest) {
	e, eRes := openSide(r.etcd, req)
	o, oRes := openSide(r.ordo, r.forOrdo(req).(*pb.WatchCreateRequest))
	differ := false
	if what := difference(r.ids, eRes, oRes); what != "" {
		r.report(i, opWatch, req, what, eRes, oRes)
		differ = true
	}
	if e == nil || o == nil || differ {
		// Histories of watches that were not even created alike are not compared.
		for _, s := range []*watchSide{e, o} {
			if s != nil {
				s.close()
			}
		}
		return
	}
	p := &watchPair{op: i, req: req, etcd: e, ordo: o}
	r.watches = append(r.watches, p)
	// etcd catches up a watch that starts in the past in the background, and reports a
	// compaction that happens meanwhile instead of the events; wait until both caught up so
	// that what they deliver does not depend on timing.
	if pending := r.waitSynced([]*watchPair{p}, r.gen.rev); pending > 0 {
		r.t.Logf("op %d: watch did not catch up with revision %d within the deadline", i, r.gen.rev)
	}
}

func openSide(s *server, req *pb.WatchCreateRequest) (*watchSide, result) {
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := s.watch.Watch(ctx)
	if err != nil {
		cancel()
		return nil, result{err: fmt.Errorf("open watch stream on %s: %w", s.name, err)}
	}
	if err := stream.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: req}}); err != nil {
		cancel()
		return nil, result{err: fmt.Errorf("send watch create to %s: %w", s.name, err)}
	}
	created := make(chan result, 1)
	go func() {
		resp, err := stream.Recv()
		created <- result{resp: resp, err: err}
	}()
	var res result
	select {
	case res = <-created:
	case <-time.After(10 * time.Second):
		cancel()
		res = <-created
	}
	if res.err != nil {
		cancel()
		return nil, res
	}
	w := &watchSide{stream: stream, cancel: cancel, done: make(chan struct{})}
	w.mu.canceled = res.resp.(*pb.WatchResponse).Canceled
	go w.collect()
	return w, res
}

func isProgress(r *pb.WatchResponse) bool {
	return len(r.Events) == 0 && !r.Created && !r.Canceled && r.CompactRevision == 0
}

func (w *watchSide) collect() {
	defer close(w.done)
	for {
		resp, err := w.stream.Recv()
		w.mu.Lock()
		if err != nil {
			w.mu.err = err
			w.mu.Unlock()
			return
		}
		if isProgress(resp) {
			w.mu.progressRev = max(w.mu.progressRev, resp.GetHeader().GetRevision())
		} else {
			w.mu.resps = append(w.mu.resps, resp)
			if resp.Canceled {
				w.mu.canceled = true
			}
		}
		w.mu.Unlock()
	}
}

func (w *watchSide) close() {
	w.cancel()
	<-w.done
}

// synced reports whether the watch has delivered everything up to rev, as far as the client can
// tell: it was canceled, or a progress notification reported rev.
func (w *watchSide) synced(rev int64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.mu.canceled || w.mu.progressRev >= rev || w.mu.err != nil
}

// history is everything a watch delivered after its created response, as one response: the
// events in order, and how it ended (compacted, canceled). How events were split into responses
// depends on timing and is not compared.
func (w *watchSide) history() *pb.WatchResponse {
	w.mu.Lock()
	defer w.mu.Unlock()
	h := &pb.WatchResponse{}
	for _, r := range w.mu.resps {
		h.Events = append(h.Events, r.Events...)
		if r.Canceled {
			h.Canceled = true
			h.CancelReason = r.CancelReason
		}
		if r.CompactRevision != 0 {
			h.CompactRevision = r.CompactRevision
		}
	}
	return h
}

func (r *runner) closeWatches() {
	for _, p := range r.watches {
		p.etcd.close()
		p.ordo.close()
	}
}

// compareWatches waits until every watch on both servers has delivered all events up to the
// final revision and compares the complete histories.
func (r *runner) compareWatches() {
	final := r.gen.rev
	if pending := r.waitSynced(r.watches, final); pending > 0 {
		r.t.Logf("%d watch streams did not report progress up to revision %d within the deadline", pending, final)
	}
	for _, p := range r.watches {
		if r.stopped() {
			return
		}
		e := result{resp: p.etcd.history()}
		o := result{resp: p.ordo.history()}
		if what := difference(r.ids, e, o); what != "" {
			r.report(p.op, opWatch, p.req, "event history: "+what, e, o)
		}
	}
}

// waitSynced waits until every watch of ps on both servers delivered everything up to rev, and
// returns how many streams did not within the deadline. A server answers a progress request only
// once its watchers caught up, so one is sent repeatedly until each stream answered. A watch
// that starts beyond rev has nothing to catch up with and is not waited for.
func (r *runner) waitSynced(ps []*watchPair, rev int64) int {
	deadline := time.Now().Add(15 * time.Second)
	ticker := time.NewTicker(20 * time.Millisecond)
	defer ticker.Stop()
	for {
		pending := 0
		for _, p := range ps {
			if p.req.StartRevision > rev {
				continue
			}
			for _, s := range []*watchSide{p.etcd, p.ordo} {
				if !s.synced(rev) {
					pending++
					_ = s.stream.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_ProgressRequest{ProgressRequest: &pb.WatchProgressRequest{}}})
				}
			}
		}
		if pending == 0 || time.Now().After(deadline) {
			return pending
		}
		<-ticker.C
	}
}
