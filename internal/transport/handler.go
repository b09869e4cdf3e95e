package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
)

// Paths, headers and content types of the protocol.
const (
	streamPath   = "/raft/stream"
	snapshotPath = "/raft/snapshot"

	HeaderClusterID = "X-Ordo-Cluster-ID"
	HeaderFrom      = "X-Ordo-From"
	HeaderTo        = "X-Ordo-To"

	streamContentType   = "application/vnd.ordo.raft-stream.v1"
	snapshotContentType = "application/vnd.ordo.raft-snapshot.v1"
)

// httpError answers with an error and closes the connection afterwards: the request body
// is not read, and the server must not wait for the rest of a stream before answering.
func httpError(w http.ResponseWriter, msg string, code int) {
	w.Header().Set("Connection", "close")
	http.Error(w, msg, code)
}

func idString(id uint64) string { return strconv.FormatUint(id, 16) }

func parseID(s string) (uint64, error) {
	id, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("parse member id %q: %w", s, err)
	}
	return id, nil
}

// setHeaders sets the identification headers carried by every request to peer to.
func (t *Transport) setHeaders(h http.Header, to uint64, contentType string) {
	h.Set(HeaderClusterID, idString(t.cfg.ClusterID))
	h.Set(HeaderFrom, idString(t.cfg.LocalID))
	h.Set(HeaderTo, idString(to))
	h.Set("Content-Type", contentType)
}

func (t *Transport) newHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(streamPath, t.serveStream)
	mux.HandleFunc(snapshotPath, t.serveSnapshot)
	return mux
}

// checkRequest validates method, content type and identification headers, and registers
// the request with Close's wait group. On success the caller must call t.wg.Done. On
// failure it has written the error response.
func (t *Transport) checkRequest(w http.ResponseWriter, r *http.Request, contentType string) (from uint64, ok bool) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		httpError(w, "method not allowed", http.StatusMethodNotAllowed)
		return 0, false
	}
	if ct := r.Header.Get("Content-Type"); ct != contentType {
		httpError(w, fmt.Sprintf("unsupported content type %q, want %q", ct, contentType),
			http.StatusUnsupportedMediaType)
		return 0, false
	}
	cid, err := parseID(r.Header.Get(HeaderClusterID))
	if err == nil {
		from, err = parseID(r.Header.Get(HeaderFrom))
	}
	var to uint64
	if err == nil {
		to, err = parseID(r.Header.Get(HeaderTo))
	}
	if err != nil {
		httpError(w, "bad identification headers: "+err.Error(), http.StatusBadRequest)
		return 0, false
	}
	lg := t.lg.With(zap.String("path", r.URL.Path), zap.String("remote-addr", r.RemoteAddr),
		zap.String("from", idString(from)))
	if cid != t.cfg.ClusterID {
		msg := fmt.Sprintf("cluster ID mismatch: request is for cluster %s, this member (%s) belongs to cluster %s",
			idString(cid), idString(t.cfg.LocalID), idString(t.cfg.ClusterID))
		lg.Warn("rejected peer request with mismatched cluster ID",
			zap.String("request-cluster-id", idString(cid)),
			zap.String("local-cluster-id", idString(t.cfg.ClusterID)))
		httpError(w, msg, http.StatusPreconditionFailed)
		return 0, false
	}
	if to != t.cfg.LocalID {
		msg := fmt.Sprintf("member ID mismatch: request is for member %s, this is member %s",
			idString(to), idString(t.cfg.LocalID))
		lg.Warn("rejected peer request addressed to another member", zap.String("to", idString(to)))
		httpError(w, msg, http.StatusPreconditionFailed)
		return 0, false
	}
	if from == 0 || from == t.cfg.LocalID {
		httpError(w, fmt.Sprintf("invalid sender member ID %s", idString(from)), http.StatusBadRequest)
		return 0, false
	}
	t.mu.RLock()
	_, removed := t.removed[from]
	t.mu.RUnlock()
	if removed {
		lg.Warn("rejected peer request from removed member")
		httpError(w, fmt.Sprintf("member %s was removed from the cluster", idString(from)), http.StatusGone)
		return 0, false
	}
	if !t.enter() {
		httpError(w, "transport is shutting down", http.StatusServiceUnavailable)
		return 0, false
	}
	return from, true
}

