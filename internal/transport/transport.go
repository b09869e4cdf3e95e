package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
)

// Raft is what the transport delivers incoming messages to (the raft node).
//
// ReportUnreachable and ReportSnapshot are called from the transport's own goroutines,
// never from Send's caller. They should not block for long, and must return once the
// node has stopped, or Close will wait for them.
type Raft interface {
	Process(ctx context.Context, m *raftpb.Message) error
	ReportUnreachable(id uint64)
	ReportSnapshot(id uint64, status raft.SnapshotStatus)
}

// Snapshotter moves state-machine data for MsgSnap messages. Raft snapshot messages carry
// only metadata; the data is streamed.
type Snapshotter interface {
	// WriteSnapshot streams the state for the outgoing snapshot message m to w.
	WriteSnapshot(ctx context.Context, m *raftpb.Message, w io.Writer) error
	// ReceiveSnapshot consumes the stream for incoming snapshot message m (staging it
	// durably); after it returns nil the transport passes m to Raft.Process.
	ReceiveSnapshot(ctx context.Context, m *raftpb.Message, r io.Reader) error
}

// Defaults for the optional Config fields.
const (
	DefaultDialTimeout    = time.Second
	DefaultQueueSize      = 4096
	DefaultMaxMessageSize = 64 << 20
)

// Config configures a Transport.
type Config struct {
	// LocalID is this member's raft id. Required.
	LocalID uint64
	// ClusterID is sent on every request and checked on every incoming one. Required.
	ClusterID uint64
	// Raft receives incoming messages and delivery reports. Required.
	Raft Raft
	// Snapshotter streams the data of MsgSnap messages. If nil, outgoing snapshots fail
	// (reported as raft.SnapshotFailure) and incoming ones are refused.
	Snapshotter Snapshotter
	// Logger defaults to a no-op logger.
	Logger *zap.Logger
	// DialTimeout bounds connecting to a peer and, for the message stream, waiting for the
	// peer to accept it. Default DefaultDialTimeout.
	DialTimeout time.Duration
	// TLS is the client configuration for https peer URLs; nil uses Go's defaults for
	// https and plain HTTP for http URLs. Server-side TLS belongs to the peer listener.
	TLS *tls.Config
	// QueueSize is the number of messages buffered per peer before Send starts dropping.
	// Default DefaultQueueSize.
	QueueSize int
	// MaxMessageSize is the largest marshaled message sent or accepted, in bytes.
	// Default DefaultMaxMessageSize (64 MiB).
	MaxMessageSize int
}

// Transport sends raft messages to the other members and receives theirs. See the package
// documentation for the protocol. All methods are safe for concurrent use.
type Transport struct {
	cfg    Config
	lg     *zap.Logger
	client *http.Client
	httpTr *http.Transport

	// ctx is cancelled by Close; every goroutine and handler watches it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.RWMutex
	closed  bool
	peers   map[uint64]*peer
	removed map[uint64]struct{}
	inbound map[uint64]*inbound

	// Reports queued by Send (which must not call into Raft) and delivered by the
	// reporter goroutine. Repeated reports for one peer coalesce.
	repMu        sync.Mutex
	pendUnreach  map[uint64]struct{}
	pendSnapFail map[uint64]struct{}
	repc         chan struct{}

	handler http.Handler
}

// inbound is an incoming message stream; a newer stream from the same peer replaces it.
type inbound struct {
	cancel context.CancelFunc
}

