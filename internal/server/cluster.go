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
	if err := s.m.auth.RequireUser(ctx); err != nil {
		return nil, err
	}
	members, err := storage.Members(s.m.engine.DB)
	if err != nil {
		return nil, err
	}
	return &pb.MemberListResponse{Header: s.m.header(nil), Members: members}, nil
}

// Membership changes are not served yet; as in etcd, only a root user is told so when
// authentication is on.

func (s *clusterServer) MemberAdd(ctx context.Context, r *pb.MemberAddRequest) (*pb.MemberAddResponse, error) {
	if err := s.m.auth.RequireAdmin(ctx); err != nil {
		return nil, err
	}
	return s.UnimplementedClusterServer.MemberAdd(ctx, r)
}

func (s *clusterServer) MemberRemove(ctx context.Context, r *pb.MemberRemoveRequest) (*pb.MemberRemoveResponse, error) {
	if err := s.m.auth.RequireAdmin(ctx); err != nil {
		return nil, err
	}
	return s.UnimplementedClusterServer.MemberRemove(ctx, r)
}

func (s *clusterServer) MemberUpdate(ctx context.Context, r *pb.MemberUpdateRequest) (*pb.MemberUpdateResponse, error) {
	if err := s.m.auth.RequireAdmin(ctx); err != nil {
		return nil, err
	}
	return s.UnimplementedClusterServer.MemberUpdate(ctx, r)
}

func (s *clusterServer) MemberPromote(ctx context.Context, r *pb.MemberPromoteRequest) (*pb.MemberPromoteResponse, error) {
	if err := s.m.auth.RequireAdmin(ctx); err != nil {
		return nil, err
	}
	return s.UnimplementedClusterServer.MemberPromote(ctx, r)
}
