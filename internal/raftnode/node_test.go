package raftnode_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/goleak"

	"github.com/ordo-db/ordo/internal/raftnode"
	"github.com/ordo-db/ordo/internal/storage"
)

var singlePeer = []raft.Peer{{ID: 1}}

func waitLeader(t testing.TB, ms ...*member) uint64 {
	t.Helper()
	var lead uint64
	waitFor(t, waitTimeout, "a leader all members agree on", func() bool {
		lead = ms[0].node.Leader()
		if lead == 0 {
			return false
		}
		for _, m := range ms[1:] {
			if m.node.Leader() != lead {
				return false
			}
		}
		return true
	})
	return lead
}

func waitData(t testing.TB, m *member, want []string) {
	t.Helper()
	waitFor(t, waitTimeout, fmt.Sprintf("member %d to apply %d payloads", m.id, len(want)), func() bool {
		return m.sm.count() >= len(want)
	})
	got, _ := m.sm.snapshot()
	if !equalStrings(got, want) {
		t.Fatalf("member %d applied %d payloads %v...,\nwant %d %v...", m.id, len(got), head(got), len(want), head(want))
	}
}

func head(s []string) []string { return s[:min(len(s), 5)] }

func TestSingleNodeAppliesProposalsInOrder(t *testing.T) {
	m := newMember(t, 1, "", memberOptions{peers: singlePeer})
	if got := waitLeader(t, m); got != 1 {
		t.Fatalf("leader = %d, want 1", got)
	}
	if m.node.Term() == 0 {
		t.Errorf("Term() = 0 with a leader")
	}
	if m.node.ID() != 1 {
		t.Errorf("ID() = %d", m.node.ID())
	}
	want := payloads("seq", 50)
	proposeAll(t, m.node, want)
	waitData(t, m, want)

	// Concurrent proposers: each one's proposals keep their order.
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := ctxTimeout(t, waitTimeout)
			for _, p := range payloads(fmt.Sprintf("g%d", g), 25) {
				if err := m.node.Propose(ctx, []byte(p)); err != nil {
					t.Errorf("Propose: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	waitFor(t, waitTimeout, "150 payloads applied", func() bool { return m.sm.count() >= 150 })
	got, applied := m.sm.snapshot()
	if len(got) != 150 {
		t.Fatalf("applied %d payloads, want 150", len(got))
	}
	next := map[string]int{}
	for _, p := range got[50:] {
		g, n, _ := strings.Cut(p, "-")
		if want := fmt.Sprintf("%03d", next[g]); n != want {
			t.Fatalf("proposer %s: applied %s, want its proposal %s next", g, n, want)
		}
		next[g]++
	}
	m.sm.checkOrder(t)
	// The node's applied index follows once Apply has returned.
	if err := m.node.WaitApplied(ctxTimeout(t, waitTimeout), applied); err != nil {
		t.Errorf("WaitApplied(%d) after the state machine applied it: %v", applied, err)
	}
	// raft learns of the application when the Ready loop's Advance reaches its goroutine,
	// which may come just after the state machine applied: wait for it.
	var st raft.Status
	waitFor(t, waitTimeout, fmt.Sprintf("raft status to show applied >= %d", applied), func() bool {
		st = m.node.Status()
		return st.Applied >= applied
	})
	if st.RaftState != raft.StateLeader {
		t.Errorf("Status() = %v, applied %d; want leader with applied >= %d", st.RaftState, st.Applied, applied)
	}
}

func TestSingleNodeWaitApplied(t *testing.T) {
	m := newMember(t, 1, "", memberOptions{peers: singlePeer})
	waitLeader(t, m)
	proposeAll(t, m.node, payloads("a", 5))
	waitData(t, m, payloads("a", 5))
	_, idx := m.sm.snapshot() // nothing more is committed: this is the last index
	if err := m.node.WaitApplied(ctxTimeout(t, waitTimeout), idx); err != nil {
		t.Fatalf("WaitApplied(%d) (applied by the state machine) = %v", idx, err)
	}
	if a := m.node.AppliedIndex(); a != idx {
		t.Fatalf("AppliedIndex() = %d, want %d", a, idx)
	}
	if err := m.node.WaitApplied(ctxTimeout(t, waitTimeout), 1); err != nil {
		t.Fatalf("WaitApplied(1) = %v", err)
	}
	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := m.node.WaitApplied(short, idx+1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitApplied(%d) with nothing to apply = %v, want DeadlineExceeded", idx+1, err)
	}

	done := make(chan error, 1)
	go func() { done <- m.node.WaitApplied(ctxTimeout(t, waitTimeout), idx+1) }()
	proposeAll(t, m.node, []string{"b"})
	if err := <-done; err != nil {
		t.Fatalf("WaitApplied(%d) = %v", idx+1, err)
	}
	if m.node.AppliedIndex() < idx+1 {
		t.Errorf("WaitApplied returned before AppliedIndex reached %d: %d", idx+1, m.node.AppliedIndex())
	}
	if data, _ := m.sm.snapshot(); len(data) != 6 || data[5] != "b" {
		t.Errorf("WaitApplied returned before the entry was applied: %v", data)
	}

	// A waiter is released by Stop.
	n := m.node
	go func() { done <- n.WaitApplied(context.Background(), idx+1000) }()
	m.stop()
	if err := <-done; !errors.Is(err, raftnode.ErrStopped) {
		t.Errorf("WaitApplied across Stop = %v, want ErrStopped", err)
	}
}

func TestSingleNodeReadBarrier(t *testing.T) {
	m := newMember(t, 1, "", memberOptions{peers: singlePeer})
	waitLeader(t, m)
	for round := 0; round < 5; round++ {
		proposeAll(t, m.node, payloads(fmt.Sprintf("r%d", round), 10))
		commit := m.node.Status().GetCommit()
		if err := m.node.ReadBarrier(ctxTimeout(t, waitTimeout)); err != nil {
			t.Fatalf("ReadBarrier: %v", err)
		}
		if a := m.node.AppliedIndex(); a < commit {
			t.Fatalf("ReadBarrier returned with applied index %d below the commit index %d at the call", a, commit)
		}
	}
	// Many concurrent readers.
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			commit := m.node.Status().GetCommit()
			if err := m.node.ReadBarrier(ctxTimeout(t, waitTimeout)); err != nil {
				errs <- err
				return
			}
			if a := m.node.AppliedIndex(); a < commit {
				errs <- fmt.Errorf("applied %d < commit %d", a, commit)
			}
		}()
		if i%10 == 0 {
			proposeAll(t, m.node, []string{fmt.Sprintf("c%d", i)})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent ReadBarrier: %v", err)
	}
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	if err := m.node.ReadBarrier(canceled); err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("ReadBarrier with a canceled context = %v, want nil or context.Canceled", err)
	}
	n := m.node
	m.stop()
	if err := n.ReadBarrier(context.Background()); !errors.Is(err, raftnode.ErrStopped) {
		t.Errorf("ReadBarrier after Stop = %v, want ErrStopped", err)
	}
}

func TestSingleNodeSnapshots(t *testing.T) {
	const snapCount, catchUp = 10, 5
	o := memberOptions{peers: singlePeer, snapshotCount: snapCount, catchUpEntries: catchUp}
	m := newMember(t, 1, "", o)
	waitLeader(t, m)

	settled := func() bool {
		applied, snap := m.node.AppliedIndex(), m.log.SnapshotIndex()
		first, _ := m.log.FirstIndex()
		return snap > 0 && applied-snap < snapCount && first == snap-catchUp+1
	}
	proposeAll(t, m.node, payloads("a", 30))
	waitData(t, m, payloads("a", 30))
	waitFor(t, waitTimeout, "a snapshot within SnapshotCount of the applied index", settled)
	snap1 := m.log.SnapshotIndex()

	all := append(payloads("a", 30), payloads("b", 65)...)
	proposeAll(t, m.node, all[30:])
	waitData(t, m, all)
	waitFor(t, waitTimeout, "the snapshot to follow the applied index", settled)
	snap2 := m.log.SnapshotIndex()
	if snap2 <= snap1 {
		t.Errorf("snapshot index did not advance: %d then %d", snap1, snap2)
	}
	first, _ := m.log.FirstIndex()
	if _, err := m.log.Entries(first-1, first+1, 1<<20); !errors.Is(err, raft.ErrCompacted) {
		t.Errorf("Entries below FirstIndex %d = %v, want ErrCompacted", first, err)
	}
	snap, err := m.log.Snapshot()
	if err != nil || snap.GetMetadata().GetIndex() != snap2 || len(snap.GetMetadata().GetConfState().GetVoters()) != 1 {
		t.Errorf("Snapshot() = %v, %v; want index %d with voter 1", snap, err, snap2)
	}

	// A restart on the compacted log re-applies nothing and carries on.
	m.stop()
	m.start(o)
	waitLeader(t, m)
	all = append(all, payloads("c", 5)...)
	proposeAll(t, m.node, all[95:])
	waitData(t, m, all)
	if below := m.sm.below(); len(below) > 0 {
		t.Errorf("after restart, entries at or below the applied index were handed to Apply again: %v", below)
	}
}

func TestSingleNodeRestartAppliesNothingTwice(t *testing.T) {
	o := memberOptions{peers: singlePeer}
	m := newMember(t, 1, "", o)
	waitLeader(t, m)
	want := payloads("a", 20)
	proposeAll(t, m.node, want)
	waitData(t, m, want)
	m.stop()
	_, appliedBefore := m.sm.snapshot()
	if stored, _, _ := storage.Applied(m.eng.DB); stored != appliedBefore {
		t.Fatalf("stored applied index %d, state machine's %d", stored, appliedBefore)
	}

	for _, reopen := range []bool{false, true} {
		if reopen {
			m.stop()
			eng := m.eng
			m.eng = nil
			if err := eng.Close(); err != nil {
				t.Fatal(err)
			}
			var err error
			if m.eng, err = storage.Open(m.dir, zapNop()); err != nil {
				t.Fatal(err)
			}
		}
		m.start(o)
		if m.sm.startIndex == 0 {
			t.Fatalf("restarted state machine starts at applied index 0")
		}
		if a := m.node.AppliedIndex(); a < m.sm.startIndex {
			t.Errorf("AppliedIndex() right after restart = %d, below the stored %d", a, m.sm.startIndex)
		}
		if err := m.node.WaitApplied(ctxTimeout(t, waitTimeout), m.sm.startIndex); err != nil {
			t.Errorf("WaitApplied(stored applied index) after restart = %v", err)
		}
		waitLeader(t, m)
		more := payloads(fmt.Sprintf("reopen%v", reopen), 10)
		proposeAll(t, m.node, more)
		want = append(want, more...)
		waitData(t, m, want)
		if below := m.sm.below(); len(below) > 0 {
			t.Errorf("restart (reopen %v): entries %v at or below the applied index %d were handed to Apply again", reopen, below, m.sm.startIndex)
		}
		m.sm.checkOrder(t)
	}
}

func TestStopLeaksNothing(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	dir := t.TempDir()
	eng, err := storage.Open(dir, zapNop())
	if err != nil {
		t.Fatal(err)
	}
	log, err := storage.OpenRaftLog(eng)
	if err != nil {
		t.Fatal(err)
	}
	sm := newTestSM(t, eng)
	n, err := raftnode.Start(raftnode.Config{
		ID: 1, Peers: singlePeer, TickInterval: tickInterval, ElectionTicks: electionTicks,
		SnapshotCount: 5, CatchUpEntries: 2, Engine: eng, Log: log, StateMachine: sm,
		Transport: nopTransport{}, Logger: zapNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxTimeout(t, waitTimeout)
	for i := 0; i < 20; i++ {
		if err := n.Propose(ctx, []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.ReadBarrier(ctx); err != nil {
		t.Fatal(err)
	}
	// Waiters blocked at Stop time.
	results := make(chan error, 2)
	go func() { results <- n.WaitApplied(context.Background(), 1<<40) }()
	stopped := make(chan struct{})
	go func() {
		n.Stop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(waitTimeout):
		t.Fatal("Stop did not return")
	}
	select {
	case <-n.Done():
	default:
		t.Error("Done() not closed after Stop returned")
	}
	n.Stop() // a second Stop is harmless
	if err := n.Err(); err != nil && !errors.Is(err, raftnode.ErrStopped) {
		t.Errorf("Err() after a clean stop = %v", err) // ErrStopped: see TestCleanStopReportsNoError
	}
	if err := <-results; !errors.Is(err, raftnode.ErrStopped) {
		t.Errorf("WaitApplied across Stop = %v, want ErrStopped", err)
	}
	if err := n.Propose(context.Background(), []byte("late")); !errors.Is(err, raftnode.ErrStopped) {
		t.Errorf("Propose after Stop = %v, want ErrStopped", err)
	}
	if err := n.ReadBarrier(context.Background()); !errors.Is(err, raftnode.ErrStopped) {
		t.Errorf("ReadBarrier after Stop = %v, want ErrStopped", err)
	}
	if err := n.Process(context.Background(), &raftpb.Message{Type: raftpb.MsgHeartbeat.Enum(), From: ptr(uint64(2)), To: ptr(uint64(1))}); err == nil {
		t.Errorf("Process after Stop succeeded")
	}
	n.ReportUnreachable(2)
	n.ReportSnapshot(2, raft.SnapshotFailure)
	if err := eng.Close(); err != nil {
		t.Fatal(err)
	}
	goleak.VerifyNone(t, ignore)
}

func ptr[T any](v T) *T { return &v }

func TestStartWithoutPeersOnEmptyLog(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	eng, err := storage.Open(t.TempDir(), zapNop())
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := eng.Close(); err != nil {
			t.Error(err)
		}
		goleak.VerifyNone(t, ignore)
	}()
	log, err := storage.OpenRaftLog(eng)
	if err != nil {
		t.Fatal(err)
	}
	_, err = raftnode.Start(raftnode.Config{
		ID: 1, TickInterval: tickInterval, ElectionTicks: electionTicks, Engine: eng, Log: log,
		StateMachine: newTestSM(t, eng), Transport: nopTransport{}, Logger: zapNop(),
	})
	if err == nil {
		t.Fatal("Start on an empty log without bootstrap peers succeeded")
	}
}

// TestStopWhileApplyingConfChange stops the node while the apply loop is about to apply the
// bootstrap configuration entry. Whatever the apply loop does after Stop, it must not record a
// configuration that raft did not produce: the restarted member must still know it is a voter.
func TestStopWhileApplyingConfChange(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	o := memberOptions{peers: singlePeer, beforeApply: func(ents []*raftpb.Entry) error {
		for _, e := range ents {
			if e.GetType() == raftpb.EntryConfChange || e.GetType() == raftpb.EntryConfChangeV2 {
				once.Do(func() {
					close(entered)
					<-release
				})
			}
		}
		return nil
	}}
	m := newMember(t, 1, "", o)
	select {
	case <-entered:
	case <-time.After(waitTimeout):
		t.Fatal("the bootstrap conf change never reached Apply")
	}
	n := m.node
	stopped := make(chan struct{})
	go func() {
		n.Stop()
		close(stopped)
	}()
	// Stop returns only after the apply loop finished, so let Apply go on once raft itself
	// has stopped (Status answers empty then) -- or after a second, should raft be kept
	// running until the apply loop is done.
	poll(time.Second, func() bool { return n.Status().ID == 0 })
	close(release)
	<-stopped
	m.node = nil

	cs, err := storage.ConfState(m.eng.DB)
	if err != nil {
		t.Fatal(err)
	}
	applied, _, _ := storage.Applied(m.eng.DB)
	if applied >= 1 && len(cs.GetVoters()) == 0 {
		t.Errorf("after Stop during apply, the stored applied index is %d but the stored conf state has no voters (%v): "+
			"the conf change was recorded with the result of ApplyConfChange on a stopped raft node", applied, cs)
	}

	// The consequence: the restarted single member never becomes leader.
	m.start(memberOptions{peers: singlePeer})
	if !poll(20*electionTicks*tickInterval, func() bool { return m.node.Leader() == 1 }) {
		t.Errorf("restarted member did not become leader (stored conf state %v, applied %d)", cs, applied)
	}
}

// TestApplyErrorStopsApplying: when Apply fails the node stops with that error; later
// committed entries must not be applied past the failed one (that would record an applied
// index beyond an entry that never took effect).
func TestApplyErrorStopsApplying(t *testing.T) {
	entered := make(chan uint64, 1)
	release := make(chan struct{})
	errApply := errors.New("injected apply failure")
	o := memberOptions{peers: singlePeer, beforeApply: func(ents []*raftpb.Entry) error {
		for _, e := range ents {
			if string(e.GetData()) == "fail" {
				entered <- e.GetIndex()
				<-release
				return errApply
			}
		}
		return nil
	}}
	m := newMember(t, 1, "", o)
	waitLeader(t, m)
	proposeAll(t, m.node, []string{"a", "fail"})
	var failIndex uint64
	select {
	case failIndex = <-entered:
	case <-time.After(waitTimeout):
		t.Fatal("the failing entry never reached Apply")
	}
	// While Apply hangs on "fail", commit "b" and let the Ready loop queue it for the apply
	// loop (raft counts an entry as applied once its Ready was handed over and advanced).
	proposeAll(t, m.node, []string{"b"})
	waitFor(t, waitTimeout, "entry b to be handed to the apply loop", func() bool {
		return m.node.Status().Applied >= failIndex+1
	})
	close(release)
	select {
	case <-m.node.Done():
	case <-time.After(waitTimeout):
		t.Fatal("node did not stop after Apply failed")
	}
	if err := m.node.Err(); !errors.Is(err, errApply) {
		t.Errorf("Err() = %v, want the apply error", err)
	}
	data, applied := m.sm.snapshot()
	stored, _, _ := storage.Applied(m.eng.DB)
	if applied >= failIndex || stored >= failIndex {
		t.Errorf("after Apply failed at entry %d, the apply loop went on: state machine applied %v up to %d (stored %d)",
			failIndex, data, applied, stored)
	}
}

// TestCleanStopReportsNoError stops a node whose Ready loop is waiting to hand committed
// entries to a busy apply loop. Err must stay nil after a Stop that was asked for: it is for
// fatal errors only, and the server treats a non-nil Err as a failure of the member.
func TestCleanStopReportsNoError(t *testing.T) {
	var blocking atomic.Bool
	gate := make(chan struct{})
	m := newMember(t, 1, "", memberOptions{peers: singlePeer, beforeApply: func([]*raftpb.Entry) error {
		if blocking.Load() {
			<-gate
		}
		return nil
	}})
	waitLeader(t, m)
	n := m.node
	blocking.Store(true)
	// Keep proposing until raft's applied index (advanced each time the Ready loop hands
	// committed entries over) has not moved for half a second: the apply loop is stuck, its
	// queue is full and the Ready loop waits to add to it.
	ctx, cancel := context.WithCancel(context.Background())
	proposing := make(chan struct{})
	go func() {
		defer close(proposing)
		for i := 0; ctx.Err() == nil; i++ {
			if err := n.Propose(ctx, []byte(fmt.Sprint(i))); err != nil {
				return
			}
		}
	}()
	last, since := n.Status().Applied, time.Now()
	stuck := poll(waitTimeout, func() bool {
		if a := n.Status().Applied; a != last {
			last, since = a, time.Now()
		}
		return time.Since(since) > 500*time.Millisecond
	})
	cancel()
	<-proposing
	if !stuck {
		t.Fatal("the Ready loop never got stuck behind the blocked apply loop")
	}
	stopped := make(chan struct{})
	go func() {
		n.Stop()
		close(stopped)
	}()
	// Let the apply loop go once the Ready loop has seen the stop (raft stops right after it),
	// or after two seconds should raft be kept running until the apply loop is done.
	poll(2*time.Second, func() bool { return n.Status().ID == 0 })
	close(gate)
	<-stopped
	m.node = nil
	if err := n.Err(); err != nil {
		t.Errorf("Err() after a clean Stop = %v, want nil", err)
	}
}