// New validates cfg, fills in defaults and returns a running Transport with no peers.
func New(cfg Config) (*Transport, error) {
	if cfg.LocalID == 0 {
		return nil, errors.New("transport: config: LocalID must be non-zero")
	}
	if cfg.ClusterID == 0 {
		return nil, errors.New("transport: config: ClusterID must be non-zero")
	}
	if cfg.Raft == nil {
		return nil, errors.New("transport: config: Raft is required")
	}
	if cfg.DialTimeout < 0 || cfg.QueueSize < 0 || cfg.MaxMessageSize < 0 {
		return nil, fmt.Errorf("transport: config: negative DialTimeout (%v), QueueSize (%d) or MaxMessageSize (%d)",
			cfg.DialTimeout, cfg.QueueSize, cfg.MaxMessageSize)
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.QueueSize == 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.MaxMessageSize == 0 {
		cfg.MaxMessageSize = DefaultMaxMessageSize
	}
	if cfg.MaxMessageSize > 1<<31 {
		return nil, fmt.Errorf("transport: config: MaxMessageSize %d exceeds 2 GiB", cfg.MaxMessageSize)
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	lg := cfg.Logger.With(zap.String("local-member-id", idString(cfg.LocalID)))

	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	dialer := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 15 * time.Second}
	httpTr := &http.Transport{
		Proxy:               nil,
		DialContext:         dialer.DialContext,
		TLSHandshakeTimeout: cfg.DialTimeout,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     30 * time.Second,
		DisableCompression:  true,
		WriteBufferSize:     64 << 10,
		Protocols:           protocols,
	}
	if cfg.TLS != nil {
		httpTr.TLSClientConfig = cfg.TLS.Clone()
	}

	ctx, cancel := context.WithCancel(context.Background())
	t := &Transport{
		cfg:    cfg,
		lg:     lg,
		httpTr: httpTr,
		client: &http.Client{
			Transport: httpTr,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
		ctx:          ctx,
		cancel:       cancel,
		peers:        make(map[uint64]*peer),
		removed:      make(map[uint64]struct{}),
		inbound:      make(map[uint64]*inbound),
		pendUnreach:  make(map[uint64]struct{}),
		pendSnapFail: make(map[uint64]struct{}),
		repc:         make(chan struct{}, 1),
	}
	t.handler = t.newHandler()
	t.goTracked(t.runReporter)
	return t, nil
}

// Handler returns the HTTP handler for the paths under /raft. The server mounts it on every
// peer listener (for example mux.Handle("/raft/", t.Handler())).
func (t *Transport) Handler() http.Handler { return t.handler }

// AddPeer adds peer id reachable at the given peer URLs (for example
// "http://127.0.0.1:2380"), or replaces the URLs of a known peer. It is idempotent.
// Invalid URLs are logged and skipped; a peer with no valid URL is not added.
func (t *Transport) AddPeer(id uint64, urls []string) {
	if id == 0 || id == t.cfg.LocalID {
		t.lg.Warn("ignoring AddPeer for invalid or local member id", zap.String("peer-id", idString(id)))
		return
	}
	clean := t.cleanURLs(id, urls)
	if len(clean) == 0 {
		t.lg.Error("ignoring AddPeer: no usable peer URL",
			zap.String("peer-id", idString(id)), zap.Strings("urls", urls))
		return
	}

	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	delete(t.removed, id)
	if p, ok := t.peers[id]; ok {
		t.mu.Unlock()
		if p.setURLs(clean) {
			t.lg.Info("updated peer URLs", zap.String("peer-id", idString(id)), zap.Strings("urls", clean))
		}
		return
	}
	p := newPeer(t, id, clean)
	t.peers[id] = p
	t.wg.Add(1)
	t.mu.Unlock()

	go func() {
		defer t.wg.Done()
		p.run()
	}()
	t.lg.Info("added peer", zap.String("peer-id", idString(id)), zap.Strings("urls", clean))
}

// RemovePeer stops sending to peer id, aborts its in-flight snapshot and its incoming
// stream, and refuses its requests until it is added again. Its goroutines finish in the
// background; Close waits for them.
func (t *Transport) RemovePeer(id uint64) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	p := t.peers[id]
	delete(t.peers, id)
	t.removed[id] = struct{}{}
	if in := t.inbound[id]; in != nil {
		in.cancel()
		delete(t.inbound, id)
	}
	t.mu.Unlock()
	if p != nil {
		p.cancel()
		t.lg.Info("removed peer", zap.String("peer-id", idString(id)))
	}
}

// Send queues msgs for delivery and returns without blocking. Messages to unknown peers are
// dropped; when a peer's queue is full the message is dropped and Raft.ReportUnreachable is
// called for it (asynchronously). MsgSnap messages are sent on their own request, one at a
// time per peer. The transport keeps the messages: the caller must not modify them.
func (t *Transport) Send(msgs []*raftpb.Message) {
	for _, m := range msgs {
		if m == nil {
			continue
		}
		to := m.GetTo()
		t.mu.RLock()
		p, closed := t.peers[to], t.closed
		t.mu.RUnlock()
		if closed {
			return
		}
		if p == nil {
			t.lg.Debug("dropped message to unknown peer",
				zap.String("peer-id", idString(to)), zap.Stringer("type", m.GetType()))
			continue
		}
		if m.GetType() == raftpb.MsgSnap {
			p.sendSnapshot(m)
			continue
		}
		p.enqueue(m)
	}
}

// ActiveSince returns when the message stream to peer id was established, or the zero time
// if there is none.
func (t *Transport) ActiveSince(id uint64) time.Time {
	t.mu.RLock()
	p := t.peers[id]
	t.mu.RUnlock()
	if p == nil {
		return time.Time{}
	}
	return p.activeSince()
}

// Close stops all peers, aborts in-flight requests, makes the handler refuse new requests and
// end the running ones, and waits for every goroutine the transport started and every
// handler call in progress. It is safe to call more than once.
func (t *Transport) Close() error {
	t.mu.Lock()
	first := !t.closed
	t.closed = true
	t.mu.Unlock()
	t.cancel()
	t.wg.Wait()
	t.httpTr.CloseIdleConnections()
	if first {
		t.lg.Info("transport closed")
	}
	return nil
}

// goTracked runs f on a new goroutine that Close waits for. It returns false, without
// running f, once the transport is closing.
func (t *Transport) goTracked(f func()) bool {
	if !t.enter() {
		return false
	}
	go func() {
		defer t.wg.Done()
		f()
	}()
	return true
}

// enter registers one unit of work with Close's wait group; the caller must call
// t.wg.Done when it is finished. It fails once the transport is closing.
func (t *Transport) enter() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.wg.Add(1)
	return true
}

