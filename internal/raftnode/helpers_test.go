package raftnode_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/proto"

	"github.com/ordo-db/ordo/internal/raftnode"
	"github.com/ordo-db/ordo/internal/storage"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	tickInterval  = 10 * time.Millisecond
	electionTicks = 10
	waitTimeout   = 20 * time.Second
)

// waitFor polls cond until it holds or the deadline passes. The state it watches changes on
// other goroutines with no event to wait on from outside, so it checks on a short ticker.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !poll(timeout, cond) {
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}

func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline.C:
			return cond()
		}
	}
	return true
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// dataKey holds the payload of applied entry index in the test state machine's keyspace.
func dataKey(index uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{storage.PrefixMVCC, 't'}, index)
}

var (
	dataStart = []byte{storage.PrefixMVCC, 't'}
	dataEnd   = []byte{storage.PrefixMVCC, 't' + 1}
)

// testSM is a StateMachine that stores each applied normal entry's payload under its index,
// with the applied index and conf state in the same batch, as the real applier does. Entries
// at or below the stored applied index are skipped (a snapshot's state may be ahead of its
// raft metadata).
type testSM struct {
	e *storage.Engine

	// beforeApply, if set, runs at the start of every Apply; an error fails that Apply.
	beforeApply func(ents []*raftpb.Entry) error

	mu          sync.Mutex
	applied     uint64   // the stored applied index
	data        []string // payloads of the applied normal entries, in log order
	startIndex  uint64   // applied index when created (or restored)
	belowStart  []uint64 // entries handed to Apply at or below startIndex
	lastSeen    uint64   // the last index handed to Apply since creation or Restore
	orderErrs   []string // entries handed out of order
	restores    int
	applyCalls  int
	confChanges int
}

func newTestSM(t testing.TB, e *storage.Engine) *testSM {
	t.Helper()
	sm := &testSM{e: e}
	if err := sm.Restore(); err != nil {
		t.Fatalf("load state machine: %v", err)
	}
	sm.restores = 0
	return sm
}

func (s *testSM) Apply(ents []*raftpb.Entry, confChange func(raftpb.ConfChangeI) *raftpb.ConfState) error {
	if s.beforeApply != nil {
		if err := s.beforeApply(ents); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.applyCalls++
	b := s.e.DB.NewBatch()
	defer b.Close()
	var last, lastTerm uint64
	var newData []string
	for _, ent := range ents {
		idx := ent.GetIndex()
		if s.lastSeen != 0 && idx != s.lastSeen+1 {
			s.orderErrs = append(s.orderErrs, fmt.Sprintf("entry %d after %d", idx, s.lastSeen))
		}
		s.lastSeen = idx
		if idx <= s.startIndex {
			s.belowStart = append(s.belowStart, idx)
		}
		skip := idx <= s.applied
		switch ent.GetType() {
		case raftpb.EntryConfChange:
			var cc raftpb.ConfChange
			if err := proto.Unmarshal(ent.GetData(), &cc); err != nil {
				return err
			}
			cs := confChange(&cc)
			s.confChanges++
			if !skip {
				if err := storage.SetConfState(b, cs); err != nil {
					return err
				}
			}
		case raftpb.EntryConfChangeV2:
			var cc raftpb.ConfChangeV2
			if err := proto.Unmarshal(ent.GetData(), &cc); err != nil {
				return err
			}
			cs := confChange(&cc)
			s.confChanges++
			if !skip {
				if err := storage.SetConfState(b, cs); err != nil {
					return err
				}
			}
		case raftpb.EntryNormal:
			if !skip && len(ent.GetData()) > 0 {
				if err := b.Set(dataKey(idx), ent.GetData(), nil); err != nil {
					return err
				}
				newData = append(newData, string(ent.GetData()))
			}
		}
		if !skip {
			last, lastTerm = idx, ent.GetTerm()
		}
	}
	if last == 0 {
		return nil
	}
	if err := storage.SetApplied(b, last, lastTerm); err != nil {
		return err
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return err
	}
	s.applied = last
	s.data = append(s.data, newData...)
	return nil
}

// Restore reloads everything from the engine.
func (s *testSM) Restore() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	applied, _, err := storage.Applied(s.e.DB)
	if err != nil {
		return err
	}
	it, err := s.e.DB.NewIter(&pebble.IterOptions{LowerBound: dataStart, UpperBound: dataEnd})
	if err != nil {
		return err
	}
	var data []string
	for it.First(); it.Valid(); it.Next() {
		data = append(data, string(it.Value()))
	}
	if err := it.Close(); err != nil {
		return err
	}
	s.applied, s.data, s.startIndex, s.lastSeen = applied, data, applied, 0
	s.restores++
	return nil
}

