package transport

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/protobuf/proto"
)

func withQueueSize(n int) memberOpt { return func(c *Config) { c.QueueSize = n } }

func connect(ms ...*member) {
	for _, a := range ms {
		for _, b := range ms {
			if a != b {
				a.tr.AddPeer(b.id, []string{b.url()})
			}
		}
	}
}

// checkOrdered verifies that the messages from sender from are exactly indexes first..first+n-1.
func checkOrdered(t *testing.T, msgs []*raftpb.Message, from, first uint64, n int) {
	t.Helper()
	next := first
	for _, m := range msgs {
		if m.GetFrom() != from {
			continue
		}
		if m.GetIndex() != next {
			t.Fatalf("message from %x: got index %d, want %d", from, m.GetIndex(), next)
		}
		next++
	}
	if got := int(next - first); got != n {
		t.Fatalf("got %d messages from %x, want %d", got, from, n)
	}
}

func countFrom(f *fakeRaft, from uint64) int {
	n := 0
	for _, m := range f.messages() {
		if m.GetFrom() == from {
			n++
		}
	}
	return n
}

func TestNewValidatesConfig(t *testing.T) {
	fr := newFakeRaft()
	for name, cfg := range map[string]Config{
		"no local id":   {ClusterID: 1, Raft: fr},
		"no cluster id": {LocalID: 1, Raft: fr},
		"no raft":       {LocalID: 1, ClusterID: 1},
		"negative":      {LocalID: 1, ClusterID: 1, Raft: fr, QueueSize: -1},
	} {
		if tr, err := New(cfg); err == nil {
			_ = tr.Close()
			t.Errorf("%s: New succeeded", name)
		}
	}
	tr, err := New(Config{LocalID: 1, ClusterID: 1, Raft: fr})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if tr.cfg.DialTimeout != DefaultDialTimeout || tr.cfg.QueueSize != DefaultQueueSize ||
		tr.cfg.MaxMessageSize != DefaultMaxMessageSize {
		t.Errorf("defaults not applied: %+v", tr.cfg)
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tr.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	tr.Send([]*raftpb.Message{app(1, 2, 1)}) // no-op after Close
	tr.AddPeer(2, []string{"http://127.0.0.1:1"})
}

// Three members each send many messages to both others; every receiver gets each sender's
// messages complete and in order, over one stream per sender.
func TestOrderedDelivery(t *testing.T) {
	const n = 10000
	ms := []*member{
		newMember(t, 1, 7, withQueueSize(n)),
		newMember(t, 2, 7, withQueueSize(n)),
		newMember(t, 3, 7, withQueueSize(n)),
	}
	connect(ms...)
	for _, from := range ms {
		for _, to := range ms {
			if from == to {
				continue
			}
			for i := 0; i < n; i += 100 {
				batch := make([]*raftpb.Message, 0, 100)
				for j := i; j < i+100; j++ {
					batch = append(batch, app(from.id, to.id, uint64(j)))
				}
				from.tr.Send(batch)
			}
		}
	}
	for _, to := range ms {
		to.raft.waitFor(t, fmt.Sprintf("%d messages at member %d", 2*n, to.id), func() bool {
			return to.raft.count() >= 2*n
		})
		msgs := to.raft.messages()
		for _, from := range ms {
			if from != to {
				checkOrdered(t, msgs, from.id, 0, n)
			}
		}
		if got := to.streams.Load(); got != 2 {
			t.Errorf("member %d served %d stream requests, want 2", to.id, got)
		}
	}
	for _, from := range ms {
		for _, p := range from.tr.peers {
			if d := p.dropped.Load(); d != 0 {
				t.Errorf("member %d dropped %d messages to %d", from.id, d, p.id)
			}
			if p.batches.Load() >= n {
				t.Errorf("member %d wrote %d batches for %d messages to %d", from.id, p.batches.Load(), n, p.id)
			}
		}
	}
}

// While the stream is being accepted, Send queues; once accepted, the writer sends the
// queue as a few large batches on the one stream.
func TestBatchingUnderLoad(t *testing.T) {
	const n = 20000
	b := newMember(t, 2, 7)
	arrived := make(chan struct{}, 1)
	release := make(chan struct{})
	gated := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == streamPath {
			select {
			case arrived <- struct{}{}:
			default:
			}
			<-release
		}
		b.countingHandler().ServeHTTP(w, r)
	}))
	t.Cleanup(gated.Close)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	a := newMember(t, 1, 7, withQueueSize(n), func(c *Config) { c.DialTimeout = testTimeout })
	a.tr.AddPeer(2, []string{gated.URL})
	<-arrived

	msgs := make([]*raftpb.Message, n)
	for i := range msgs {
		msgs[i] = app(1, 2, uint64(i))
	}
	a.tr.Send(msgs)
	close(release)

	b.raft.waitFor(t, "all messages", func() bool { return b.raft.count() >= n })
	checkOrdered(t, b.raft.messages(), 1, 0, n)
	p := a.tr.peers[2]
	want := uint64((n + maxBatchMsgs - 1) / maxBatchMsgs)
	if got := p.batches.Load(); got != want {
		t.Errorf("wrote %d batches for %d queued messages, want %d", got, n, want)
	}
	if got := b.streams.Load(); got != 1 {
		t.Errorf("served %d stream requests, want 1", got)
	}
}