// queueUnreachable asks the reporter goroutine to call Raft.ReportUnreachable(id).
func (t *Transport) queueUnreachable(id uint64) {
	t.repMu.Lock()
	t.pendUnreach[id] = struct{}{}
	t.repMu.Unlock()
	t.kickReporter()
}

// queueSnapshotFailure asks the reporter goroutine to report raft.SnapshotFailure for id.
func (t *Transport) queueSnapshotFailure(id uint64) {
	t.repMu.Lock()
	t.pendSnapFail[id] = struct{}{}
	t.repMu.Unlock()
	t.kickReporter()
}

func (t *Transport) kickReporter() {
	select {
	case t.repc <- struct{}{}:
	default:
	}
}

// runReporter delivers queued reports so that Send never calls into Raft itself.
func (t *Transport) runReporter() {
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-t.repc:
		}
		t.repMu.Lock()
		unreach, snapFail := t.pendUnreach, t.pendSnapFail
		t.pendUnreach = make(map[uint64]struct{}, len(unreach))
		t.pendSnapFail = make(map[uint64]struct{}, len(snapFail))
		t.repMu.Unlock()
		for id := range snapFail {
			if t.ctx.Err() != nil {
				return
			}
			t.cfg.Raft.ReportSnapshot(id, raft.SnapshotFailure)
		}
		for id := range unreach {
			if t.ctx.Err() != nil {
				return
			}
			t.cfg.Raft.ReportUnreachable(id)
		}
	}
}

// cleanURLs parses and normalizes peer URLs, logging and skipping unusable ones.
func (t *Transport) cleanURLs(id uint64, urls []string) []string {
	out := make([]string, 0, len(urls))
	for _, raw := range urls {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			t.lg.Warn("skipping invalid peer URL", zap.String("peer-id", idString(id)),
				zap.String("url", raw), zap.Error(err))
			continue
		}
		s := u.Scheme + "://" + u.Host + strings.TrimRight(u.Path, "/")
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}
