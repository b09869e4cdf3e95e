package testcluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ordo-db/ordo/internal/transport"
)

// echoServer is a plain TCP backend that echoes every byte back.
type echoServer struct {
	ln net.Listener
	wg sync.WaitGroup
	mu sync.Mutex
	cs []net.Conn
}

func newEchoServer(t *testing.T) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	s := &echoServer{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.cs = append(s.cs, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		s.mu.Lock()
		for _, c := range s.cs {
			_ = c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func newTestProxy(t *testing.T, target string) *Proxy {
	t.Helper()
	p, err := NewProxy("127.0.0.1:0", target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("close proxy: %v", err)
		}
	})
	return p
}

func header(from, to uint64) string {
	return fmt.Sprintf("POST /raft/stream HTTP/1.1\r\nHost: x\r\n%s: %x\r\n%s: %x\r\nTransfer-Encoding: chunked\r\n\r\n",
		transport.HeaderFrom, from, transport.HeaderTo, to)
}

// peerConn dials the proxy as member from talking to member to, and waits until the
// header came back through the echo backend.
func peerConn(t *testing.T, p *Proxy, from, to uint64) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatalf("dial proxy: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	h := header(from, to)
	if _, err := io.WriteString(c, h); err != nil {
		t.Fatalf("write header: %v", err)
	}
	readExactly(t, c, h, 5*time.Second)
	return c
}

func readExactly(t *testing.T, c net.Conn, want string, timeout time.Duration) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read %q: %v", want, err)
	}
	if string(got) != want {
		t.Fatalf("read %q, want %q", got, want)
	}
	_ = c.SetReadDeadline(time.Time{})
}

// expectClosed waits until the proxy closes c.
func expectClosed(t *testing.T, c net.Conn, timeout time.Duration) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %v", timeout)
	}
}

func echo(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	readExactly(t, c, msg, 5*time.Second)
}

func TestProxySenderDetection(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	be := newEchoServer(t)
	p := newTestProxy(t, be.ln.Addr().String())

	c := peerConn(t, p, 0xa1, 0xb2)
	echo(t, c, "hello")
	_ = c.Close()

	// Bytes that are not an HTTP header are forwarded unchanged, sender unknown.
	raw, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	echo(t, raw, "not http at all\n\n")
	_ = raw.Close()

	// A header without X-Ordo-From is forwarded too, sender unknown.
	noFrom, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	echo(t, noFrom, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	_ = noFrom.Close()

	waitFor(t, 5*time.Second, func() bool {
		st := p.Stats()
		known, unknown := st[Pair{From: 0xa1, To: 0xb2}], st[Pair{}]
		back := st[Pair{From: 0xb2, To: 0xa1}]
		wantBytes := int64(len(header(0xa1, 0xb2)) + len("hello"))
		return known.Conns == 1 && known.Bytes == wantBytes && back.Bytes == wantBytes && unknown.Conns == 2
	}, func() string { return fmt.Sprint(p.Stats()) })
}

func TestProxyHTTP(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s:%s", r.Header.Get(transport.HeaderFrom), b)
	}))
	defer srv.Close()
	p := newTestProxy(t, strings.TrimPrefix(srv.URL, "http://"))
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	cli := &http.Client{Transport: tr}
	for i := range 3 {
		req, err := http.NewRequest(http.MethodPost, "http://"+p.Addr()+"/raft/snapshot", strings.NewReader(strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set(transport.HeaderFrom, "7")
		req.Header.Set(transport.HeaderTo, "9")
		resp, err := cli.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil || string(b) != "7:"+strconv.Itoa(i) {
			t.Fatalf("response %q, %v", b, err)
		}
	}
	// Keep-alive: one connection carried all three requests.
	if st := p.Stats()[Pair{From: 7, To: 9}]; st.Conns != 1 {
		t.Fatalf("stats %+v, want one connection", st)
	}
}

func TestProxyPartitionAndHeal(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	be := newEchoServer(t)
	p := newTestProxy(t, be.ln.Addr().String())

	cut := peerConn(t, p, 1, 2)
	other := peerConn(t, p, 3, 2)
	p.Partition(1, 2)
	expectClosed(t, cut, 5*time.Second)
	echo(t, other, "still here")

	// New connections from 1 are accepted and closed at once, without an echo.
	for range 3 {
		c, err := net.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(c, header(1, 2))
		expectClosed(t, c, 5*time.Second)
		_ = c.Close()
	}
	// The reverse direction is untouched by a one-way cut.
	echo(t, peerConn(t, p, 2, 1), "reverse")
	if st := p.Stats()[Pair{From: 1, To: 2}]; st.Cut != 4 || st.Conns != 4 {
		t.Fatalf("stats %+v, want 4 connections all cut", st)
	}

	p.Heal(1, 2)
	echo(t, peerConn(t, p, 1, 2), "healed")

	p.Partition(1, 2)
	p.Partition(3, 2)
	expectClosed(t, other, 5*time.Second)
	p.HealAll()
	echo(t, peerConn(t, p, 3, 2), "healed all")
	echo(t, peerConn(t, p, 1, 2), "healed all")
}

func TestProxyDelay(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	be := newEchoServer(t)
	p := newTestProxy(t, be.ln.Addr().String())
	slow := peerConn(t, p, 1, 2)
	fast := peerConn(t, p, 3, 2)

	const d, jitter = 200 * time.Millisecond, 100 * time.Millisecond
	p.Delay(1, 2, d, jitter)

	// Many small writes, each read as its own chunk as far as the timing allows: they
	// arrive in order and none before d-jitter.
	var want bytes.Buffer
	start := time.Now()
	for i := range 50 {
		msg := fmt.Sprintf("[%d]", i)
		want.WriteString(msg)
		if _, err := io.WriteString(slow, msg); err != nil {
			t.Fatal(err)
		}
	}
	// Another connection is not held up by the delayed one.
	echo(t, fast, "quick")
	if el := time.Since(start); el >= d-jitter {
		t.Fatalf("undelayed connection took %v", el)
	}
	br := bufio.NewReader(slow)
	_ = slow.SetReadDeadline(time.Now().Add(5 * time.Second))
	first, err := br.ReadByte()
	if err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < d-jitter {
		t.Fatalf("first delayed byte after %v, want at least %v", el, d-jitter)
	}
	rest := make([]byte, want.Len()-1)
	if _, err := io.ReadFull(br, rest); err != nil {
		t.Fatal(err)
	}
	if got := string(first) + string(rest); got != want.String() {
		t.Fatalf("delayed bytes out of order:\n got %s\nwant %s", got, want.String())
	}

	// Removing the delay makes the link fast again.
	p.Delay(1, 2, 0, 0)
	start = time.Now()
	echo(t, slow, "fast again")
	if el := time.Since(start); el >= d-jitter {
		t.Fatalf("echo after removing the delay took %v", el)
	}
}

func TestProxyDropRate(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	be := newEchoServer(t)
	p := newTestProxy(t, be.ln.Addr().String())
	established := peerConn(t, p, 1, 2)

	// Rate 50/s: the established connection is cut within a few ticks.
	p.DropRate(1, 2, 50)
	expectClosed(t, established, 5*time.Second)
	// Rate ≥ 1 also refuses every new connection.
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, header(1, 2))
	expectClosed(t, c, 5*time.Second)

	p.DropRate(1, 2, 0)
	echo(t, peerConn(t, p, 1, 2), "no loss")
}