// sendUntilDelivered sends messages from a to `to` with increasing indexes, starting at
// *idx, until `to` has received one more message from a than it had on entry. Each message
// is either delivered or dropped and reported unreachable, so a report triggers the next
// attempt, as raft would retransmit.
func sendUntilDelivered(t *testing.T, a, to *member, idx *uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	start := countFrom(to.raft, a.id)
	for countFrom(to.raft, a.id) == start {
		before := a.raft.unreachableCount(to.id)
		a.tr.Send([]*raftpb.Message{app(a.id, to.id, *idx)})
		*idx++
		for countFrom(to.raft, a.id) == start && a.raft.unreachableCount(to.id) == before {
			select {
			case <-to.raft.notify:
			case <-a.raft.notify:
			case <-ctx.Done():
				t.Fatal("timed out waiting for delivery")
			}
		}
	}
}

// After the receiver restarts on a new listener and AddPeer gives the new URL, the sender
// reconnects and delivers in order again.
func TestReconnectToNewURL(t *testing.T) {
	a := newMember(t, 1, 7)
	b := newMember(t, 2, 7)
	connect(a, b)
	var idx uint64
	sendUntilDelivered(t, a, b, &idx)
	if a.tr.ActiveSince(2).IsZero() {
		t.Fatal("ActiveSince is zero with a working stream")
	}

	b2 := b.restart(t, 7)
	b2.tr.AddPeer(1, []string{a.url()})
	a.raft.waitFor(t, "unreachable report after restart", func() bool {
		return a.raft.unreachableCount(2) > 0
	})
	a.tr.AddPeer(2, []string{b2.url()})
	sendUntilDelivered(t, a, b2, &idx)

	first := idx
	for i := range 500 {
		a.tr.Send([]*raftpb.Message{app(1, 2, first+uint64(i))})
	}
	b2.raft.waitFor(t, "500 more messages", func() bool {
		ms := b2.raft.messages()
		return len(ms) > 0 && ms[len(ms)-1].GetIndex() == first+499
	})
	var tail []*raftpb.Message
	for _, m := range b2.raft.messages() {
		if m.GetIndex() >= first {
			tail = append(tail, m)
		}
	}
	checkOrdered(t, tail, 1, first, 500)
	if a.tr.ActiveSince(2).IsZero() {
		t.Error("ActiveSince is zero after reconnecting")
	}
}

// When the receiver drops the connection, the sender reconnects to the same URL by itself.
func TestReconnectSameURL(t *testing.T) {
	a := newMember(t, 1, 7)
	b := newMember(t, 2, 7)
	connect(a, b)
	var idx uint64
	sendUntilDelivered(t, a, b, &idx)
	b.srv.CloseClientConnections()
	a.raft.waitFor(t, "unreachable report", func() bool { return a.raft.unreachableCount(2) > 0 })
	sendUntilDelivered(t, a, b, &idx)
	if got := b.streams.Load(); got < 2 {
		t.Errorf("served %d stream requests, want a second one after the disconnect", got)
	}
}

