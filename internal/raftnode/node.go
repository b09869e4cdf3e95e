package raftnode

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"

	"github.com/ordo-db/ordo/internal/storage"
)

// Sentinel errors returned to request handlers.
var (
	ErrStopped       = errors.New("raftnode: stopped")
	ErrNoLeader      = errors.New("raftnode: no leader")
	ErrTimeout       = errors.New("raftnode: request timed out")
	ErrLeaderChanged = errors.New("raftnode: leader changed")
)

// StateMachine receives committed entries. Apply is called from one goroutine, in log order.
type StateMachine interface {
	// Apply applies ents; configuration entries are passed to confChange, whose result must be
	// recorded with the batch that applies the entry.
	Apply(ents []*raftpb.Entry, confChange func(raftpb.ConfChangeI) *raftpb.ConfState) error
	// Restore reloads in-memory state after the state was replaced by a snapshot.
	Restore() error
}

// Transport sends raft messages to peers without blocking.
type Transport interface {
	Send(msgs []*raftpb.Message)
}

// Config configures a Node.
type Config struct {
	ID             uint64
	Peers          []raft.Peer // bootstrap members, used only when the log is empty
	TickInterval   time.Duration
	ElectionTicks  int
	SnapshotCount  uint64
	CatchUpEntries uint64
	Engine         *storage.Engine
	Log            *storage.RaftLog
	StateMachine   StateMachine
	Transport      Transport
	Logger         *zap.Logger
	// ObserveLogSync, if set, is given the time each durable append of entries to the raft
	// log took (etcd's WAL fsync); ObserveApply the time each batch of committed entries took
	// to apply and commit to storage. Both are called on the node's own goroutines.
	ObserveLogSync func(time.Duration)
	ObserveApply   func(time.Duration)
}

// Node is a running raft member.
type Node struct {
	cfg  Config
	lg   *zap.Logger
	raft raft.Node

	applyc chan applyItem
	readc  chan raft.ReadState
	// propc queues the proposals peers forward to this member. raft takes a proposal only
	// while it knows a leader, so stepping one can block; it must never hold up the other
	// messages of the same peer stream, since the heartbeats and appends of a new leader are
	// how this member learns there is one.
	propc chan *raftpb.Message

	// isLeader is whether raft was leader at the last Ready; only the Ready loop uses it.
	isLeader bool

	leader atomic.Uint64
	term   atomic.Uint64
	// leaderChanges counts the times this member saw a new leader (not the loss of one).
	leaderChanges atomic.Uint64
	// leadStart is, while this member leads, the index of the first entry of its term: a read
	// index below it is raised to it (raft answers a single voter's ReadIndex with its commit
	// index at once, even before the new term's first entry committed).
	leadStart atomic.Uint64
	// leaderChanged is closed and replaced whenever the known leader changes.
	leaderMu      sync.Mutex
	leaderChanged chan struct{}

	applied appliedIndex

	readMu     sync.Mutex
	readNext   *readBatch // the batch new readers join
	readSignal chan struct{}
	readSeq    atomic.Uint64

	stopc    chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
	errMu    sync.Mutex
	err      error
	donec    chan struct{}
}

type applyItem struct {
	ents    []*raftpb.Entry
	barrier chan struct{}
}

// Start starts (or restarts, when the log has state) the raft node and its goroutines.
func Start(cfg Config) (*Node, error) {
	applied, _, err := storage.Applied(cfg.Engine.DB)
	if err != nil {
		return nil, err
	}
	rc := &raft.Config{
		ID:                        cfg.ID,
		ElectionTick:              cfg.ElectionTicks,
		HeartbeatTick:             1,
		Storage:                   cfg.Log,
		Applied:                   applied,
		MaxSizePerMsg:             1 << 20,
		MaxInflightMsgs:           512,
		MaxUncommittedEntriesSize: 1 << 30,
		CheckQuorum:               true,
		PreVote:                   true,
		Logger:                    raftLogger{cfg.Logger.Named("raft").Sugar()},
	}
	n := &Node{
		cfg:           cfg,
		lg:            cfg.Logger,
		applyc:        make(chan applyItem, 64),
		readc:         make(chan raft.ReadState, 64),
		propc:         make(chan *raftpb.Message, forwardedProposalQueue),
		leaderChanged: make(chan struct{}),
		readNext:      newReadBatch(),
		readSignal:    make(chan struct{}, 1),
		stopc:         make(chan struct{}),
		donec:         make(chan struct{}),
	}
	n.applied.init(applied)
	last, _ := cfg.Log.LastIndex()
	if raft.IsEmptyHardState(cfg.Log.HardState()) && last == 0 {
		if len(cfg.Peers) == 0 {
			return nil, errors.New("raftnode: empty log and no bootstrap peers")
		}
		n.raft = raft.StartNode(rc, cfg.Peers)
	} else {
		n.raft = raft.RestartNode(rc)
	}
	n.wg.Add(4)
	go n.run()
	go n.applyLoop()
	go n.readLoop()
	go n.proposalLoop()
	go func() {
		n.wg.Wait()
		// Raft stops only after the apply loop drained: applying a conf change needs it.
		n.raft.Stop()
		close(n.donec)
	}()
	return n, nil
}

