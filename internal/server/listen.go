package server

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
)

// listen opens a listener for a client or peer URL: host:port for http(s), a socket path for
// unix(s).
func listen(u url.URL) (net.Listener, error) {
	switch u.Scheme {
	case "unix", "unixs":
		path := u.Host + u.Path
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove stale socket %q: %w", path, err)
		}
		l, err := net.Listen("unix", path)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", u.String(), err)
		}
		return l, nil
	default:
		l, err := net.Listen("tcp", u.Host)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", u.String(), err)
		}
		return l, nil
	}
}

// http2Preface starts every HTTP/2 connection (gRPC clients speak it without TLS).
const http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// splitListener routes each accepted connection by its first bytes: HTTP/2 (gRPC) to one
// listener, everything else (HTTP/1: JSON gateway, /health, /version, or garbage) to the other.
type splitListener struct {
	inner     net.Listener
	grpc, web *chanListener
	wg        sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	sniffed map[net.Conn]struct{} // connections whose first bytes are still awaited
}

func newSplitListener(l net.Listener) *splitListener {
	s := &splitListener{inner: l, grpc: newChanListener(l.Addr()), web: newChanListener(l.Addr()), sniffed: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.acceptLoop()
	return s
}

func (s *splitListener) acceptLoop() {
	defer s.wg.Done()
	defer s.grpc.Close()
	defer s.web.Close()
	for {
		c, err := s.inner.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.route(c)
		}()
	}
}

func (s *splitListener) route(c net.Conn) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = c.Close()
		return
	}
	s.sniffed[c] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.sniffed, c)
		s.mu.Unlock()
	}()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReaderSize(c, len(http2Preface))
	isH2 := true
	for n := 1; n <= len(http2Preface); n++ {
		b, err := br.Peek(n)
		if err != nil {
			if len(b) == 0 {
				_ = c.Close()
				return
			}
			isH2 = false
			break
		}
		if b[n-1] != http2Preface[n-1] {
			isH2 = false
			break
		}
	}
	_ = c.SetReadDeadline(time.Time{})
	pc := &peekedConn{Conn: c, r: br}
	target := s.web
	if isH2 {
		target = s.grpc
	}
	if !target.deliver(pc) {
		_ = c.Close()
	}
}

// Close stops accepting and waits for the routing goroutines.
func (s *splitListener) Close() error {
	err := s.inner.Close()
	s.mu.Lock()
	s.closed = true
	for c := range s.sniffed {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// chanListener is a net.Listener fed by splitListener.
type chanListener struct {
	addr   net.Addr
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *chanListener) deliver(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.closed:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// urlStrings renders URLs as strings.
func urlStrings(us []url.URL) []string {
	out := make([]string, len(us))
	for i, u := range us {
		out[i] = strings.TrimSuffix(u.String(), "/")
	}
	return out
}
