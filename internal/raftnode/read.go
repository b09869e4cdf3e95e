package raftnode

import (
	"bytes"
	"context"
	"encoding/binary"
	"time"
)

// readBatch is shared by every reader that arrived while the previous ReadIndex was in flight:
// one ReadIndex round serves them all.
type readBatch struct {
	done chan struct{}
	err  error
}

func newReadBatch() *readBatch { return &readBatch{done: make(chan struct{})} }

// ReadBarrier returns once this member has applied every entry committed before the call, so
// that a local read afterwards is linearizable.
func (n *Node) ReadBarrier(ctx context.Context) error {
	n.readMu.Lock()
	b := n.readNext
	n.readMu.Unlock()
	select {
	case n.readSignal <- struct{}{}:
	default:
	}
	select {
	case <-b.done:
		return b.err
	case <-ctx.Done():
		return n.ctxErr(ctx)
	case <-n.stopc:
		return ErrStopped
	}
}

func (n *Node) readLoop() {
	defer n.wg.Done()
	for {
		select {
		case <-n.readSignal:
		case <-n.stopc:
			return
		}
		n.readMu.Lock()
		b := n.readNext
		n.readNext = newReadBatch()
		n.readMu.Unlock()
		index, err := n.readIndex()
		if err == nil {
			err = n.applied.wait(context.Background(), index, n.stopc)
		}
		b.err = err
		close(b.done)
	}
}

// electionTimeout is the configured election timeout.
func (n *Node) electionTimeout() time.Duration {
	return time.Duration(n.cfg.ElectionTicks) * n.cfg.TickInterval
}

// RequestTimeout is how long a request may wait for raft before it fails.
func (n *Node) RequestTimeout() time.Duration {
	return 5*time.Second + 2*n.electionTimeout()
}

// readIndex asks raft for the commit index a linearizable read must wait for, retrying across
// lost messages and leader changes until the request timeout.
func (n *Node) readIndex() (uint64, error) {
	ctxBytes := binary.BigEndian.AppendUint64(nil, n.readSeq.Add(1))
	deadline := time.NewTimer(n.RequestTimeout())
	defer deadline.Stop()
	for {
		if err := n.raft.ReadIndex(context.Background(), ctxBytes); err != nil {
			return 0, ErrStopped
		}
		retry := time.NewTimer(n.electionTimeout() / 2)
	wait:
		for {
			select {
			case rs := <-n.readc:
				if bytes.Equal(rs.RequestCtx, ctxBytes) {
					retry.Stop()
					return max(rs.Index, n.leadStart.Load()), nil
				}
				// An answer to an earlier, abandoned request.
			case <-retry.C:
				break wait
			case <-deadline.C:
				retry.Stop()
				if n.leader.Load() == 0 {
					return 0, ErrNoLeader
				}
				return 0, ErrTimeout
			case <-n.stopc:
				retry.Stop()
				return 0, ErrStopped
			}
		}
	}
}