// fail records a fatal error and stops the node.
func (n *Node) fail(err error) {
	n.errMu.Lock()
	if n.err == nil {
		n.err = err
		n.lg.Error("raft node failed", zap.Error(err))
	}
	n.errMu.Unlock()
	n.stopOnce.Do(func() { close(n.stopc) })
}

// Err returns the fatal error that stopped the node, if any.
func (n *Node) Err() error {
	n.errMu.Lock()
	defer n.errMu.Unlock()
	return n.err
}

// Done is closed when every goroutine of the node has exited.
func (n *Node) Done() <-chan struct{} { return n.donec }

// Stop stops the node and waits for its goroutines.
func (n *Node) Stop() {
	n.stopOnce.Do(func() { close(n.stopc) })
	<-n.donec
}

func (n *Node) run() {
	defer n.wg.Done()
	defer close(n.applyc)
	ticker := time.NewTicker(n.cfg.TickInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ticker.C:
			n.raft.Tick()
		case rd := <-n.raft.Ready():
			if err := n.handleReady(rd); err != nil {
				if !errors.Is(err, ErrStopped) {
					n.fail(err)
				}
				return
			}
			n.raft.Advance()
		case <-n.stopc:
			return
		}
	}
}

func (n *Node) handleReady(rd raft.Ready) error {
	if rd.HardState != nil && rd.HardState.GetTerm() > 0 {
		n.term.Store(rd.HardState.GetTerm())
	}
	if rd.SoftState != nil {
		wasLeader := n.isLeader
		n.isLeader = rd.SoftState.RaftState == raft.StateLeader
		switch {
		case n.isLeader && !wasLeader:
			// The empty entry a new leader appends opens its term; until it commits, the
			// leader's commit index may predate writes acknowledged in earlier terms.
			for _, e := range rd.Entries {
				if e.GetTerm() == n.term.Load() {
					n.leadStart.Store(e.GetIndex())
					break
				}
			}
		case !n.isLeader:
			n.leadStart.Store(0)
		}
		if old := n.leader.Swap(rd.SoftState.Lead); old != rd.SoftState.Lead {
			if rd.SoftState.Lead != raft.None {
				n.leaderChanges.Add(1)
			}
			n.lg.Info("leader changed", zap.String("local-member-id", idString(n.cfg.ID)),
				zap.String("leader", idString(rd.SoftState.Lead)))
			n.leaderMu.Lock()
			close(n.leaderChanged)
			n.leaderChanged = make(chan struct{})
			n.leaderMu.Unlock()
		}
	}
	for _, rs := range rd.ReadStates {
		select {
		case n.readc <- rs:
		default:
			// The read loop is gone or far behind: the waiting readers time out and retry.
		}
	}
	if !raft.IsEmptySnap(rd.Snapshot) {
		if err := n.installSnapshot(rd.Snapshot); err != nil {
			return err
		}
	}
	// A leader may send its entries before they are durable locally: it counts itself towards
	// the quorum only after Save (at Advance), so followers persist in parallel with it.
	// Everyone else persists first, since its messages (votes, acks) promise durable state.
	if n.isLeader {
		n.cfg.Transport.Send(rd.Messages)
	}
	start := time.Now()
	if err := n.cfg.Log.Save(rd.HardState, rd.Entries); err != nil {
		return err
	}
	if n.cfg.ObserveLogSync != nil && len(rd.Entries) > 0 {
		n.cfg.ObserveLogSync(time.Since(start))
	}
	if !n.isLeader {
		n.cfg.Transport.Send(rd.Messages)
	}
	if len(rd.CommittedEntries) > 0 {
		select {
		case n.applyc <- applyItem{ents: rd.CommittedEntries}:
		case <-n.stopc:
			return ErrStopped
		}
	}
	return nil
}

