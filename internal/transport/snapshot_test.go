package transport

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"hash"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// genSnapshotter generates size pseudo-random bytes for outgoing snapshots and hashes what
// it receives. failAfter > 0 makes WriteSnapshot fail after that many bytes; recvErr makes
// ReceiveSnapshot fail after reading 1 MiB.
type genSnapshotter struct {
	size      int64
	failAfter int64
	recvErr   error

	// onReceive, if set, is called after each ReceiveSnapshot.
	onReceive func()

	mu       sync.Mutex
	sentSum  []byte
	recvSum  []byte
	recvN    int64
	recvErrs []error
}

func (g *genSnapshotter) WriteSnapshot(ctx context.Context, m *raftpb.Message, w io.Writer) error {
	rng := rand.NewChaCha8([32]byte{byte(m.GetSnapshot().GetMetadata().GetIndex())})
	h := sha256.New()
	buf := make([]byte, 256<<10)
	var n int64
	for n < g.size {
		if err := ctx.Err(); err != nil {
			return err
		}
		chunk := buf[:min(int64(len(buf)), g.size-n)]
		_, _ = rng.Read(chunk)
		if g.failAfter > 0 && n+int64(len(chunk)) > g.failAfter {
			return errors.New("injected snapshot write failure")
		}
		h.Write(chunk)
		if _, err := w.Write(chunk); err != nil {
			return err
		}
		n += int64(len(chunk))
	}
	g.mu.Lock()
	g.sentSum = h.Sum(nil)
	g.mu.Unlock()
	return nil
}

func (g *genSnapshotter) ReceiveSnapshot(_ context.Context, _ *raftpb.Message, r io.Reader) error {
	h := sha256.New()
	var src io.Reader = r
	if g.recvErr != nil {
		src = io.LimitReader(r, 1<<20)
	}
	n, err := io.Copy(h, src)
	if err == nil && g.recvErr != nil {
		err = g.recvErr
	}
	if g.onReceive != nil {
		defer g.onReceive()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if err != nil {
		g.recvErrs = append(g.recvErrs, err)
		return err
	}
	g.recvSum, g.recvN = h.Sum(nil), n
	return nil
}

func (g *genSnapshotter) receiveErrors() []error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]error(nil), g.recvErrs...)
}

var _ hash.Hash = sha256.New()

func withSnapshotter(s Snapshotter) memberOpt { return func(c *Config) { c.Snapshotter = s } }

func waitSnapReport(t *testing.T, m *member, id uint64) snapReport {
	t.Helper()
	m.raft.waitFor(t, "snapshot report", func() bool { return len(m.raft.snapshotReports()) > 0 })
	r := m.raft.snapshotReports()[0]
	if r.id != id {
		t.Fatalf("snapshot report for %x, want %x", r.id, id)
	}
	return r
}

func TestSnapshotLarge(t *testing.T) {
	const size = 50 << 20
	sendSnap := &genSnapshotter{size: size}
	recvSnap := &genSnapshotter{}
	a := newMember(t, 1, 7, withSnapshotter(sendSnap))
	b := newMember(t, 2, 7, withSnapshotter(recvSnap))
	connect(a, b)

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	a.tr.Send([]*raftpb.Message{snapMsg(1, 2, 42)})
	if r := waitSnapReport(t, a, 2); r.status != raft.SnapshotFinish {
		t.Fatalf("snapshot status %v, want SnapshotFinish", r.status)
	}
	runtime.ReadMemStats(&after)

	recvSnap.mu.Lock()
	gotN, gotSum := recvSnap.recvN, recvSnap.recvSum
	recvSnap.mu.Unlock()
	sendSnap.mu.Lock()
	wantSum := sendSnap.sentSum
	sendSnap.mu.Unlock()
	if gotN != size || !bytes.Equal(gotSum, wantSum) {
		t.Fatalf("received %d bytes with sum %x, sent %d with sum %x", gotN, gotSum, size, wantSum)
	}
	// SnapshotFinish is reported after the receiver answered, which is after Process.
	msgs := b.raft.messages()
	if len(msgs) != 1 || msgs[0].GetType() != raftpb.MsgSnap || msgs[0].GetSnapshot().GetMetadata().GetIndex() != 42 {
		t.Fatalf("receiver processed %v, want the MsgSnap", msgs)
	}
	// The data is streamed, not buffered: far less than the snapshot is allocated.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > size/2 {
		t.Errorf("allocated %d MiB while streaming a %d MiB snapshot", alloc>>20, size>>20)
	}
	if got := b.snapshots.Load(); got != 1 {
		t.Errorf("served %d snapshot requests, want 1", got)
	}
}

