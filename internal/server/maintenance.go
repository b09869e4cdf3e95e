package server

import (
	"context"

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
		StorageVersion:   "3.6.0",
		DbSizeQuota:      m.quota(),
	}
	return resp, nil
}

func isLearner(st raft.Status, id uint64) bool {
	_, ok := st.Config.Learners[id]
	return ok
}

// quota is the backend size limit: etcd's default of 2 GiB when unset.
func (m *Member) quota() int64 {
	if m.cfg.QuotaBackendBytes > 0 {
		return m.cfg.QuotaBackendBytes
	}
	return 2 << 30
}