// The sender tries the peer's URLs in turn.
func TestMultipleURLs(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	a := newMember(t, 1, 7)
	b := newMember(t, 2, 7)
	a.tr.AddPeer(2, []string{dead, b.url()})
	var idx uint64
	sendUntilDelivered(t, a, b, &idx)
}

func observed(lvl zapcore.Level) (memberOpt, *observer.ObservedLogs) {
	core, logs := observer.New(lvl)
	return func(c *Config) { c.Logger = zap.New(core) }, logs
}

func post(t *testing.T, url string, hdr map[string]string, body io.Reader) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	return resp.StatusCode, string(b)
}

func headers(cluster, from, to uint64, ct string) map[string]string {
	return map[string]string{
		HeaderClusterID: idString(cluster),
		HeaderFrom:      idString(from),
		HeaderTo:        idString(to),
		"Content-Type":  ct,
	}
}

func TestWrongClusterIDRejected(t *testing.T) {
	logOpt, logs := observed(zap.WarnLevel)
	a := newMember(t, 1, 7)
	b := newMember(t, 2, 8, logOpt)
	a.tr.AddPeer(2, []string{b.url()})
	a.tr.Send([]*raftpb.Message{app(1, 2, 1)})
	a.raft.waitFor(t, "unreachable report", func() bool { return a.raft.unreachableCount(2) > 0 })
	if b.raft.count() != 0 {
		t.Fatalf("member with another cluster id processed %d messages", b.raft.count())
	}
	if logs.FilterMessage("rejected peer request with mismatched cluster ID").Len() == 0 {
		t.Errorf("cluster id mismatch not logged; logs: %v", logs.All())
	}
	if !a.tr.ActiveSince(2).IsZero() {
		t.Error("ActiveSince non-zero for a rejected stream")
	}

	for _, path := range []string{streamPath, snapshotPath} {
		code, body := post(t, b.url()+path, headers(7, 1, 2, contentTypeFor(path)), strings.NewReader(""))
		if code != http.StatusPreconditionFailed || !strings.Contains(body, "cluster ID mismatch") {
			t.Errorf("%s wrong cluster: got %d %q", path, code, body)
		}
		code, body = post(t, b.url()+path, headers(8, 1, 3, contentTypeFor(path)), strings.NewReader(""))
		if code != http.StatusPreconditionFailed || !strings.Contains(body, "member ID mismatch") {
			t.Errorf("%s wrong member: got %d %q", path, code, body)
		}
		code, _ = post(t, b.url()+path, headers(8, 1, 2, "text/plain"), strings.NewReader(""))
		if code != http.StatusUnsupportedMediaType {
			t.Errorf("%s wrong content type: got %d", path, code)
		}
		h := headers(8, 1, 2, contentTypeFor(path))
		h[HeaderFrom] = "zz"
		code, _ = post(t, b.url()+path, h, strings.NewReader(""))
		if code != http.StatusBadRequest {
			t.Errorf("%s bad from header: got %d", path, code)
		}
	}
	if b.raft.count() != 0 {
		t.Fatalf("processed %d messages from rejected requests", b.raft.count())
	}
}

func contentTypeFor(path string) string {
	if path == snapshotPath {
		return snapshotContentType
	}
	return streamContentType
}

