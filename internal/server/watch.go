package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sort"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/ordo-db/ordo/internal/mvcc"
	"github.com/ordo-db/ordo/internal/watch"
)

// invalidWatchID is the id of responses that belong to no watcher (clientv3.InvalidWatchID).
const invalidWatchID = -1

// catchUpRevisions bounds the revisions one response to a lagging watcher carries.
const catchUpRevisions = 1000

// storageCatchUpEvents bounds the events read from storage for one response to a watcher
// that fell behind the in-memory ring.
const storageCatchUpEvents = 1000

// watchResponseBytes bounds the events (watch.EventSize, previous values included) of one
// response: a response always holds whole revisions, at least one, and no further revision
// once it holds this much. A stream whose client does not read keeps at most about one such
// response encoded in gRPC's buffers, so stalled streams cost bounded memory each.
const watchResponseBytes = 512 << 10

// maxStorageReads bounds the watchers of a member reading their events from storage at the
// same time: each read holds up to about watchResponseBytes of events, more when the event
// size estimate was low.
const maxStorageReads = 8

// maxPendingControl bounds the control responses (created, canceled) a stream queues for a
// client that does not read them: beyond it the stream stops reading requests, and gRPC's flow
// control holds the client back, as etcd does.
const maxPendingControl = 1024

// errDuplicateWatchID is etcd's cancel reason for a client-chosen id already in use.
var errDuplicateWatchID = errors.New("mvcc: duplicate watch ID provided on the WatchStream")

// errEmptyWatchRange is etcd's cancel reason for a watch whose range end is not above its key
// (a from-key watch, range end "\x00", aside).
var errEmptyWatchRange = errors.New("mvcc: watcher range is empty")

// watchServer is etcd's Watch service.
type watchServer struct {
	pb.UnimplementedWatchServer
	m            *Member
	storageReads chan struct{} // a semaphore of maxStorageReads
}

func newWatchServer(m *Member) *watchServer {
	return &watchServer{m: m, storageReads: make(chan struct{}, maxStorageReads)}
}

// watcher is one watch on a stream. Only the stream's send loop reads or changes nextRev.
type watcher struct {
	id             int64
	rng            watch.Range
	nextRev        int64 // the next revision to deliver
	noPut          bool
	noDelete       bool
	prevKV         bool
	fragment       bool
	progressNotify bool
	sentSinceTick  bool
	storageEvents  int // how many events to read from storage at once; 0 = not yet estimated
}

// watchStream serves one gRPC Watch stream: the receive goroutine registers and cancels
// watchers, the send loop (the handler's goroutine) delivers events, control responses and
// progress notifications in order.
type watchStream struct {
	m            *Member
	stream       pb.Watch_WatchServer
	storageReads chan struct{}

	mu struct {
		sync.Mutex
		watchers    map[int64]*watcher
		nextID      int64
		ctrl        []*pb.WatchResponse // responses to send before any further event
		progressAll bool                // a RequestProgress waits for every watcher to be synced
	}
	wake    chan struct{}
	drained chan struct{} // signaled when the send loop took the pending control responses
}

func (s *watchServer) Watch(stream pb.Watch_WatchServer) error {
	ws := &watchStream{m: s.m, stream: stream, storageReads: s.storageReads, wake: make(chan struct{}, 1), drained: make(chan struct{}, 1)}
	ws.mu.watchers = make(map[int64]*watcher)
	s.m.metrics.watchStreams.Inc()
	defer s.m.metrics.watchStreams.Dec()
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	stop := context.AfterFunc(ws.m.ctx, cancel) // a stopping member ends its streams
	defer stop()
	recvErr := make(chan error, 1)
	go func() {
		err := ws.recvLoop(ctx)
		recvErr <- err
		cancel()
	}()
	sendErr := ws.sendLoop(ctx)
	if ws.m.ctx.Err() != nil {
		// The member is stopping: an Unavailable error makes clients re-watch elsewhere or
		// after the restart, from their next revision.
		return rpctypes.ErrGRPCStopped
	}
	select {
	case err := <-recvErr:
		if err != nil {
			return err
		}
	default:
	}
	if sendErr != nil && ctx.Err() == nil {
		return sendErr
	}
	return nil
}

func (ws *watchStream) signal() {
	select {
	case ws.wake <- struct{}{}:
	default:
	}
}

