package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
)

// Stream writer tuning.
const (
	// maxBatchBytes and maxBatchMsgs bound one batch: the writer stops collecting queued
	// messages once either is reached and writes what it has.
	maxBatchBytes = 1 << 20
	maxBatchMsgs  = 4096
	// minBackoff and maxBackoff bound the wait between reconnection attempts.
	minBackoff = 100 * time.Millisecond
	maxBackoff = 3 * time.Second
	// errorBodyLimit bounds how much of an error response is read for the log.
	errorBodyLimit = 1024
)

var (
	errStreamHandshakeTimeout = errors.New("peer did not accept the stream within the dial timeout")
	errStreamClosed           = errors.New("stream closed")
	errStreamEnded            = errors.New("peer ended the stream")
	errURLRemoved             = errors.New("connected URL is no longer a peer URL")
)

// peer is the sending side towards one member: a bounded queue drained by run, which
// keeps one streaming request open, plus at most one snapshot request at a time.
type peer struct {
	t      *Transport
	id     uint64
	lg     *zap.Logger
	ctx    context.Context
	cancel context.CancelFunc
	queue  chan *raftpb.Message

	mu     sync.Mutex
	urls   []string
	next   int       // index into urls of the URL to try first
	cur    string    // URL of the established stream, if any
	active time.Time // when the stream was established; zero if none
	urlc   chan struct{}

	snapInFlight atomic.Bool
	dropping     atomic.Bool // set on a drop, cleared by a successful write; limits logging

	// Counters, read by tests.
	dropped atomic.Uint64
	batches atomic.Uint64
	sent    atomic.Uint64
}

func newPeer(t *Transport, id uint64, urls []string) *peer {
	ctx, cancel := context.WithCancel(t.ctx)
	return &peer{
		t:      t,
		id:     id,
		lg:     t.lg.With(zap.String("peer-id", idString(id))),
		ctx:    ctx,
		cancel: cancel,
		queue:  make(chan *raftpb.Message, t.cfg.QueueSize),
		urls:   urls,
		urlc:   make(chan struct{}, 1),
	}
}

// setURLs replaces the peer's URLs and wakes the writer if they changed.
func (p *peer) setURLs(urls []string) bool {
	p.mu.Lock()
	changed := !slices.Equal(p.urls, urls)
	if changed {
		p.urls = urls
		p.next = 0
	}
	p.mu.Unlock()
	if changed {
		select {
		case p.urlc <- struct{}{}:
		default:
		}
	}
	return changed
}

// urlOrder returns the URLs in the order to try them.
func (p *peer) urlOrder() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.urls)
	out := make([]string, 0, n)
	for i := range n {
		out = append(out, p.urls[(p.next+i)%n])
	}
	return out
}

// pickURL returns the URL of the established stream, or else the first URL to try.
func (p *peer) pickURL() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur != "" {
		return p.cur
	}
	return p.urls[p.next%len(p.urls)]
}

// markFailed makes the next attempt start after u, if u is the URL that would be tried first.
func (p *peer) markFailed(u string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.urls) > 0 && p.urls[p.next%len(p.urls)] == u {
		p.next = (p.next + 1) % len(p.urls)
	}
}

func (p *peer) hasURL(u string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Contains(p.urls, u)
}

func (p *peer) setActive(u string, since time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cur, p.active = u, since
	if u != "" {
		if i := slices.Index(p.urls, u); i >= 0 {
			p.next = i
		}
	}
}

func (p *peer) activeSince() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.active
}

// enqueue queues m without blocking, dropping it if the queue is full.
func (p *peer) enqueue(m *raftpb.Message) {
	select {
	case p.queue <- m:
	default:
		p.drop(m, "queue full")
	}
}

func (p *peer) drop(m *raftpb.Message, why string) {
	p.dropped.Add(1)
	if p.dropping.CompareAndSwap(false, true) {
		p.lg.Warn("dropping messages to peer", zap.String("reason", why))
	}
	p.lg.Debug("dropped message", zap.String("reason", why), zap.Stringer("type", m.GetType()))
	p.t.queueUnreachable(p.id)
}

// run keeps a message stream to the peer open and writes queued messages to it, until the
// peer is removed or the transport closed.
func (p *peer) run() {
	defer p.cancel()
	bo := backoff{cur: minBackoff}
	failing := false
	for {
		s, err := p.connect()
		if err != nil {
			if p.ctx.Err() != nil {
				return
			}
			if !failing {
				p.lg.Warn("cannot connect message stream to peer", zap.Error(err))
			} else {
				p.lg.Debug("cannot connect message stream to peer", zap.Error(err))
			}
			failing = true
			p.discardQueue("peer unreachable")
			p.t.queueUnreachable(p.id)
			if !p.wait(&bo) {
				return
			}
			continue
		}
		failing = false
		bo.reset()
		p.setActive(s.url, time.Now())
		p.lg.Info("message stream to peer established", zap.String("url", s.url))
		err = p.pump(s)
		p.setActive("", time.Time{})
		s.close()
		if p.ctx.Err() != nil {
			return
		}
		p.lg.Warn("message stream to peer broken", zap.String("url", s.url), zap.Error(err))
		p.t.queueUnreachable(p.id)
		if !p.wait(&bo) {
			return
		}
	}
}

// discardQueue drops whatever is queued: it would be stale by the time the peer is back,
// and raft retransmits.
func (p *peer) discardQueue(why string) {
	for {
		select {
		case m := <-p.queue:
			p.drop(m, why)
		default:
			return
		}
	}
}

