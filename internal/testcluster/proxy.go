package testcluster

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/ordo-db/ordo/internal/transport"
)

// Proxy forwards the inbound peer connections of one member to that member's real peer
// listener and injects faults into them: partitions, delays and lossy links.
//
// The proxy learns who sent a connection from the header block of its first HTTP request:
// the peer transport opens every connection with a POST carrying X-Ordo-From and X-Ordo-To
// (see internal/transport), and a keep-alive connection only ever carries requests of the
// same sender. After the header block the proxy pipes raw bytes both ways. A connection
// whose first bytes are not such a header is forwarded unchanged with an unknown sender
// (Pair{}), and no fault applies to it.
//
// Faults are keyed by Pair, the direction of traffic between two member ids:
//   - a cut (Partition) applies to connections opened by From to To, that is to the raft
//     messages From sends to To. The answers To writes back on such a connection (HTTP
//     status lines only) belong to the same cut; the connections To opens to From are not
//     affected, which makes one-way partitions possible.
//   - a delay applies to bytes travelling From→To: the request bytes of connections opened
//     by From to To, and the response bytes of connections opened by To to From.
//   - a drop rate applies, like a cut, to the connections opened by From to To.
//
// All methods are safe for concurrent use. Close stops every goroutine of the proxy.
type Proxy struct {
	ln     net.Listener
	target string
	done   chan struct{}
	wg     sync.WaitGroup

	mu struct {
		sync.Mutex
		closed bool
		conns  map[*proxyConn]struct{}
		cut    map[Pair]bool
		delay  map[Pair]delayRule
		drop   map[Pair]float64
		stats  map[Pair]*PairStats
	}
}

// Pair is a direction of traffic between two members, by member id. The zero Pair stands
// for connections whose sender is unknown.
type Pair struct {
	From, To uint64
}

func (p Pair) String() string {
	return strconv.FormatUint(p.From, 16) + "->" + strconv.FormatUint(p.To, 16)
}

func (p Pair) reverse() Pair { return Pair{From: p.To, To: p.From} }

// PairStats counts the traffic of one Pair.
type PairStats struct {
	// Bytes is the number of bytes forwarded From→To.
	Bytes int64
	// Conns is the number of connections From opened to To.
	Conns int64
	// Cut is the number of those connections the proxy refused or closed on purpose
	// (partition or drop rate).
	Cut int64
}

type delayRule struct {
	d, jitter time.Duration
}

// next returns one delay drawn uniformly from [d-jitter, d+jitter], never negative.
func (r delayRule) next() time.Duration {
	d := r.d
	if r.jitter > 0 {
		d += rand.N(2*r.jitter+1) - r.jitter
	}
	return max(d, 0)
}

const (
	// maxHeaderBytes bounds the header block the proxy reads to learn the sender.
	maxHeaderBytes = 16 << 10
	// headerTimeout bounds the wait for that header block; a client that says nothing
	// first is forwarded with an unknown sender.
	headerTimeout = 5 * time.Second
	// backendDialTimeout bounds dialing the member's real peer listener.
	backendDialTimeout = time.Second
	// chunkSize is the largest chunk read and forwarded at once.
	chunkSize = 32 << 10
	// chunkQueue is the number of chunks in flight per direction of a connection; a
	// delayed direction holds at most this many before the reader stops reading.
	chunkQueue = 256
	// dropTick is how often established connections are considered for a random cut.
	dropTick = 50 * time.Millisecond
)

// NewProxy listens on listenAddr ("127.0.0.1:0" picks a free port) and forwards every
// connection to target, a host:port.
func NewProxy(listenAddr, target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", listenAddr)
	if err != nil {
		return nil, fmt.Errorf("proxy for %s: listen on %s: %w", target, listenAddr, err)
	}
	p := &Proxy{ln: ln, target: target, done: make(chan struct{})}
	p.mu.conns = map[*proxyConn]struct{}{}
	p.mu.cut = map[Pair]bool{}
	p.mu.delay = map[Pair]delayRule{}
	p.mu.drop = map[Pair]float64{}
	p.mu.stats = map[Pair]*PairStats{}
	p.wg.Add(2)
	go p.acceptLoop()
	go p.dropLoop()
	return p, nil
}