func TestSnapshotFailures(t *testing.T) {
	t.Run("sender fails midway", func(t *testing.T) {
		recv := &genSnapshotter{}
		a := newMember(t, 1, 7, withSnapshotter(&genSnapshotter{size: 8 << 20, failAfter: 2 << 20}))
		b := newMember(t, 2, 7, withSnapshotter(recv))
		recv.onReceive = b.raft.kick
		connect(a, b)
		a.tr.Send([]*raftpb.Message{snapMsg(1, 2, 5)})
		if r := waitSnapReport(t, a, 2); r.status != raft.SnapshotFailure {
			t.Fatalf("status %v, want SnapshotFailure", r.status)
		}
		// The receiver saw a broken stream, not a clean end, and did not pass the message on.
		b.raft.waitFor(t, "receive error", func() bool { return len(recv.receiveErrors()) > 0 })
		if errs := recv.receiveErrors(); !errors.Is(errs[0], io.ErrUnexpectedEOF) {
			t.Errorf("receiver error %v, want unexpected EOF", errs[0])
		}
		if n := b.raft.count(); n != 0 {
			t.Errorf("receiver processed %d messages", n)
		}
	})
	t.Run("receiver fails", func(t *testing.T) {
		a := newMember(t, 1, 7, withSnapshotter(&genSnapshotter{size: 8 << 20}))
		b := newMember(t, 2, 7, withSnapshotter(&genSnapshotter{recvErr: errors.New("disk full")}))
		connect(a, b)
		a.tr.Send([]*raftpb.Message{snapMsg(1, 2, 5)})
		if r := waitSnapReport(t, a, 2); r.status != raft.SnapshotFailure {
			t.Fatalf("status %v, want SnapshotFailure", r.status)
		}
		if n := b.raft.count(); n != 0 {
			t.Errorf("receiver processed %d messages", n)
		}
	})
	t.Run("receiver has no snapshotter", func(t *testing.T) {
		a := newMember(t, 1, 7, withSnapshotter(&genSnapshotter{size: 1 << 20}))
		b := newMember(t, 2, 7)
		connect(a, b)
		a.tr.Send([]*raftpb.Message{snapMsg(1, 2, 5)})
		if r := waitSnapReport(t, a, 2); r.status != raft.SnapshotFailure {
			t.Fatalf("status %v, want SnapshotFailure", r.status)
		}
	})
	t.Run("sender has no snapshotter", func(t *testing.T) {
		a := newMember(t, 1, 7)
		b := newMember(t, 2, 7, withSnapshotter(&genSnapshotter{}))
		connect(a, b)
		a.tr.Send([]*raftpb.Message{snapMsg(1, 2, 5)})
		if r := waitSnapReport(t, a, 2); r.status != raft.SnapshotFailure {
			t.Fatalf("status %v, want SnapshotFailure", r.status)
		}
	})
	t.Run("peer unreachable", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		dead := "http://" + ln.Addr().String()
		if err := ln.Close(); err != nil {
			t.Fatal(err)
		}
		a := newMember(t, 1, 7, withSnapshotter(&genSnapshotter{size: 1 << 20}))
		a.tr.AddPeer(2, []string{dead})
		a.tr.Send([]*raftpb.Message{snapMsg(1, 2, 5)})
		if r := waitSnapReport(t, a, 2); r.status != raft.SnapshotFailure {
			t.Fatalf("status %v, want SnapshotFailure", r.status)
		}
	})
	t.Run("wrong cluster", func(t *testing.T) {
		a := newMember(t, 1, 7, withSnapshotter(&genSnapshotter{size: 1 << 20}))
		b := newMember(t, 2, 8, withSnapshotter(&genSnapshotter{}))
		a.tr.AddPeer(2, []string{b.url()})
		a.tr.Send([]*raftpb.Message{snapMsg(1, 2, 5)})
		if r := waitSnapReport(t, a, 2); r.status != raft.SnapshotFailure {
			t.Fatalf("status %v, want SnapshotFailure", r.status)
		}
	})
}