// wait waits for the next backoff interval, or less if the peer's URLs change. It returns
// false if the peer is stopping.
func (p *peer) wait(bo *backoff) bool {
	timer := time.NewTimer(bo.next())
	defer timer.Stop()
	select {
	case <-p.ctx.Done():
		return false
	case <-timer.C:
		return true
	case <-p.urlc:
		bo.reset()
		return true
	}
}

// pump writes batches of queued messages to s until s breaks or the peer stops.
func (p *peer) pump(s *stream) error {
	limit := p.t.cfg.MaxMessageSize
	buf := make([]byte, 0, 64<<10)
	for {
		var m *raftpb.Message
		select {
		case <-p.ctx.Done():
			return p.ctx.Err()
		case <-s.done:
			return s.err
		case <-p.urlc:
			if !p.hasURL(s.url) {
				return errURLRemoved
			}
			continue
		case m = <-p.queue:
		}
		buf = buf[:0]
		n := 0
		for m != nil {
			var err error
			buf, err = appendFrame(buf, m, limit)
			if err != nil {
				p.lg.Error("cannot send message", zap.Error(err))
				p.drop(m, "cannot encode")
			} else {
				n++
			}
			m = nil
			if len(buf) >= maxBatchBytes || n >= maxBatchMsgs {
				break
			}
			select {
			case m = <-p.queue:
			default:
			}
		}
		if len(buf) == 0 {
			continue
		}
		if _, err := s.pw.Write(buf); err != nil {
			return fmt.Errorf("write %d messages to stream: %w", n, err)
		}
		p.batches.Add(1)
		p.sent.Add(uint64(n))
		p.dropping.Store(false)
		if cap(buf) > 4*maxBatchBytes {
			buf = make([]byte, 0, 64<<10)
		}
	}
}

// stream is an established outgoing message stream: a POST whose body is fed through pw.
type stream struct {
	url         string
	pw          *io.PipeWriter
	cancel      context.CancelCauseFunc
	stopClosing func()
	done        chan struct{} // closed when the response ends; err is then set
	err         error
}

// close ends the request and waits for the response watcher.
func (s *stream) close() {
	_ = s.pw.Close()
	s.cancel(errStreamClosed)
	s.stopClosing()
	<-s.done
}

// closeOnCancel closes pr with ctx's cause once ctx is done. The returned function stops
// that, or waits for it if it is already running.
func closeOnCancel(ctx context.Context, pr *io.PipeReader) func() {
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(fired)
		_ = pr.CloseWithError(context.Cause(ctx))
	})
	return func() {
		if !stop() {
			<-fired
		}
	}
}

// connect opens a message stream, trying the peer's URLs in turn.
func (p *peer) connect() (*stream, error) {
	var errs []error
	for _, u := range p.urlOrder() {
		s, err := p.dial(u)
		if err == nil {
			return s, nil
		}
		if p.ctx.Err() != nil {
			return nil, p.ctx.Err()
		}
		p.markFailed(u)
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// dial opens a message stream at peer URL u and waits until the peer accepts it.
func (p *peer) dial(u string) (*stream, error) {
	ctx, cancel := context.WithCancelCause(p.ctx)
	pr, pw := io.Pipe()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u+streamPath, pr)
	if err != nil {
		cancel(err)
		return nil, fmt.Errorf("new stream request to %s: %w", u, err)
	}
	req.ContentLength = -1
	p.t.setHeaders(req.Header, p.id, streamContentType)

	// The HTTP client waits for its body reader before returning from a cancelled request,
	// so cancellation must close the pipe.
	stopClosing := closeOnCancel(ctx, pr)
	fail := func(err error) (*stream, error) {
		cancel(err)
		stopClosing()
		return nil, err
	}

	// The timer callback only cancels the request; it never blocks.
	timer := time.AfterFunc(p.t.cfg.DialTimeout, func() { cancel(errStreamHandshakeTimeout) })
	resp, err := p.t.client.Do(req)
	timedOut := !timer.Stop()
	if err != nil {
		if timedOut {
			err = fmt.Errorf("%w: %w", errStreamHandshakeTimeout, err)
		}
		return fail(fmt.Errorf("open stream to %s: %w", u, err))
	}
	if timedOut || resp.StatusCode != http.StatusOK {
		msg := readErrorBody(resp.Body)
		_ = resp.Body.Close()
		if timedOut {
			return fail(fmt.Errorf("open stream to %s: %w", u, errStreamHandshakeTimeout))
		}
		return fail(fmt.Errorf("open stream to %s: peer answered %s: %s", u, resp.Status, msg))
	}

	s := &stream{url: u, pw: pw, cancel: cancel, stopClosing: stopClosing, done: make(chan struct{})}
	ok := p.t.goTracked(func() {
		// The peer never sends data on the response: it ends when the peer closes the
		// stream, or when ctx is cancelled (client request contexts bound body reads).
		_, err := io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if err == nil {
			err = errStreamEnded
		}
		s.err = fmt.Errorf("stream to %s: %w", u, err)
		cancel(s.err) // also closes the pipe, unblocking a pump stuck writing into it
		close(s.done)
	})
	if !ok {
		_ = resp.Body.Close()
		return fail(fmt.Errorf("open stream to %s: %w", u, errStreamClosed))
	}
	return s, nil
}

// readErrorBody reads the start of an error response for logging.
func readErrorBody(r io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(r, errorBodyLimit))
	return string(bytes.TrimSpace(b))
}

// backoff is a capped exponential backoff with jitter.
type backoff struct {
	cur time.Duration
}

func (b *backoff) reset() { b.cur = minBackoff }

// next returns a wait between cur/2 and cur and doubles cur, up to maxBackoff.
func (b *backoff) next() time.Duration {
	d := b.cur/2 + rand.N(b.cur/2+1)
	b.cur = min(2*b.cur, maxBackoff)
	return d
}