// Addr is the address the proxy listens on, host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target is the address the proxy forwards to.
func (p *Proxy) Target() string { return p.target }

// Partition cuts the traffic From sends To: the connections From opened to To are closed,
// and new ones are accepted, their header read and then closed at once. Closing (rather
// than silently dropping bytes) makes the sender's stream fail immediately, so its
// transport reports the peer unreachable and keeps redialling with backoff, and the byte
// stream is never left half-delivered; raft itself notices the silence through its
// heartbeat and election timeouts either way. Heal undoes it.
func (p *Proxy) Partition(from, to uint64) {
	pair := Pair{From: from, To: to}
	p.mu.Lock()
	p.mu.cut[pair] = true
	victims := p.connsLocked(pair)
	p.mu.Unlock()
	for _, c := range victims {
		p.countCut(pair)
		c.close()
	}
}

// Heal removes the cut, the delay and the drop rate of the pair from→to.
func (p *Proxy) Heal(from, to uint64) {
	pair := Pair{From: from, To: to}
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.mu.cut, pair)
	delete(p.mu.delay, pair)
	delete(p.mu.drop, pair)
}

// HealAll removes every fault.
func (p *Proxy) HealAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.mu.cut)
	clear(p.mu.delay)
	clear(p.mu.drop)
}

// Delay delivers every chunk forwarded from→to d ± jitter after it was read (uniformly
// drawn per chunk), keeping the order of the bytes of each connection; other connections
// are not held up. A zero d and jitter removes the delay. Chunks already in flight keep
// the delay they were given.
func (p *Proxy) Delay(from, to uint64, d, jitter time.Duration) {
	pair := Pair{From: from, To: to}
	p.mu.Lock()
	defer p.mu.Unlock()
	if d <= 0 && jitter <= 0 {
		delete(p.mu.delay, pair)
		return
	}
	p.mu.delay[pair] = delayRule{d: d, jitter: max(jitter, 0)}
}

// DropRate makes the link from→to lossy: each new connection From opens to To is cut at
// once with probability rate (capped at 1), and each established one is cut at random
// moments, rate times per second on average. Cutting whole connections models loss
// without corrupting the byte streams; raft streams reconnect. A rate of 0 removes it.
func (p *Proxy) DropRate(from, to uint64, rate float64) {
	pair := Pair{From: from, To: to}
	p.mu.Lock()
	defer p.mu.Unlock()
	if rate <= 0 {
		delete(p.mu.drop, pair)
		return
	}
	p.mu.drop[pair] = rate
}

// Stats returns a copy of the traffic counters, per pair.
func (p *Proxy) Stats() map[Pair]PairStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[Pair]PairStats, len(p.mu.stats))
	for k, v := range p.mu.stats {
		out[k] = *v
	}
	return out
}

// Close stops listening, closes every connection and waits for all goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.mu.closed {
		p.mu.Unlock()
		return nil
	}
	p.mu.closed = true
	close(p.done)
	conns := make([]*proxyConn, 0, len(p.mu.conns))
	for c := range p.mu.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	err := p.ln.Close()
	for _, c := range conns {
		c.close()
	}
	p.wg.Wait()
	if err != nil {
		return fmt.Errorf("close proxy %s: %w", p.Addr(), err)
	}
	return nil
}

// proxyConn is one forwarded connection.
type proxyConn struct {
	client net.Conn
	pair   Pair // zero if the sender is unknown; guarded by Proxy.mu
	done   chan struct{}

	mu struct {
		sync.Mutex
		closed  bool
		backend net.Conn // nil until dialled
	}
}