// gatedSnapshotter blocks WriteSnapshot until release is closed.
type gatedSnapshotter struct {
	started chan struct{}
	release chan struct{}
}

func (g *gatedSnapshotter) WriteSnapshot(ctx context.Context, _ *raftpb.Message, w io.Writer) error {
	close(g.started)
	select {
	case <-g.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	_, err := w.Write([]byte("data"))
	return err
}

func (g *gatedSnapshotter) ReceiveSnapshot(_ context.Context, _ *raftpb.Message, r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	return err
}

// A second MsgSnap while one is in flight is dropped and reported as failed; the first
// still completes.
func TestOneSnapshotInFlight(t *testing.T) {
	g := &gatedSnapshotter{started: make(chan struct{}), release: make(chan struct{})}
	a := newMember(t, 1, 7, withSnapshotter(g))
	b := newMember(t, 2, 7, withSnapshotter(g))
	connect(a, b)
	a.tr.Send([]*raftpb.Message{snapMsg(1, 2, 5)})
	<-g.started
	a.tr.Send([]*raftpb.Message{snapMsg(1, 2, 6)})
	if r := waitSnapReport(t, a, 2); r.status != raft.SnapshotFailure {
		t.Fatalf("second snapshot: status %v, want SnapshotFailure", r.status)
	}
	close(g.release)
	a.raft.waitFor(t, "first snapshot report", func() bool { return len(a.raft.snapshotReports()) == 2 })
	if r := a.raft.snapshotReports()[1]; r.status != raft.SnapshotFinish {
		t.Fatalf("first snapshot: status %v, want SnapshotFinish", r.status)
	}
	msgs := b.raft.messages()
	if len(msgs) != 1 || msgs[0].GetSnapshot().GetMetadata().GetIndex() != 5 {
		t.Fatalf("receiver processed %v", msgs)
	}
}

func TestSnapshotHandlerRejectsBadInput(t *testing.T) {
	b := newMember(t, 2, 7, withSnapshotter(&genSnapshotter{}))
	for _, tc := range []struct {
		name string
		body []byte
	}{
		{"not a snapshot", frame(t, app(1, 2, 1))},
		{"other member", frame(t, snapMsg(1, 3, 1))},
		{"forged sender", frame(t, snapMsg(4, 2, 1))},
		{"no metadata", func() []byte {
			m := snapMsg(1, 2, 1)
			m.Snapshot = nil
			return frame(t, m)
		}()},
		{"garbage", []byte{0, 0, 0, 3, 0xff, 0xff, 0xff}},
		{"too large", []byte{0xff, 0xff, 0xff, 0xff}},
		{"empty", nil},
	} {
		code, body := post(t, b.url()+snapshotPath, headers(7, 1, 2, snapshotContentType), bytes.NewReader(tc.body))
		if code != http.StatusBadRequest || !strings.Contains(body, "bad snapshot message") {
			t.Errorf("%s: got %d %q", tc.name, code, body)
		}
	}
	if n := b.raft.count(); n != 0 {
		t.Fatalf("processed %d messages", n)
	}
}
