package server

import (
	"context"
	"errors"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/proto"

	"github.com/ordo-db/ordo/internal/apply"
	"github.com/ordo-db/ordo/internal/mvcc"
	"github.com/ordo-db/ordo/internal/raftnode"
)

// propose replicates req through raft and returns its result once this member applied it.
// A write that does not fit this member's quota or disk is refused before it is proposed
// (checkSpace); while a NOSPACE alarm is active the apply loop refuses writes on every member.
func (m *Member) propose(ctx context.Context, req *pb.InternalRaftRequest) (apply.Result, error) {
	if err := m.checkSpace(ctx, req); err != nil {
		return apply.Result{}, err
	}
	id := m.reqIDs.id()
	req.Header = &pb.RequestHeader{ID: id}
	if req.Authenticate == nil {
		// The entry names the user it acts for: every member checks its permissions as it
		// applies the entry.
		ai, err := m.auth.InfoFromContext(ctx)
		if err != nil {
			return apply.Result{}, err
		}
		if ai != nil {
			req.Header.Username, req.Header.AuthRevision = ai.Username, ai.Revision
		}
	}
	data, err := proto.Marshal(req)
	if err != nil {
		return apply.Result{}, err
	}
	if len(data) > int(m.cfg.MaxRequestBytes) {
		return apply.Result{}, rpctypes.ErrGRPCRequestTooLarge
	}
	ctx, cancel := context.WithTimeout(ctx, m.node.RequestTimeout())
	defer cancel()
	m.metrics.proposalsPending.Inc()
	defer m.metrics.proposalsPending.Dec()
	ch := m.applier.Wait(id)
	if err := m.node.Propose(ctx, data); err != nil {
		m.applier.Forget(id)
		m.metrics.proposalsFailed.Inc()
		return apply.Result{}, toGRPCError(err)
	}
	select {
	case res := <-ch:
		if res.Err != nil {
			return res, res.Err
		}
		return res, nil
	case <-ctx.Done():
		m.applier.Forget(id)
		m.metrics.proposalsFailed.Inc()
		return apply.Result{}, toGRPCError(m.ctxErr(ctx))
	case <-m.node.Done():
		m.applier.Forget(id)
		m.metrics.proposalsFailed.Inc()
		return apply.Result{}, rpctypes.ErrGRPCStopped
	}
}

// ctxErr maps an ended request context to the error a client sees.
func (m *Member) ctxErr(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return ctx.Err()
	}
	if m.node.Leader() == 0 {
		return raftnode.ErrNoLeader
	}
	return raftnode.ErrTimeout
}

// linearize waits until a local read reflects every write committed before the call.
func (m *Member) linearize(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, m.node.RequestTimeout())
	defer cancel()
	return toGRPCError(m.node.ReadBarrier(ctx))
}

// toGRPCError maps internal errors to etcd's gRPC errors.
func toGRPCError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raftnode.ErrNoLeader):
		return rpctypes.ErrGRPCNoLeader
	case errors.Is(err, raftnode.ErrTimeout):
		return rpctypes.ErrGRPCTimeout
	case errors.Is(err, raftnode.ErrLeaderChanged):
		return rpctypes.ErrGRPCLeaderChanged
	case errors.Is(err, raftnode.ErrStopped):
		return rpctypes.ErrGRPCStopped
	case errors.Is(err, context.Canceled):
		return rpctypes.ErrGRPCCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return rpctypes.ErrGRPCDeadlineExceeded
	}
	return err
}

// mvccToGRPC maps MVCC read errors to etcd's errors.
func mvccToGRPC(err error) error {
	switch {
	case errors.Is(err, mvcc.ErrCompacted):
		return rpctypes.ErrGRPCCompacted
	case errors.Is(err, mvcc.ErrFutureRev):
		return rpctypes.ErrGRPCFutureRev
	}
	return err
}

// header fills a response header the way etcd does.
func (m *Member) header(h *pb.ResponseHeader) *pb.ResponseHeader {
	if h == nil {
		h = &pb.ResponseHeader{}
	}
	h.ClusterId = m.clusterID
	h.MemberId = m.id
	h.RaftTerm = m.node.Term()
	return h
}