func (s *testSM) snapshot() (data []string, applied uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.data...), s.applied
}

func (s *testSM) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.data)
}

func (s *testSM) below() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]uint64(nil), s.belowStart...)
}

func zapNop() *zap.Logger { return zap.NewNop() }

func (s *testSM) checkOrder(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.orderErrs) > 0 {
		t.Errorf("entries reached the state machine out of order: %v", s.orderErrs)
	}
}

// member is one raft member's storage, state machine and node.
type member struct {
	t    testing.TB
	id   uint64
	dir  string
	eng  *storage.Engine
	log  *storage.RaftLog
	sm   *testSM
	node *raftnode.Node
}

type memberOptions struct {
	peers          []raft.Peer
	snapshotCount  uint64
	catchUpEntries uint64
	transport      raftnode.Transport
	beforeApply    func([]*raftpb.Entry) error
}

// newMember opens storage in dir (a new temp dir if empty) and starts a node on it. The engine
// is closed at the end of the test after the node stopped.
func newMember(t testing.TB, id uint64, dir string, o memberOptions) *member {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	m := &member{t: t, id: id, dir: dir}
	eng, err := storage.Open(dir, zap.NewNop())
	if err != nil {
		t.Fatalf("open engine: %v", err)
	}
	m.eng = eng
	t.Cleanup(m.close)
	m.start(o)
	return m
}

func (m *member) start(o memberOptions) {
	m.t.Helper()
	var err error
	if m.log, err = storage.OpenRaftLog(m.eng); err != nil {
		m.t.Fatalf("open raft log: %v", err)
	}
	m.sm = newTestSM(m.t, m.eng)
	m.sm.beforeApply = o.beforeApply
	if o.transport == nil {
		o.transport = nopTransport{}
	}
	if o.snapshotCount == 0 {
		o.snapshotCount = 10000
	}
	m.node, err = raftnode.Start(raftnode.Config{
		ID:             m.id,
		Peers:          o.peers,
		TickInterval:   tickInterval,
		ElectionTicks:  electionTicks,
		SnapshotCount:  o.snapshotCount,
		CatchUpEntries: o.catchUpEntries,
		Engine:         m.eng,
		Log:            m.log,
		StateMachine:   m.sm,
		Transport:      o.transport,
		Logger:         zaptest.NewLogger(m.t, zaptest.Level(zap.WarnLevel)).With(zap.Uint64("member", m.id)),
	})
	if err != nil {
		m.t.Fatalf("start node %d: %v", m.id, err)
	}
}

// stop stops the node (if running).
func (m *member) stop() {
	if m.node != nil {
		m.node.Stop()
		m.node = nil
	}
}

func (m *member) close() {
	m.stop()
	if m.eng != nil {
		if err := m.eng.Close(); err != nil {
			m.t.Errorf("close engine: %v", err)
		}
		m.eng = nil
	}
}

type nopTransport struct{}

func (nopTransport) Send([]*raftpb.Message) {}

// proposeAll proposes each payload in order from one goroutine.
func proposeAll(t testing.TB, n *raftnode.Node, payloads []string) {
	t.Helper()
	ctx := ctxTimeout(t, waitTimeout)
	for _, p := range payloads {
		if err := n.Propose(ctx, []byte(p)); err != nil {
			t.Fatalf("Propose(%q): %v", p, err)
		}
	}
}

func payloads(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%03d", prefix, i)
	}
	return out
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// memNet connects members in memory. Each (sender, receiver) link has a goroutine that hands
// the link's messages to the receiver's Process in order, like the peer transport's message
// stream; a full link drops messages. Messages to or from an isolated member are dropped. A
// MsgSnap goes on its own goroutine: it carries the sender's state through a pipe into the
// receiver's staging area first, as the peer transport does, then reports the outcome to the
// sender.
type memNet struct {
	t      testing.TB
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	peers    map[uint64]netPeer
	isolated map[uint64]bool
	closed   bool
	snaps    map[uint64]int // MsgSnap delivered, by receiver
	links    map[[2]uint64]chan *raftpb.Message
	snapErrs []error
}