// installSnapshot replaces the state with the staged snapshot once earlier entries are applied.
func (n *Node) installSnapshot(snap *raftpb.Snapshot) error {
	barrier := make(chan struct{})
	select {
	case n.applyc <- applyItem{barrier: barrier}:
	case <-n.stopc:
		return ErrStopped
	}
	select {
	case <-barrier:
	case <-n.stopc:
		return ErrStopped
	}
	meta := snap.GetMetadata()
	n.lg.Info("installing snapshot", zap.Uint64("index", meta.GetIndex()), zap.Uint64("term", meta.GetTerm()))
	if err := n.cfg.Engine.InstallSnapshot(context.Background(), meta.GetIndex()); err != nil {
		return err
	}
	if err := n.cfg.Log.ApplySnapshot(meta); err != nil {
		return err
	}
	if err := n.cfg.StateMachine.Restore(); err != nil {
		return fmt.Errorf("restore state machine from snapshot %d: %w", meta.GetIndex(), err)
	}
	applied, _, err := storage.Applied(n.cfg.Engine.DB)
	if err != nil {
		return err
	}
	n.applied.set(applied)
	n.lg.Info("installed snapshot", zap.Uint64("index", meta.GetIndex()), zap.Uint64("applied-index", applied))
	return nil
}

func (n *Node) applyLoop() {
	defer n.wg.Done()
	for item := range n.applyc {
		if item.barrier != nil {
			close(item.barrier)
			continue
		}
		if n.Err() != nil {
			// After a failure nothing more is applied: the applied index must not pass the
			// entry that failed. Draining keeps the Ready loop from blocking.
			continue
		}
		start := time.Now()
		if err := n.cfg.StateMachine.Apply(item.ents, n.raft.ApplyConfChange); err != nil {
			n.fail(fmt.Errorf("apply entries %d-%d: %w", item.ents[0].GetIndex(), item.ents[len(item.ents)-1].GetIndex(), err))
			// Keep draining so the Ready loop never blocks on a dead apply loop.
			continue
		}
		if n.cfg.ObserveApply != nil {
			n.cfg.ObserveApply(time.Since(start))
		}
		last := item.ents[len(item.ents)-1].GetIndex()
		n.applied.set(last)
		if err := n.maybeSnapshot(last); err != nil {
			n.fail(err)
		}
	}
}

func (n *Node) maybeSnapshot(applied uint64) error {
	if applied-n.cfg.Log.SnapshotIndex() < n.cfg.SnapshotCount {
		return nil
	}
	cs, err := storage.ConfState(n.cfg.Engine.DB)
	if err != nil {
		return err
	}
	if err := n.cfg.Log.CreateSnapshot(applied, cs, n.cfg.CatchUpEntries); err != nil {
		if errors.Is(err, raft.ErrSnapOutOfDate) {
			return nil
		}
		return fmt.Errorf("create snapshot at %d: %w", applied, err)
	}
	n.lg.Info("created raft snapshot", zap.Uint64("index", applied))
	return nil
}

// Propose submits data to raft. It returns once raft accepted the proposal, not once it is
// committed; callers wait for the apply result separately. While no leader is known it retries
// until ctx ends.
func (n *Node) Propose(ctx context.Context, data []byte) error {
	for {
		err := n.raft.Propose(ctx, data)
		if !errors.Is(err, raft.ErrProposalDropped) {
			if errors.Is(err, raft.ErrStopped) {
				return ErrStopped
			}
			return err
		}
		if err := n.waitLeader(ctx); err != nil {
			return err
		}
	}
}

// waitLeader waits until a leader is known, or a leader change, or ctx ends.
func (n *Node) waitLeader(ctx context.Context) error {
	ch := n.leaderChange()
	timer := time.NewTimer(n.cfg.TickInterval)
	defer timer.Stop()
	select {
	case <-ch:
	case <-timer.C:
	case <-ctx.Done():
		return n.ctxErr(ctx)
	case <-n.stopc:
		return ErrStopped
	}
	return nil
}

// ctxErr maps an ended request context to the error a client sees.
func (n *Node) ctxErr(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return ctx.Err()
	}
	if n.leader.Load() == raft.None {
		return ErrNoLeader
	}
	return ErrTimeout
}

// forwardedProposalQueue bounds the proposals from peers waiting for raft to take them.
const forwardedProposalQueue = 4096