// readDeadlineOnCancel makes pending and future body reads of the request fail once ctx is
// done. The returned function undoes the registration and waits for a running callback.
func readDeadlineOnCancel(ctx context.Context, rc *http.ResponseController) func() {
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(fired)
		_ = rc.SetReadDeadline(time.Now())
	})
	return func() {
		if !stop() {
			<-fired
		}
	}
}

// serveStream receives a message stream: the request body is a sequence of frames, each
// passed to Raft.Process in order. The response (200, no body) is sent before reading so the
// sender knows the stream is accepted; it ends when the stream does.
func (t *Transport) serveStream(w http.ResponseWriter, r *http.Request) {
	from, ok := t.checkRequest(w, r, streamContentType)
	if !ok {
		return
	}
	defer t.wg.Done()
	lg := t.lg.With(zap.String("peer-id", idString(from)), zap.String("remote-addr", r.RemoteAddr))

	rc := http.NewResponseController(w)
	if err := rc.EnableFullDuplex(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		lg.Error("cannot enable full duplex for message stream", zap.Error(err))
		httpError(w, "cannot enable full duplex", http.StatusInternalServerError)
		return
	}
	// The stream lives indefinitely: lift any server-wide read/write timeout.
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})

	ctx, release := t.registerInbound(r.Context(), from)
	defer release()
	defer readDeadlineOnCancel(ctx, rc)()

	w.Header().Set("Content-Type", streamContentType)
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		lg.Warn("cannot accept message stream", zap.Error(err))
		return
	}
	lg.Info("accepted message stream from peer")

	dec := newDecoder(bufio.NewReaderSize(r.Body, 64<<10), t.cfg.MaxMessageSize)
	var n uint64
	for {
		m, err := dec.next()
		if err != nil {
			switch {
			case ctx.Err() != nil:
				lg.Info("message stream from peer stopped", zap.Uint64("messages", n),
					zap.Error(context.Cause(ctx)))
			case errors.Is(err, io.EOF):
				lg.Info("message stream from peer closed by peer", zap.Uint64("messages", n))
			default:
				lg.Warn("message stream from peer failed", zap.Uint64("messages", n), zap.Error(err))
			}
			return
		}
		if err := t.checkMessage(m, from); err != nil {
			lg.Warn("closing message stream from peer", zap.Error(err))
			return
		}
		if m.GetType() == raftpb.MsgSnap {
			lg.Warn("closing message stream from peer: MsgSnap is only accepted on " + snapshotPath)
			return
		}
		n++
		if err := t.cfg.Raft.Process(ctx, m); err != nil {
			if ctx.Err() != nil {
				lg.Info("message stream from peer stopped", zap.Uint64("messages", n))
				return
			}
			lg.Warn("raft failed to process message", zap.Stringer("type", m.GetType()), zap.Error(err))
		}
	}
}

// checkMessage verifies that a received message is from the peer the request claims to be
// from and addressed to this member.
func (t *Transport) checkMessage(m *raftpb.Message, from uint64) error {
	if m.GetTo() != t.cfg.LocalID {
		return fmt.Errorf("%s message addressed to member %s, this is member %s",
			m.GetType(), idString(m.GetTo()), idString(t.cfg.LocalID))
	}
	if m.GetFrom() != from {
		return fmt.Errorf("%s message from member %s on a request from member %s",
			m.GetType(), idString(m.GetFrom()), idString(from))
	}
	return nil
}

// registerInbound returns a context for an incoming stream from peer from. It is cancelled
// when the request ends, when the transport closes, when the peer is removed, or when a newer
// stream from the same peer arrives. release must be called when the stream ends.
func (t *Transport) registerInbound(parent context.Context, from uint64) (context.Context, func()) {
	ctx, cancel := context.WithCancel(parent)
	stop := context.AfterFunc(t.ctx, cancel)
	in := &inbound{cancel: cancel}
	t.mu.Lock()
	if old := t.inbound[from]; old != nil {
		old.cancel()
	}
	t.inbound[from] = in
	t.mu.Unlock()
	return ctx, func() {
		stop()
		t.mu.Lock()
		if t.inbound[from] == in {
			delete(t.inbound, from)
		}
		t.mu.Unlock()
		cancel()
	}
}