// close closes both sides; the pipes notice and end.
func (c *proxyConn) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.closed {
		return
	}
	c.mu.closed = true
	close(c.done)
	_ = c.client.Close()
	if c.mu.backend != nil {
		_ = c.mu.backend.Close()
	}
}

// setBackend attaches the dialled backend, unless c was closed meanwhile.
func (c *proxyConn) setBackend(b net.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.closed {
		return false
	}
	c.mu.backend = b
	return true
}

func (p *Proxy) connsLocked(pair Pair) []*proxyConn {
	var out []*proxyConn
	for c := range p.mu.conns {
		if c.pair == pair {
			out = append(out, c)
		}
	}
	return out
}

func (p *Proxy) statsLocked(pair Pair) *PairStats {
	s := p.mu.stats[pair]
	if s == nil {
		s = &PairStats{}
		p.mu.stats[pair] = s
	}
	return s
}

func (p *Proxy) countCut(pair Pair) {
	p.mu.Lock()
	p.statsLocked(pair).Cut++
	p.mu.Unlock()
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		conn, err := p.ln.Accept()
		if err != nil {
			select {
			case <-p.done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			// The listener is broken; nothing more can be accepted.
			return
		}
		c := &proxyConn{client: conn, done: make(chan struct{})}
		if !p.track(c) {
			_ = conn.Close()
			return
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

// track registers c, unless the proxy is closing.
func (p *Proxy) track(c *proxyConn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mu.closed {
		return false
	}
	p.mu.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c *proxyConn) {
	p.mu.Lock()
	delete(p.mu.conns, c)
	p.mu.Unlock()
}

// serve learns the sender of c, applies the faults for a new connection, dials the backend
// and pipes both directions until both end or c is closed.
func (p *Proxy) serve(c *proxyConn) {
	defer p.wg.Done()
	defer p.untrack(c)
	defer c.close()

	br := bufio.NewReaderSize(c.client, maxHeaderBytes)
	_ = c.client.SetReadDeadline(time.Now().Add(headerTimeout))
	head, pair := readHeader(br)
	_ = c.client.SetReadDeadline(time.Time{})
	readAt := time.Now()

	p.mu.Lock()
	if p.mu.closed {
		p.mu.Unlock()
		return
	}
	c.pair = pair
	st := p.statsLocked(pair)
	st.Conns++
	refuse := p.mu.cut[pair]
	if rate, ok := p.mu.drop[pair]; ok && !refuse && rand.Float64() < rate {
		refuse = true
	}
	if refuse && pair != (Pair{}) {
		st.Cut++
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()

	backend, err := net.DialTimeout("tcp", p.target, backendDialTimeout)
	if err != nil {
		// The member is down (killed or restarting); the sender sees a closed connection
		// and redials, as it would see a refused one.
		return
	}
	// A Partition after the pair was recorded closed c; it must not be revived.
	if !c.setBackend(backend) {
		_ = backend.Close()
		return
	}

	var pipes sync.WaitGroup
	pipes.Add(2)
	go func() {
		defer pipes.Done()
		p.pipe(c, backend, br, head, readAt, pair)
	}()
	go func() {
		defer pipes.Done()
		p.pipe(c, c.client, backend, nil, time.Time{}, pair.reverse())
	}()
	pipes.Wait()
}

// readHeader reads the header block of the first HTTP request from br and returns its
// bytes with the sender and receiver it names. If the block is missing, malformed, too
// large or names no sender, it returns whatever was read and the zero Pair.
func readHeader(br *bufio.Reader) ([]byte, Pair) {
	var head []byte
	var pair Pair
	var haveFrom, haveTo bool
	for first := true; ; first = false {
		line, err := br.ReadSlice('\n')
		head = append(head, line...)
		if err != nil || len(head) > maxHeaderBytes {
			return head, Pair{}
		}
		trimmed := bytes.TrimRight(line, "\r\n")
		if first {
			// A request line: METHOD SP target SP HTTP/x.y
			if !bytes.Contains(trimmed, []byte(" HTTP/")) {
				return head, Pair{}
			}
			continue
		}
		if len(trimmed) == 0 {
			break
		}
		name, value, ok := bytes.Cut(trimmed, []byte(":"))
		if !ok {
			return head, Pair{}
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(bytes.TrimSpace(name), []byte(transport.HeaderFrom)):
			id, err := strconv.ParseUint(string(value), 16, 64)
			if err != nil {
				return head, Pair{}
			}
			pair.From, haveFrom = id, true
		case bytes.EqualFold(bytes.TrimSpace(name), []byte(transport.HeaderTo)):
			id, err := strconv.ParseUint(string(value), 16, 64)
			if err != nil {
				return head, Pair{}
			}
			pair.To, haveTo = id, true
		}
	}
	if !haveFrom || !haveTo {
		return head, Pair{}
	}
	return head, pair
}

type chunk struct {
	b   []byte
	due time.Time
}

// pipe forwards src to dst for the pair: first (read at firstAt) and then everything read
// from src, each chunk delivered when its delay has passed. On a clean end of src it
// half-closes dst once everything is delivered; on any error it closes the connection.
func (p *Proxy) pipe(c *proxyConn, dst net.Conn, src io.Reader, first []byte, firstAt time.Time, pair Pair) {
	queue := make(chan chunk, chunkQueue)
	var last time.Time // due time of the previous chunk: order is preserved
	stamp := func(b []byte, at time.Time) chunk {
		due := at
		p.mu.Lock()
		rule, ok := p.mu.delay[pair]
		p.mu.Unlock()
		if ok && pair != (Pair{}) && pair.From != pair.To {
			due = at.Add(rule.next())
		}
		if due.Before(last) {
			due = last
		}
		last = due
		return chunk{b: b, due: due}
	}

	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		defer close(queue)
		if len(first) > 0 {
			select {
			case queue <- stamp(first, firstAt):
			case <-c.done:
				return
			}
		}
		buf := make([]byte, chunkSize)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				select {
				case queue <- stamp(bytes.Clone(buf[:n]), time.Now()):
				case <-c.done:
					return
				}
			}
			if err != nil {
				if !errors.Is(err, io.EOF) {
					c.close()
				}
				return
			}
		}
	}()

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	clean := true
	for ch := range queue {
		if wait := time.Until(ch.due); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-c.done:
				clean = false
			}
		}
		if !clean {
			break
		}
		if _, err := dst.Write(ch.b); err != nil {
			clean = false
			break
		}
		p.mu.Lock()
		p.statsLocked(pair).Bytes += int64(len(ch.b))
		p.mu.Unlock()
	}
	if !clean {
		c.close()
		<-readerDone
		return
	}
	<-readerDone
	select {
	case <-c.done:
		return
	default:
	}
	if tc, ok := dst.(interface{ CloseWrite() error }); ok {
		if err := tc.CloseWrite(); err != nil {
			c.close()
		}
	} else {
		c.close()
	}
}

// dropLoop cuts established connections of lossy pairs at random moments.
func (p *Proxy) dropLoop() {
	defer p.wg.Done()
	tick := time.NewTicker(dropTick)
	defer tick.Stop()
	for {
		select {
		case <-p.done:
			return
		case <-tick.C:
		}
		var victims []*proxyConn
		p.mu.Lock()
		for c := range p.mu.conns {
			rate, ok := p.mu.drop[c.pair]
			if !ok || c.pair == (Pair{}) {
				continue
			}
			// A Poisson process of rate events per second fires within one tick with
			// probability 1 - e^(-rate·tick).
			if rand.Float64() < 1-math.Exp(-rate*dropTick.Seconds()) {
				victims = append(victims, c)
			}
		}
		p.mu.Unlock()
		for _, c := range victims {
			p.countCut(c.pair)
			c.close()
		}
	}
}
