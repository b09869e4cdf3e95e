package server

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/ordo-db/ordo/internal/storage"
)

// clusterServer is etcd's Cluster service. Membership changes come in a later version.
type clusterServer struct {
	pb.UnimplementedClusterServer
	m *Member
}

func (s *clusterServer) MemberList(ctx context.Context, r *pb.MemberListRequest) (*pb.MemberListResponse, error) {
	if r.Linearizable {
		if err := s.m.linearize(ctx); err != nil {
			return nil, err
		}
	}
	members, err := storage.Members(s.m.engine.DB)
	if err != nil {
		return nil, err
	}
	return &pb.MemberListResponse{Header: s.m.header(nil), Members: members}, nil
}
