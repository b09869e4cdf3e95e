package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
)

var (
	errNoSnapshotter     = errors.New("no Snapshotter configured")
	errSnapshotResponded = errors.New("peer answered before the snapshot stream ended")
)

// sendSnapshot starts sending MsgSnap m unless a snapshot to this peer is already in flight,
// in which case m is dropped and reported as failed.
func (p *peer) sendSnapshot(m *raftpb.Message) {
	if !p.snapInFlight.CompareAndSwap(false, true) {
		p.lg.Warn("dropped snapshot message: another snapshot to this peer is in flight",
			zap.Uint64("snapshot-index", m.GetSnapshot().GetMetadata().GetIndex()))
		p.t.queueSnapshotFailure(p.id)
		return
	}
	ok := p.t.goTracked(func() {
		defer p.snapInFlight.Store(false)
		p.runSnapshot(m)
	})
	if !ok {
		p.snapInFlight.Store(false)
	}
}

// runSnapshot sends m and reports the outcome to raft.
func (p *peer) runSnapshot(m *raftpb.Message) {
	lg := p.lg.With(zap.Uint64("snapshot-index", m.GetSnapshot().GetMetadata().GetIndex()),
		zap.Uint64("snapshot-term", m.GetSnapshot().GetMetadata().GetTerm()))
	start := time.Now()
	lg.Info("sending snapshot to peer")
	n, err := p.transferSnapshot(m)
	if p.t.ctx.Err() != nil {
		// The transport is closing; raft is going away too.
		return
	}
	if err != nil {
		lg.Warn("failed to send snapshot to peer", zap.Int64("bytes", n), zap.Error(err))
		p.t.cfg.Raft.ReportSnapshot(p.id, raft.SnapshotFailure)
		return
	}
	lg.Info("sent snapshot to peer", zap.Int64("bytes", n), zap.Duration("took", time.Since(start)))
	p.t.cfg.Raft.ReportSnapshot(p.id, raft.SnapshotFinish)
}

// transferSnapshot POSTs m followed by its data to the peer and returns nil once the peer
// answered 2xx, that is after it staged the data and passed m to raft. It returns the
// number of data bytes written.
func (p *peer) transferSnapshot(m *raftpb.Message) (int64, error) {
	snap := p.t.cfg.Snapshotter
	if snap == nil {
		return 0, fmt.Errorf("send snapshot: %w", errNoSnapshotter)
	}
	u := p.pickURL()
	ctx, cancel := context.WithCancelCause(p.ctx)
	defer cancel(nil)

	pr, pw := io.Pipe()
	cw := &countingWriter{w: pw}
	writeDone := make(chan error, 1)
	ok := p.t.goTracked(func() {
		err := writeSnapshotBody(ctx, snap, m, pw, cw, p.t.cfg.MaxMessageSize)
		_ = pw.CloseWithError(err) // nil closes the body cleanly: the request completes
		writeDone <- err
	})
	if !ok {
		return 0, fmt.Errorf("send snapshot: %w", errStreamClosed)
	}

	// If the request is cancelled while the client waits on a stalled body, closing the
	// pipe unblocks it.
	defer closeOnCancel(ctx, pr)()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u+snapshotPath, pr)
	if err != nil {
		cancel(err)
		pr.CloseWithError(err)
		<-writeDone
		return 0, fmt.Errorf("new snapshot request to %s: %w", u, err)
	}
	req.ContentLength = -1
	p.t.setHeaders(req.Header, p.id, snapshotContentType)

	resp, err := p.t.client.Do(req)
	if err != nil {
		cancel(err)
		pr.CloseWithError(err)
		werr := <-writeDone
		p.markFailed(u)
		if werr != nil && !errors.Is(werr, io.ErrClosedPipe) && !errors.Is(werr, err) && !errors.Is(err, werr) {
			err = errors.Join(err, werr)
		}
		return cw.n, fmt.Errorf("send snapshot to %s: %w", u, err)
	}
	msg := readErrorBody(resp.Body)
	_ = resp.Body.Close()
	// The peer has answered: stop the writer if it is still going.
	cancel(errSnapshotResponded)
	pr.CloseWithError(errSnapshotResponded)
	werr := <-writeDone
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return cw.n, fmt.Errorf("send snapshot to %s: peer answered %s: %s", u, resp.Status, msg)
	}
	if werr != nil && !errors.Is(werr, errSnapshotResponded) {
		p.lg.Warn("peer accepted snapshot although writing it failed", zap.Error(werr))
	}
	return cw.n, nil
}