func frame(t *testing.T, m *raftpb.Message) []byte {
	t.Helper()
	b, err := appendFrame(nil, m, DefaultMaxMessageSize)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A stream whose frames are addressed elsewhere, forged, oversized or garbage is closed
// without processing anything and without harming the receiver.
func TestStreamRejectsBadInput(t *testing.T) {
	b := newMember(t, 2, 7)
	huge := binary.BigEndian.AppendUint32(nil, DefaultMaxMessageSize+1)
	for _, tc := range []struct {
		name string
		body []byte
	}{
		{"other member", frame(t, app(1, 3, 1))},
		{"forged sender", frame(t, app(4, 2, 1))},
		{"snapshot", frame(t, snapMsg(1, 2, 5))},
		{"too large", append(huge, make([]byte, 100)...)},
		{"garbage", append(binary.BigEndian.AppendUint32(nil, 8), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)},
		{"truncated", frame(t, app(1, 2, 1))[:10]},
		{"short header", []byte{0, 0}},
		{"empty message", []byte{0, 0, 0, 0}},
		{"valid then bad", append(frame(t, app(1, 2, 1)), frame(t, app(1, 3, 2))...)},
	} {
		code, _ := post(t, b.url()+streamPath, headers(7, 1, 2, streamContentType), bytes.NewReader(tc.body))
		if code != http.StatusOK {
			t.Errorf("%s: got status %d", tc.name, code)
		}
		msgs := b.raft.messages()
		if tc.name == "valid then bad" {
			if len(msgs) != 1 || msgs[0].GetIndex() != 1 {
				t.Errorf("%s: processed %v", tc.name, msgs)
			}
		} else if len(msgs) != 0 {
			t.Fatalf("%s: processed %d messages", tc.name, len(msgs))
		}
	}
	// The member still works.
	a := newMember(t, 1, 7)
	a.tr.AddPeer(2, []string{b.url()})
	var idx uint64 = 100
	sendUntilDelivered(t, a, b, &idx)
}

func TestRemovePeer(t *testing.T) {
	a := newMember(t, 1, 7)
	b := newMember(t, 2, 7)
	connect(a, b)
	var idx uint64
	sendUntilDelivered(t, a, b, &idx)

	b.tr.RemovePeer(1)
	code, body := post(t, b.url()+streamPath, headers(7, 1, 2, streamContentType), strings.NewReader(""))
	if code != http.StatusGone {
		t.Errorf("stream from removed member: got %d %q", code, body)
	}
	// A's stream was cut and cannot come back.
	a.raft.waitFor(t, "unreachable report", func() bool { return a.raft.unreachableCount(2) > 0 })

	a.tr.RemovePeer(2)
	if !a.tr.ActiveSince(2).IsZero() {
		t.Error("ActiveSince non-zero for a removed peer")
	}
	n := b.raft.count()
	a.tr.Send([]*raftpb.Message{app(1, 2, 1000)}) // unknown peer: dropped
	if _, ok := a.tr.peers[2]; ok {
		t.Error("removed peer still present")
	}

	// Adding both back restores the stream.
	connect(a, b)
	sendUntilDelivered(t, a, b, &idx)
	if b.raft.count() <= n {
		t.Error("no delivery after re-adding")
	}
}

func TestAddPeerIdempotentAndValidates(t *testing.T) {
	a := newMember(t, 1, 7)
	b := newMember(t, 2, 7)
	for range 3 {
		a.tr.AddPeer(2, []string{b.url(), b.url() + "/"})
	}
	a.tr.AddPeer(3, []string{"not a url", "ftp://x"}) // no usable URL: ignored
	a.tr.AddPeer(1, []string{b.url()})                // self: ignored
	if len(a.tr.peers) != 1 || len(a.tr.peers[2].urls) != 1 {
		t.Fatalf("peers: %v", a.tr.peers)
	}
	var idx uint64
	sendUntilDelivered(t, a, b, &idx)
	a.tr.Send([]*raftpb.Message{app(1, 3, 1), app(1, 99, 1), nil}) // unknown: dropped quietly
	if got := b.streams.Load(); got != 1 {
		t.Errorf("served %d stream requests, want 1", got)
	}
}

// blackhole returns a server that accepts stream requests and never answers them, so the
// sender stays in its connection attempt and does not drain its queue.
func blackhole(t *testing.T) (url string, arrived <-chan struct{}) {
	ch := make(chan struct{}, 1)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case ch <- struct{}{}:
		default:
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() {
		close(release)
		srv.Close()
	})
	return srv.URL, ch
}

func TestFullQueueDropsAndReportsUnreachable(t *testing.T) {
	url, arrived := blackhole(t)
	a := newMember(t, 1, 7, withQueueSize(8), func(c *Config) { c.DialTimeout = testTimeout })
	a.tr.AddPeer(2, []string{url})
	<-arrived
	msgs := make([]*raftpb.Message, 13)
	for i := range msgs {
		msgs[i] = app(1, 2, uint64(i))
	}
	a.tr.Send(msgs) // must not block
	if got := a.tr.peers[2].dropped.Load(); got != 5 {
		t.Errorf("dropped %d messages, want 5", got)
	}
	a.raft.waitFor(t, "unreachable report", func() bool { return a.raft.unreachableCount(2) > 0 })
	if !a.tr.ActiveSince(2).IsZero() {
		t.Error("ActiveSince non-zero while connecting")
	}
}

