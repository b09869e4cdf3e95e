package transport

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/proto"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testTimeout bounds every wait in the tests; it is a failure deadline, not a delay.
const testTimeout = 30 * time.Second

type snapReport struct {
	id     uint64
	status raft.SnapshotStatus
}

// fakeRaft records everything the transport hands to raft.
type fakeRaft struct {
	mu          sync.Mutex
	msgs        []*raftpb.Message
	unreachable map[uint64]int
	snaps       []snapReport
	notify      chan struct{}
	// gate, if set, blocks Process until it is closed (or ctx ends).
	gate chan struct{}
}

func newFakeRaft() *fakeRaft {
	return &fakeRaft{unreachable: make(map[uint64]int), notify: make(chan struct{}, 1)}
}

func (f *fakeRaft) kick() {
	select {
	case f.notify <- struct{}{}:
	default:
	}
}

func (f *fakeRaft) Process(ctx context.Context, m *raftpb.Message) error {
	f.mu.Lock()
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f.mu.Lock()
	f.msgs = append(f.msgs, m)
	f.mu.Unlock()
	f.kick()
	return nil
}

func (f *fakeRaft) ReportUnreachable(id uint64) {
	f.mu.Lock()
	f.unreachable[id]++
	f.mu.Unlock()
	f.kick()
}

func (f *fakeRaft) ReportSnapshot(id uint64, status raft.SnapshotStatus) {
	f.mu.Lock()
	f.snaps = append(f.snaps, snapReport{id, status})
	f.mu.Unlock()
	f.kick()
}

func (f *fakeRaft) messages() []*raftpb.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*raftpb.Message(nil), f.msgs...)
}

func (f *fakeRaft) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.msgs)
}

func (f *fakeRaft) unreachableCount(id uint64) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.unreachable[id]
}

func (f *fakeRaft) snapshotReports() []snapReport {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]snapReport(nil), f.snaps...)
}

// waitFor waits until cond holds, re-checking whenever f records something.
func (f *fakeRaft) waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	for !cond() {
		select {
		case <-f.notify:
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// member is one Transport serving on its own loopback httptest server.
type member struct {
	id   uint64
	tr   *Transport
	raft *fakeRaft
	srv  *httptest.Server
	// requests counts requests per path reaching the server.
	streams   atomic.Int64
	snapshots atomic.Int64
}

type memberOpt func(*Config)

func newMember(t testing.TB, id, cluster uint64, opts ...memberOpt) *member {
	t.Helper()
	fr := newFakeRaft()
	cfg := Config{LocalID: id, ClusterID: cluster, Raft: fr, Logger: testLogger(t)}
	for _, o := range opts {
		o(&cfg)
	}
	tr, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	m := &member{id: id, tr: tr, raft: fr}
	m.srv = httptest.NewServer(m.countingHandler())
	// Cleanups run last-in first-out: the transport closes (ending its streaming handlers)
	// before the server, which waits for active handlers.
	t.Cleanup(m.srv.Close)
	t.Cleanup(func() {
		if err := tr.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return m
}

func (m *member) countingHandler() http.Handler {
	h := m.tr.Handler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case streamPath:
			m.streams.Add(1)
		case snapshotPath:
			m.snapshots.Add(1)
		}
		h.ServeHTTP(w, r)
	})
}

func (m *member) url() string { return m.srv.URL }

// restart closes the transport and its server and brings up a fresh transport with the same
// id on a new listener.
func (m *member) restart(t testing.TB, cluster uint64, opts ...memberOpt) *member {
	t.Helper()
	if err := m.tr.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	m.srv.Close()
	return newMember(t, m.id, cluster, opts...)
}

func testLogger(t testing.TB) *zap.Logger {
	if testing.Verbose() {
		return zaptest.NewLogger(t, zaptest.Level(zap.DebugLevel))
	}
	return zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
}

func app(from, to, index uint64) *raftpb.Message {
	return &raftpb.Message{
		Type:  raftpb.MsgApp.Enum(),
		From:  proto.Uint64(from),
		To:    proto.Uint64(to),
		Term:  proto.Uint64(1),
		Index: proto.Uint64(index),
		Entries: []*raftpb.Entry{{
			Term:  proto.Uint64(1),
			Index: proto.Uint64(index + 1),
			Data:  []byte("some entry payload of moderate size for the test"),
		}},
	}
}

func snapMsg(from, to, index uint64) *raftpb.Message {
	return &raftpb.Message{
		Type: raftpb.MsgSnap.Enum(),
		From: proto.Uint64(from),
		To:   proto.Uint64(to),
		Term: proto.Uint64(2),
		Snapshot: &raftpb.Snapshot{Metadata: &raftpb.SnapshotMetadata{
			Index: proto.Uint64(index),
			Term:  proto.Uint64(2),
			ConfState: &raftpb.ConfState{
				Voters: []uint64{from, to},
			},
		}},
	}
}

// discard is an io.Writer that counts.
type discard struct{ n int64 }

func (d *discard) Write(b []byte) (int, error) { d.n += int64(len(b)); return len(b), nil }

var _ io.Writer = (*discard)(nil)