func (ws *watchStream) recvLoop(ctx context.Context) error {
	for {
		if err := ws.waitControlRoom(ctx); err != nil {
			return nil
		}
		req, err := ws.stream.Recv()
		if errors.Is(err, io.EOF) {
			// The client closed its sending side (the JSON gateway does once it has read the
			// request body) but still reads: the stream lives on until it goes away, as in etcd.
			<-ctx.Done()
			return nil
		}
		if err != nil {
			return nil // the client went away
		}
		switch uv := req.RequestUnion.(type) {
		case *pb.WatchRequest_CreateRequest:
			if uv.CreateRequest != nil {
				ws.create(uv.CreateRequest)
			}
		case *pb.WatchRequest_CancelRequest:
			if uv.CancelRequest != nil {
				ws.cancelWatch(uv.CancelRequest.WatchId)
			}
		case *pb.WatchRequest_ProgressRequest:
			if uv.ProgressRequest != nil {
				ws.mu.Lock()
				ws.mu.progressAll = true
				ws.mu.Unlock()
			}
		}
		ws.signal()
	}
}

// waitControlRoom waits until fewer than maxPendingControl control responses wait to be sent.
func (ws *watchStream) waitControlRoom(ctx context.Context) error {
	for {
		ws.mu.Lock()
		n := len(ws.mu.ctrl)
		ws.mu.Unlock()
		if n < maxPendingControl {
			return nil
		}
		select {
		case <-ws.drained:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (ws *watchStream) create(cr *pb.WatchCreateRequest) {
	// As in etcd, the user must be allowed to read the whole range when the watch is created,
	// with the stream's credentials (a watch outlives its token).
	var authErr error
	if cr.StartRevision >= 0 {
		authErr = ws.checkWatch(cr)
	}
	rev, _ := ws.m.hub.Rev()
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if cr.StartRevision < 0 {
		ws.mu.ctrl = append(ws.mu.ctrl, &pb.WatchResponse{Header: ws.m.header(&pb.ResponseHeader{Revision: rev}),
			WatchId: invalidWatchID, Created: true, Canceled: true, CancelReason: rpctypes.ErrCompacted.Error()})
		return
	}
	if authErr != nil {
		ws.mu.ctrl = append(ws.mu.ctrl, &pb.WatchResponse{Header: ws.m.header(&pb.ResponseHeader{Revision: rev}),
			WatchId: invalidWatchID, Created: true, Canceled: true, CancelReason: watchCancelReason(authErr)})
		return
	}
	key := cr.Key
	if len(key) == 0 {
		key = []byte{0}
	}
	end := cr.RangeEnd
	switch {
	case len(end) == 0:
		end = nil
	case len(end) == 1 && end[0] == 0:
		end = []byte{}
	}
	// As in etcd, the empty range is refused before an id is taken or checked for duplicates.
	if len(end) > 0 && bytes.Compare(key, end) >= 0 {
		ws.mu.ctrl = append(ws.mu.ctrl, &pb.WatchResponse{Header: ws.m.header(&pb.ResponseHeader{Revision: rev}),
			WatchId: invalidWatchID, Created: true, Canceled: true, CancelReason: errEmptyWatchRange.Error()})
		return
	}
	id := cr.WatchId
	if id == 0 {
		for {
			if _, used := ws.mu.watchers[ws.mu.nextID]; !used {
				break
			}
			ws.mu.nextID++
		}
		id = ws.mu.nextID
		ws.mu.nextID++
	} else if _, used := ws.mu.watchers[id]; used {
		ws.mu.ctrl = append(ws.mu.ctrl, &pb.WatchResponse{Header: ws.m.header(&pb.ResponseHeader{Revision: rev}),
			WatchId: invalidWatchID, Created: true, Canceled: true, CancelReason: errDuplicateWatchID.Error()})
		return
	}
	w := &watcher{id: id, rng: watch.Range{Key: key, End: end}, nextRev: cr.StartRevision,
		prevKV: cr.PrevKv, fragment: cr.Fragment, progressNotify: cr.ProgressNotify}
	if w.nextRev == 0 {
		w.nextRev = rev + 1
	}
	for _, f := range cr.Filters {
		switch f {
		case pb.WatchCreateRequest_NOPUT:
			w.noPut = true
		case pb.WatchCreateRequest_NODELETE:
			w.noDelete = true
		}
	}
	ws.mu.watchers[id] = w
	ws.mu.ctrl = append(ws.mu.ctrl, &pb.WatchResponse{Header: ws.m.header(&pb.ResponseHeader{Revision: rev}), WatchId: id, Created: true})
}

// checkWatch checks that the stream's user may read the range a watch asks for.
func (ws *watchStream) checkWatch(cr *pb.WatchCreateRequest) error {
	if !ws.m.auth.Enabled() {
		return nil
	}
	ai, err := ws.m.auth.InfoFromContext(ws.stream.Context())
	if err != nil {
		return err
	}
	return ws.m.auth.CheckRange(ai, cr.Key, cr.RangeEnd)
}

func (ws *watchStream) cancelWatch(id int64) {
	rev, _ := ws.m.hub.Rev()
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if _, ok := ws.mu.watchers[id]; !ok {
		return
	}
	delete(ws.mu.watchers, id)
	ws.mu.ctrl = append(ws.mu.ctrl, &pb.WatchResponse{Header: ws.m.header(&pb.ResponseHeader{Revision: rev}), WatchId: id, Canceled: true})
}

// snapshot returns the pending control responses and the watchers in id order.
func (ws *watchStream) snapshot() ([]*pb.WatchResponse, []*watcher) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	ctrl := ws.mu.ctrl
	ws.mu.ctrl = nil
	if len(ctrl) > 0 {
		select {
		case ws.drained <- struct{}{}:
		default:
		}
	}
	ws2 := make([]*watcher, 0, len(ws.mu.watchers))
	for _, w := range ws.mu.watchers {
		ws2 = append(ws2, w)
	}
	sort.Slice(ws2, func(i, j int) bool { return ws2[i].id < ws2[j].id })
	return ctrl, ws2
}

func (ws *watchStream) progressInterval() time.Duration {
	if d := ws.m.cfg.WatchProgressNotifyInterval; d > 0 {
		return d
	}
	return 10 * time.Minute
}

func (ws *watchStream) sendLoop(ctx context.Context) error {
	ticker := time.NewTicker(ws.progressInterval())
	defer ticker.Stop()
	tick := false
	for {
		rev, changed := ws.m.hub.Rev()
		ctrl, watchers := ws.snapshot()
		for _, r := range ctrl {
			if err := ws.stream.Send(r); err != nil {
				return err
			}
		}
		synced := true
		for _, w := range watchers {
			if w.nextRev <= rev {
				if err := ws.deliver(ctx, w, rev); err != nil {
					return err
				}
			}
			if w.nextRev <= rev {
				synced = false
			}
		}
		ws.mu.Lock()
		progressAll := ws.mu.progressAll && synced
		if progressAll {
			ws.mu.progressAll = false
		}
		ws.mu.Unlock()
		if progressAll {
			if err := ws.stream.Send(&pb.WatchResponse{Header: ws.m.header(&pb.ResponseHeader{Revision: rev}), WatchId: invalidWatchID}); err != nil {
				return err
			}
		}
		if tick {
			tick = false
			for _, w := range watchers {
				if w.progressNotify && !w.sentSinceTick && w.nextRev > rev {
					if err := ws.stream.Send(&pb.WatchResponse{Header: ws.m.header(&pb.ResponseHeader{Revision: rev}), WatchId: w.id}); err != nil {
						return err
					}
				}
				w.sentSinceTick = false
			}
		}
		select {
		case <-changed:
		case <-ws.wake:
		case <-ticker.C:
			tick = true
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// deliver sends w every event from w.nextRev through rev, from the ring when it still holds
// them and from storage otherwise, in responses that each hold whole revisions and are bounded
// by catchUpRevisions and watchResponseBytes.
func (ws *watchStream) deliver(ctx context.Context, w *watcher, rev int64) error {
	var buf []mvcc.Event
	for w.nextRev <= rev {
		if ws.removed(w) {
			return nil
		}
		if compacted := ws.m.kv.CompactRev(); w.nextRev < compacted {
			return ws.cancelCompacted(w, compacted)
		}
		// Like etcd, a response catching up carries at most catchUpRevisions revisions.
		to := min(rev, w.nextRev+catchUpRevisions-1)
		evs, next, ok := ws.m.hub.RecentBounded(buf[:0], w.nextRev, to, w.rng, watchResponseBytes)
		if !ok {
			var compacted int64
			var err error
			evs, next, compacted, err = ws.fromStorage(ctx, buf[:0], w, to)
			if err != nil {
				return err
			}
			if compacted != 0 {
				return ws.cancelCompacted(w, compacted)
			}
		}
		out := make([]*mvccpb.Event, 0, len(evs))
		for i := range evs {
			ev := &evs[i]
			if (ev.Type == mvccpb.PUT && w.noPut) || (ev.Type == mvccpb.DELETE && w.noDelete) {
				continue
			}
			pe := &mvccpb.Event{Type: ev.Type, Kv: ev.KV}
			if w.prevKV {
				pe.PrevKv = ev.PrevKV
			}
			out = append(out, pe)
		}
		// Drop the references to the events before a send that may wait for the client.
		clear(evs)
		buf = evs
		w.nextRev = next
		if len(out) == 0 {
			continue
		}
		resp := &pb.WatchResponse{Header: ws.m.header(&pb.ResponseHeader{Revision: next - 1}), WatchId: w.id, Events: out}
		if err := ws.send(resp, w.fragment); err != nil {
			return err
		}
		w.sentSinceTick = true
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

// cancelCompacted ends a watcher whose next revision was compacted away, as etcd does: its
// header carries no revision (etcd's is 0 there too; the compact revision is what counts).
func (ws *watchStream) cancelCompacted(w *watcher, compacted int64) error {
	ws.mu.Lock()
	delete(ws.mu.watchers, w.id)
	ws.mu.Unlock()
	return ws.stream.Send(&pb.WatchResponse{Header: ws.m.header(&pb.ResponseHeader{}),
		WatchId: w.id, CompactRevision: compacted, Canceled: true})
}

func (ws *watchStream) removed(w *watcher) bool {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return ws.mu.watchers[w.id] != w
}

// fromStorage reads the next events for w, up to revision to, from the revision history.
// compacted is the compact revision when w's next revision is no longer there. The history
// holds every key's events, previous values included, so a read is sized to about
// watchResponseBytes from the size of recent events and of w's previous read, and only
// maxStorageReads watchers of a member read at the same time.
func (ws *watchStream) fromStorage(ctx context.Context, dst []mvcc.Event, w *watcher, to int64) (evs []mvcc.Event, next, compacted int64, err error) {
	select {
	case ws.storageReads <- struct{}{}:
	case <-ctx.Done():
		return nil, 0, 0, ctx.Err()
	}
	defer func() { <-ws.storageReads }()
	v, err := ws.m.kv.NewReadView()
	if err != nil {
		return nil, 0, 0, err
	}
	defer v.Close()
	if w.nextRev < v.CompactRev() {
		return nil, 0, v.CompactRev(), nil
	}
	limit := w.storageEvents
	if avg := ws.m.hub.AvgEventBytes(); avg > 0 && (limit == 0 || watchResponseBytes/avg < limit) {
		limit = watchResponseBytes / avg
	}
	if limit == 0 {
		limit = storageCatchUpEvents
	}
	limit = max(1, min(limit, storageCatchUpEvents))
	all, next, err := v.Events(w.nextRev, limit)
	if errors.Is(err, mvcc.ErrCompacted) {
		return nil, 0, v.CompactRev(), nil
	}
	if err != nil {
		ws.m.lg.Error("read watch events from storage", zap.Int64("from", w.nextRev), zap.Error(err))
		return nil, 0, 0, err
	}
	read := 0
	for i := range all {
		read += watch.EventSize(&all[i])
	}
	size, last := 0, int64(0)
	for i := range all {
		ev := &all[i]
		if ev.KV.ModRevision > to {
			next = ev.KV.ModRevision
			break
		}
		if !w.rng.Contains(ev.KV.Key) {
			continue
		}
		if ev.KV.ModRevision != last {
			if size >= watchResponseBytes {
				next = ev.KV.ModRevision
				break
			}
			last = ev.KV.ModRevision
		}
		dst = append(dst, *ev)
		size += watch.EventSize(ev)
	}
	// Size the next read after what this one found.
	if len(all) > 0 {
		w.storageEvents = max(1, min(storageCatchUpEvents, watchResponseBytes/max(1, read/len(all))))
	}
	return dst, min(next, to+1), 0, nil
}

// send sends resp, split into fragments below --max-request-bytes when the watcher asked for
// fragments.
func (ws *watchStream) send(resp *pb.WatchResponse, fragment bool) error {
	limit := int(ws.m.cfg.MaxRequestBytes)
	if !fragment || proto.Size(resp) < limit || len(resp.Events) < 2 {
		return ws.stream.Send(resp)
	}
	evs := resp.Events
	for len(evs) > 0 {
		cur := &pb.WatchResponse{Header: resp.Header, WatchId: resp.WatchId, Fragment: true}
		n := 0
		for n < len(evs) {
			cur.Events = evs[:n+1]
			if n > 0 && proto.Size(cur) >= limit {
				break
			}
			n++
		}
		cur.Events = evs[:n]
		evs = evs[n:]
		cur.Fragment = len(evs) > 0
		if err := ws.stream.Send(cur); err != nil {
			return err
		}
	}
	return nil
}