func TestProxyBackendDown(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	p := newTestProxy(t, addr)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, header(1, 2))
	expectClosed(t, c, 5*time.Second)
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, cond func() bool, describe func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v: %s", timeout, describe())
		}
		waitShort()
	}
}

// TestPausedMemberStops checks that a SIGSTOPped member process is stopped by Stop and Kill
// without waiting for the SIGKILL fallback.
func TestPausedMemberStops(t *testing.T) {
	c := New(t, 1, Options{Process: true, Quiet: true})
	m := c.Members[0]
	m.Pause()
	start := time.Now()
	m.Stop()
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("stopping a paused member took %v", el)
	}
	if err := m.Restart(); err != nil {
		t.Fatal(err)
	}
	m.Pause()
	m.Kill()
	if err := m.Restart(); err != nil {
		t.Fatal(err)
	}
	m.Pause()
	m.Resume()
	cli := m.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatalf("put after resume: %v", err)
	}
	m.Pause() // left paused: Close must still end it
}

// TestPeerProxyInProcess runs a proxied in-process cluster: the member ids are learned, a
// partitioned member rejoins after Heal, and traffic is counted per link.
func TestPeerProxyInProcess(t *testing.T) {
	c := New(t, 3, Options{PeerProxy: true, Quiet: true})
	for i, m := range c.Members {
		if m.PeerURL == m.ListenPeerURL {
			t.Fatalf("member %d advertises its listen URL %s, not its proxy", i, m.PeerURL)
		}
		if c.MemberID(i) == 0 {
			t.Fatalf("member %d has no id", i)
		}
	}
	lead, err := c.Leader(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.Isolate(lead)
	var eps []string
	for i, m := range c.Members {
		if i != lead {
			eps = append(eps, m.ClientURL)
		}
	}
	cli := c.newClient(eps)
	// A proposal forwarded to the old leader is lost; put once the majority follows another.
	waitFor(t, 30*time.Second, func() bool {
		for _, ep := range eps {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			st, err := cli.Status(ctx, ep)
			cancel()
			if err != nil || st.Leader == 0 || st.Leader == c.MemberID(lead) {
				return false
			}
		}
		return true
	}, func() string { return "the majority still follows the isolated leader" })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatalf("put with an isolated leader: %v", err)
	}
	c.Heal()
	if _, err := c.Leader(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	st := c.ProxyStats()
	for i := range c.Members {
		for j := range c.Members {
			if i == j {
				continue
			}
			if s := st[Pair{From: c.MemberID(i), To: c.MemberID(j)}]; s.Conns == 0 || s.Bytes == 0 {
				t.Errorf("link m%d->m%d: %+v", i, j, s)
			}
		}
	}
	if s := st[Pair{From: c.MemberID(lead), To: c.MemberID((lead + 1) % 3)}]; s.Cut == 0 {
		t.Errorf("isolating m%d cut nothing: %+v", lead, s)
	}
}