// writeSnapshotBody writes the request body of a snapshot request: m as one frame to w, then
// the data from the Snapshotter to data (which forwards to w).
func writeSnapshotBody(ctx context.Context, snap Snapshotter, m *raftpb.Message, w, data io.Writer, limit int) error {
	hdr, err := appendFrame(nil, m, limit)
	if err != nil {
		return fmt.Errorf("encode snapshot message: %w", err)
	}
	if _, err := w.Write(hdr); err != nil {
		return fmt.Errorf("write snapshot message: %w", err)
	}
	if err := snap.WriteSnapshot(ctx, m, data); err != nil {
		return fmt.Errorf("write snapshot data: %w", err)
	}
	return nil
}

// serveSnapshot receives a snapshot: the body is the MsgSnap frame followed by the data,
// which goes to Snapshotter.ReceiveSnapshot; if that succeeds the message goes to
// Raft.Process and the answer is 204. Any failure is answered with an error status.
func (t *Transport) serveSnapshot(w http.ResponseWriter, r *http.Request) {
	from, ok := t.checkRequest(w, r, snapshotContentType)
	if !ok {
		return
	}
	defer t.wg.Done()
	lg := t.lg.With(zap.String("peer-id", idString(from)), zap.String("remote-addr", r.RemoteAddr))
	if t.cfg.Snapshotter == nil {
		lg.Error("refused snapshot from peer: no Snapshotter configured")
		httpError(w, "this member cannot receive snapshots", http.StatusNotImplemented)
		return
	}

	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{}) // snapshots may take longer than any server-wide timeout
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(t.ctx, cancel)()
	defer readDeadlineOnCancel(ctx, rc)()

	body := &countingReader{r: r.Body}
	m, err := newDecoder(body, t.cfg.MaxMessageSize).next()
	if err == nil {
		err = t.checkMessage(m, from)
	}
	if err == nil && m.GetType() != raftpb.MsgSnap {
		err = fmt.Errorf("%s message on %s, want %s", m.GetType(), snapshotPath, raftpb.MsgSnap)
	}
	if err == nil && m.GetSnapshot() == nil {
		err = errors.New("MsgSnap without snapshot metadata")
	}
	if err != nil {
		lg.Warn("rejected snapshot request from peer", zap.Error(err))
		httpError(w, "bad snapshot message: "+err.Error(), http.StatusBadRequest)
		return
	}
	lg = lg.With(zap.Uint64("snapshot-index", m.GetSnapshot().GetMetadata().GetIndex()),
		zap.Uint64("snapshot-term", m.GetSnapshot().GetMetadata().GetTerm()))
	start := time.Now()
	hdrBytes := body.n
	lg.Info("receiving snapshot from peer")

	if err := t.cfg.Snapshotter.ReceiveSnapshot(ctx, m, body); err != nil {
		lg.Warn("failed to receive snapshot from peer", zap.Int64("bytes", body.n-hdrBytes), zap.Error(err))
		httpError(w, "receive snapshot: "+err.Error(), http.StatusInternalServerError)
		return
	}
	if err := t.cfg.Raft.Process(ctx, m); err != nil {
		lg.Warn("raft failed to process received snapshot", zap.Error(err))
		httpError(w, "process snapshot message: "+err.Error(), http.StatusInternalServerError)
		return
	}
	lg.Info("received snapshot from peer", zap.Int64("bytes", body.n-hdrBytes),
		zap.Duration("took", time.Since(start)))
	w.WriteHeader(http.StatusNoContent)
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	return n, err
}
