package server

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/version"
	"go.etcd.io/raft/v3"
)

// maintenanceServer is etcd's Maintenance service.
type maintenanceServer struct {
	pb.UnimplementedMaintenanceServer
	m *Member
}

func (s *maintenanceServer) Status(ctx context.Context, r *pb.StatusRequest) (*pb.StatusResponse, error) {
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

// Alarm lists, raises or clears alarms. As in etcd every action, listing included, is a raft
// entry, so the answer is linearizable and every member applies the same alarm changes (see
// apply.Applier.applyAlarm).
func (s *maintenanceServer) Alarm(ctx context.Context, r *pb.AlarmRequest) (*pb.AlarmResponse, error) {
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

func isLearner(st raft.Status, id uint64) bool {
	_, ok := st.Config.Learners[id]
	return ok
}

// quota is the backend size limit reported in Status: etcd's default of 2 GiB when unset, 0
// when there is no quota.
func (m *Member) quota() int64 {
	return max(m.cfg.BackendQuota(), 0)
}
