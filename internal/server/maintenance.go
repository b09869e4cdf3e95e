package server

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/api/v3/version"
	"go.etcd.io/raft/v3"

	"github.com/ordo-db/ordo/internal/raftnode"
)

// maintenanceServer is etcd's Maintenance service.
type maintenanceServer struct {
	pb.UnimplementedMaintenanceServer
	m *Member
}

func (s *maintenanceServer) Status(ctx context.Context, r *pb.StatusRequest) (*pb.StatusResponse, error) {
	if err := s.m.auth.RequireUser(ctx); err != nil {
		return nil, err
	}
	m := s.m
	st := m.node.Status()
	size := m.engine.Size()
	resp := &pb.StatusResponse{
		Header:           m.header(&pb.ResponseHeader{Revision: m.kv.CurrentRev()}),
		Version:          version.Version,
		DbSize:           size,
		DbSizeInUse:      size,
		Leader:           m.node.Leader(),
		RaftIndex:        st.GetCommit(),
		RaftTerm:         st.GetTerm(),
		RaftAppliedIndex: m.node.AppliedIndex(),
		IsLearner:        st.RaftState == raft.StateFollower && isLearner(st, m.id),
		StorageVersion:   "3.7.0",
		DbSizeQuota:      m.quota(),
		DowngradeInfo:    &pb.DowngradeInfo{},
		Errors:           alarmStrings(m.applier.Alarms()),
	}
	return resp, nil
}

// Defragment answers at once, as a defragmentation that finished: Ordo's storage reclaims the
// space of deleted and compacted data in the background (Pebble compactions), so there is
// nothing to defragment and no pause. Like etcd's, the answer has no header.
func (s *maintenanceServer) Defragment(ctx context.Context, r *pb.DefragmentRequest) (*pb.DefragmentResponse, error) {
	if err := s.m.auth.RequireAdmin(ctx); err != nil {
		return nil, err
	}
	s.m.lg.Info("defragment requested: nothing to do, storage compacts in the background")
	return &pb.DefragmentResponse{}, nil
}

// errLeaderTransferTimeout is etcd's answer to a leadership transfer that did not finish in
// time; etcd has no gRPC code of its own for it and sends it as Unknown.
var errLeaderTransferTimeout = status.Error(codes.Unknown, "etcdserver: request timed out, leader transfer took too long")

// MoveLeader hands leadership to another voting member, as etcd does: only the leader takes the
// request (etcdctl move-leader finds it), and the answer comes once this member sees the
// transferee lead, or with etcd's timeout error when raft could not finish the transfer.
func (s *maintenanceServer) MoveLeader(ctx context.Context, r *pb.MoveLeaderRequest) (*pb.MoveLeaderResponse, error) {
	m := s.m
	if err := m.auth.RequireAdmin(ctx); err != nil {
		return nil, err
	}
	if m.node.Leader() != m.id {
		return nil, rpctypes.ErrGRPCNotLeader
	}
	if _, voter := m.node.Status().Config.Voters.IDs()[r.TargetID]; !voter {
		return nil, rpctypes.ErrGRPCBadLeaderTransferee
	}
	m.lg.Info("leadership transfer starting", zap.String("local-member-id", fmt.Sprintf("%x", m.id)),
		zap.String("transferee", fmt.Sprintf("%x", r.TargetID)))
	tctx, cancel := context.WithTimeout(ctx, m.node.RequestTimeout())
	defer cancel()
	defer context.AfterFunc(m.ctx, cancel)() // a stopping member stops waiting
	if err := m.node.TransferLeadership(tctx, m.id, r.TargetID); err != nil {
		if errors.Is(err, raftnode.ErrStopped) || m.ctx.Err() != nil {
			return nil, rpctypes.ErrGRPCStopped
		}
		return nil, errLeaderTransferTimeout
	}
	return &pb.MoveLeaderResponse{Header: m.header(&pb.ResponseHeader{Revision: m.kv.CurrentRev()})}, nil
}

// Alarm lists, raises or clears alarms. As in etcd every action, listing included, is a raft
// entry, so the answer is linearizable and every member applies the same alarm changes (see
// apply.Applier.applyAlarm).
func (s *maintenanceServer) Alarm(ctx context.Context, r *pb.AlarmRequest) (*pb.AlarmResponse, error) {
	// Anyone may list the alarms; raising or clearing one is for root.
	check := s.m.auth.RequireAdmin
	if r.Action == pb.AlarmRequest_GET {
		check = s.m.auth.RequireUser
	}
	if err := check(ctx); err != nil {
		return nil, err
	}
	res, err := s.m.propose(ctx, &pb.InternalRaftRequest{Alarm: r})
	if err != nil {
		return nil, err
	}
	resp, ok := res.Resp.(*pb.AlarmResponse)
	if !ok {
		return nil, status.Errorf(codes.Internal, "alarm: unexpected response %T", res.Resp)
	}
	resp.Header = s.m.header(resp.Header)
	return resp, nil
}

// HashKV hashes the key-value history up to a revision (0: the current one) after a
// linearizable barrier, so members that applied the same entries report the same hash.
func (s *maintenanceServer) HashKV(ctx context.Context, r *pb.HashKVRequest) (*pb.HashKVResponse, error) {
	if err := s.m.auth.RequireAdmin(ctx); err != nil {
		return nil, err
	}
	var resp *pb.HashKVResponse
	err := s.m.read(ctx, false, func(v viewRW) error {
		h, err := v.v.HashKV(ctx, r.Revision)
		if err != nil {
			return mvccToGRPC(err)
		}
		resp = &pb.HashKVResponse{
			Header:          s.m.header(&pb.ResponseHeader{Revision: v.Rev()}),
			Hash:            h.Hash,
			CompactRevision: h.CompactRevision,
			HashRevision:    h.Revision,
		}
		return nil
	})
	return resp, err
}

// Hash, Snapshot and Downgrade are not served yet; as in etcd, only a root user is told so when
// authentication is on.
func (s *maintenanceServer) Hash(ctx context.Context, r *pb.HashRequest) (*pb.HashResponse, error) {
	if err := s.m.auth.RequireAdmin(ctx); err != nil {
		return nil, err
	}
	return s.UnimplementedMaintenanceServer.Hash(ctx, r)
}

func (s *maintenanceServer) Snapshot(r *pb.SnapshotRequest, stream pb.Maintenance_SnapshotServer) error {
	if err := s.m.auth.RequireAdmin(stream.Context()); err != nil {
		return err
	}
	return s.UnimplementedMaintenanceServer.Snapshot(r, stream)
}

func (s *maintenanceServer) Downgrade(ctx context.Context, r *pb.DowngradeRequest) (*pb.DowngradeResponse, error) {
	if err := s.m.auth.RequireAdmin(ctx); err != nil {
		return nil, err
	}
	return s.UnimplementedMaintenanceServer.Downgrade(ctx, r)
}

func isLearner(st raft.Status, id uint64) bool {
	_, ok := st.Config.Learners[id]
	return ok
}

// quota is the backend size limit reported in Status: etcd's default of 2 GiB when unset, 0
// when there is no quota.
func (m *Member) quota() int64 {
	return max(m.cfg.BackendQuota(), 0)
}