// A message over the size limit is dropped and reported; the stream keeps working.
func TestOversizedMessageDropped(t *testing.T) {
	small := func(c *Config) { c.MaxMessageSize = 1024 }
	a := newMember(t, 1, 7, small)
	b := newMember(t, 2, 7, small)
	a.tr.AddPeer(2, []string{b.url()})
	var idx uint64
	sendUntilDelivered(t, a, b, &idx)
	big := app(1, 2, 1000)
	big.Entries[0].Data = make([]byte, 2048)
	before := a.raft.unreachableCount(2)
	a.tr.Send([]*raftpb.Message{big, app(1, 2, 1001)})
	b.raft.waitFor(t, "message after the oversized one", func() bool {
		ms := b.raft.messages()
		return ms[len(ms)-1].GetIndex() == 1001
	})
	for _, m := range b.raft.messages() {
		if m.GetIndex() == 1000 {
			t.Fatal("oversized message delivered")
		}
	}
	a.raft.waitFor(t, "unreachable report", func() bool { return a.raft.unreachableCount(2) > before })
}

// blockingSnapshotter writes some data and then blocks until its context ends.
type blockingSnapshotter struct {
	started chan struct{}
}

func (s *blockingSnapshotter) WriteSnapshot(ctx context.Context, _ *raftpb.Message, w io.Writer) error {
	if _, err := w.Write(make([]byte, 1<<16)); err != nil {
		return err
	}
	close(s.started)
	<-ctx.Done()
	return ctx.Err()
}

func (s *blockingSnapshotter) ReceiveSnapshot(_ context.Context, _ *raftpb.Message, r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	return err
}

// Close ends streams in both directions, in-flight snapshots, blocked Process calls and every
// goroutine.
func TestCloseStopsEverything(t *testing.T) {
	snap := &blockingSnapshotter{started: make(chan struct{})}
	withSnap := func(c *Config) { c.Snapshotter = snap }
	a := newMember(t, 1, 7, withSnap)
	b := newMember(t, 2, 7, withSnap)
	c := newMember(t, 3, 7, withSnap)
	connect(a, b, c)
	var idx uint64
	sendUntilDelivered(t, a, b, &idx)
	sendUntilDelivered(t, a, c, &idx)
	sendUntilDelivered(t, b, a, &idx)
	sendUntilDelivered(t, c, a, &idx)

	// c's raft blocks every Process from now on.
	c.raft.mu.Lock()
	c.raft.gate = make(chan struct{})
	c.raft.mu.Unlock()
	a.tr.Send([]*raftpb.Message{app(1, 3, 500), app(1, 3, 501)})
	a.tr.Send([]*raftpb.Message{snapMsg(1, 2, 10)})
	<-snap.started

	for _, m := range []*member{a, b, c} {
		if err := m.tr.Close(); err != nil {
			t.Fatal(err)
		}
		m.srv.Close()
	}
	goleak.VerifyNone(t)
}

func TestHandlerRefusesAfterClose(t *testing.T) {
	b := newMember(t, 2, 7)
	if err := b.tr.Close(); err != nil {
		t.Fatal(err)
	}
	code, _ := post(t, b.url()+streamPath, headers(7, 1, 2, streamContentType), strings.NewReader(""))
	if code != http.StatusServiceUnavailable {
		t.Errorf("got %d after Close, want 503", code)
	}
	code, _ = post(t, b.url()+"/raft/other", headers(7, 1, 2, streamContentType), strings.NewReader(""))
	if code != http.StatusNotFound {
		t.Errorf("unknown path: got %d, want 404", code)
	}
}

func TestMessageRoundTripThroughFrame(t *testing.T) {
	m := app(1, 2, 3)
	m.Context = []byte("ctx")
	got, err := newDecoder(bytes.NewReader(frame(t, m)), 1<<20).next()
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, m) {
		t.Fatalf("got %v, want %v", got, m)
	}
}