func newMemNet(t testing.TB) *memNet {
	ctx, cancel := context.WithCancel(context.Background())
	return &memNet{t: t, ctx: ctx, cancel: cancel, peers: map[uint64]netPeer{}, isolated: map[uint64]bool{}, snaps: map[uint64]int{}, links: map[[2]uint64]chan *raftpb.Message{}}
}

// netPeer is what the network needs of a member; it is fixed once the member started.
type netPeer struct {
	node *raftnode.Node
	eng  *storage.Engine
}

func (nw *memNet) add(m *member) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	nw.peers[m.id] = netPeer{m.node, m.eng}
}

func (nw *memNet) isolate(id uint64, on bool) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	nw.isolated[id] = on
}

func (nw *memNet) snapCount(id uint64) int {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	return nw.snaps[id]
}

// shutdown stops every member's node, then waits for deliveries in flight.
func (nw *memNet) shutdown(ms ...*member) {
	for _, m := range ms {
		m.stop()
	}
	nw.mu.Lock()
	nw.closed = true
	nw.mu.Unlock()
	nw.cancel()
	nw.wg.Wait()
	nw.mu.Lock()
	defer nw.mu.Unlock()
	for _, err := range nw.snapErrs {
		nw.t.Errorf("snapshot transfer: %v", err)
	}
}

func (nw *memNet) transport(from uint64) raftnode.Transport { return memTransport{nw, from} }

type memTransport struct {
	nw   *memNet
	from uint64
}

func (tr memTransport) Send(msgs []*raftpb.Message) {
	nw := tr.nw
	nw.mu.Lock()
	defer nw.mu.Unlock()
	if nw.closed {
		return
	}
	for _, m := range msgs {
		to := m.GetTo()
		src, srcOK := nw.peers[tr.from]
		dst, dstOK := nw.peers[to]
		if !srcOK || !dstOK || nw.isolated[to] || nw.isolated[tr.from] {
			if m.GetType() == raftpb.MsgSnap && srcOK {
				nw.wg.Add(1)
				go func() {
					defer nw.wg.Done()
					src.node.ReportSnapshot(to, raft.SnapshotFailure)
				}()
			}
			continue
		}
		m := proto.Clone(m).(*raftpb.Message) // as if it crossed the network
		if m.GetType() == raftpb.MsgSnap {
			nw.snaps[to]++
			nw.wg.Add(1)
			go func() {
				defer nw.wg.Done()
				nw.sendSnapshot(src, dst, m)
			}()
			continue
		}
		select {
		case nw.linkLocked(tr.from, to, dst) <- m:
		default: // the link is backed up: drop, raft retries
		}
	}
}

// linkLocked returns the queue of the link from -> to, starting its delivery goroutine.
func (nw *memNet) linkLocked(from, to uint64, dst netPeer) chan *raftpb.Message {
	key := [2]uint64{from, to}
	if ch, ok := nw.links[key]; ok {
		return ch
	}
	ch := make(chan *raftpb.Message, 4096)
	nw.links[key] = ch
	nw.wg.Add(1)
	go func() {
		defer nw.wg.Done()
		for {
			select {
			case m := <-ch:
				_ = dst.node.Process(nw.ctx, m)
			case <-nw.ctx.Done():
				return
			}
		}
	}()
	return ch
}

func (nw *memNet) sendSnapshot(src, dst netPeer, m *raftpb.Message) {
	pr, pw := io.Pipe()
	werr := make(chan error, 1)
	go func() {
		_, err := src.eng.WriteSnapshot(nw.ctx, pw)
		pw.CloseWithError(err)
		werr <- err
	}()
	err := dst.eng.ReceiveSnapshot(nw.ctx, m.GetSnapshot().GetMetadata().GetIndex(), pr)
	pr.CloseWithError(errors.New("receiver done"))
	if e := <-werr; err == nil && e != nil {
		err = e
	}
	if err == nil {
		err = dst.node.Process(nw.ctx, m)
	}
	if err != nil {
		src.node.ReportSnapshot(m.GetTo(), raft.SnapshotFailure)
		if nw.ctx.Err() == nil {
			nw.mu.Lock()
			nw.snapErrs = append(nw.snapErrs, err)
			nw.mu.Unlock()
		}
		return
	}
	src.node.ReportSnapshot(m.GetTo(), raft.SnapshotFinish)
}