// ErrProposalQueueFull is returned by Process when a forwarded proposal finds the queue full;
// the proposal is dropped, and the member that proposed it times out and answers its client.
var ErrProposalQueueFull = errors.New("raftnode: forwarded proposal queue full")

// Process delivers a message from a peer. Proposals forwarded by a peer are queued and stepped
// by a goroutine of their own (see propc); every other message is stepped at once.
func (n *Node) Process(ctx context.Context, m *raftpb.Message) error {
	if m.GetType() == raftpb.MsgProp {
		select {
		case n.propc <- m:
			return nil
		default:
			return ErrProposalQueueFull
		}
	}
	return n.raft.Step(ctx, m)
}

// proposalLoop steps the proposals peers forwarded, one at a time. A proposal that raft does
// not take within an election timeout (no leader known meanwhile) is dropped: its proposer
// has a request timeout of its own.
func (n *Node) proposalLoop() {
	defer n.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-n.stopc:
			cancel()
		case <-ctx.Done():
		}
	}()
	wait := time.Duration(n.cfg.ElectionTicks) * n.cfg.TickInterval
	for {
		select {
		case m := <-n.propc:
			sctx, scancel := context.WithTimeout(ctx, wait)
			if err := n.raft.Step(sctx, m); err != nil && ctx.Err() == nil {
				n.lg.Debug("dropped a forwarded proposal", zap.Uint64("from", m.GetFrom()), zap.Error(err))
			}
			scancel()
		case <-n.stopc:
			return
		}
	}
}

// ReportUnreachable tells raft that a peer could not be reached.
func (n *Node) ReportUnreachable(id uint64) { n.raft.ReportUnreachable(id) }

// ReportSnapshot tells raft how sending a snapshot to id ended.
func (n *Node) ReportSnapshot(id uint64, status raft.SnapshotStatus) {
	n.raft.ReportSnapshot(id, status)
}

// Leader returns the known leader id (0 if none).
func (n *Node) Leader() uint64 { return n.leader.Load() }

// TransferLeadership asks raft to hand leadership from lead (this member) to transferee and
// waits until this member sees transferee lead, ctx ends, or the node stops. Raft gives up on
// a transfer that does not finish within an election timeout; the wait then ends with ctx.
func (n *Node) TransferLeadership(ctx context.Context, lead, transferee uint64) error {
	n.raft.TransferLeadership(ctx, lead, transferee)
	for {
		ch := n.leaderChange()
		if n.Leader() == transferee {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-n.stopc:
			return ErrStopped
		}
	}
}

// leaderChange returns a channel closed at the next change of the known leader. Read the
// leader after taking it: a change in between closes it.
func (n *Node) leaderChange() <-chan struct{} {
	n.leaderMu.Lock()
	defer n.leaderMu.Unlock()
	return n.leaderChanged
}

// LeaderChanges is how many times this member has seen a new leader since it started.
func (n *Node) LeaderChanges() uint64 { return n.leaderChanges.Load() }

// Term returns the current raft term.
func (n *Node) Term() uint64 { return n.term.Load() }

// ID returns the member id.
func (n *Node) ID() uint64 { return n.cfg.ID }

// AppliedIndex returns the index of the last applied entry.
func (n *Node) AppliedIndex() uint64 { return n.applied.get() }

// Status returns raft's status.
func (n *Node) Status() raft.Status { return n.raft.Status() }

// WaitApplied waits until entry index has been applied.
func (n *Node) WaitApplied(ctx context.Context, index uint64) error {
	return n.applied.wait(ctx, index, n.stopc)
}

func idString(id uint64) string { return fmt.Sprintf("%x", id) }

// appliedIndex is the applied index with a way to wait for it to pass a value.
type appliedIndex struct {
	mu sync.Mutex
	v  uint64
	ch chan struct{} // closed and replaced on every advance
}

func (a *appliedIndex) init(v uint64) { a.v, a.ch = v, make(chan struct{}) }

func (a *appliedIndex) get() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.v
}

func (a *appliedIndex) set(v uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if v > a.v {
		a.v = v
		close(a.ch)
		a.ch = make(chan struct{})
	}
}

func (a *appliedIndex) wait(ctx context.Context, index uint64, stopc <-chan struct{}) error {
	for {
		a.mu.Lock()
		v, ch := a.v, a.ch
		a.mu.Unlock()
		if v >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-stopc:
			return ErrStopped
		}
	}
}
