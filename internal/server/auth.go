package server

import (
	"context"
	"encoding/base64"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// authServer is etcd's Auth service. Every request, reads included, is a raft entry, as in
// etcd: the apply loop checks that the user may make it and answers from the auth state at
// that point of the log.
type authServer struct {
	pb.UnimplementedAuthServer
	m *Member
}

// headed is a response with etcd's header.
type headed interface {
	proto.Message
	GetHeader() *pb.ResponseHeader
}

// proposeFor replicates req and returns its response, of type T, with the header filled in.
func proposeFor[T headed](ctx context.Context, m *Member, req *pb.InternalRaftRequest) (T, error) {
	var zero T
	res, err := m.propose(ctx, req)
	if err != nil {
		return zero, err
	}
	resp, ok := res.Resp.(T)
	if !ok {
		return zero, status.Errorf(codes.Internal, "unexpected response %T", res.Resp)
	}
	m.header(resp.GetHeader())
	return resp, nil
}

func (s *authServer) AuthEnable(ctx context.Context, r *pb.AuthEnableRequest) (*pb.AuthEnableResponse, error) {
	return proposeFor[*pb.AuthEnableResponse](ctx, s.m, &pb.InternalRaftRequest{AuthEnable: r})
}

func (s *authServer) AuthDisable(ctx context.Context, r *pb.AuthDisableRequest) (*pb.AuthDisableResponse, error) {
	return proposeFor[*pb.AuthDisableResponse](ctx, s.m, &pb.InternalRaftRequest{AuthDisable: r})
}

func (s *authServer) AuthStatus(ctx context.Context, r *pb.AuthStatusRequest) (*pb.AuthStatusResponse, error) {
	return proposeFor[*pb.AuthStatusResponse](ctx, s.m, &pb.InternalRaftRequest{AuthStatus: r})
}

// Authenticate checks the password on this member (bcrypt is slow: it stays out of the apply
// loop and out of the raft log), then proposes the token's creation so that every member knows
// it. If users or roles changed between the check and the proposal, it checks again.
func (s *authServer) Authenticate(ctx context.Context, r *pb.AuthenticateRequest) (*pb.AuthenticateResponse, error) {
	if err := s.m.linearize(ctx); err != nil {
		return nil, err
	}
	for {
		checked, err := s.m.auth.CheckPassword(ctx, r.Name, r.Password)
		if err != nil {
			if ctx.Err() != nil {
				return nil, toGRPCError(ctx.Err())
			}
			s.m.lg.Warn("invalid authentication was requested", zap.String("user", r.Name), zap.Error(err))
			return nil, err
		}
		prefix, err := s.m.auth.TokenPrefix()
		if err != nil {
			return nil, err
		}
		resp, err := proposeFor[*pb.AuthenticateResponse](ctx, s.m, &pb.InternalRaftRequest{
			Authenticate: &pb.InternalAuthenticateRequest{Name: r.Name, SimpleToken: prefix},
		})
		if err != nil {
			return nil, err
		}
		if checked == s.m.auth.Revision() {
			return resp, nil
		}
		s.m.lg.Info("revision when password checked became stale; retrying")
	}
}

// hashPassword replaces the clear password of a user request by its bcrypt hash before the
// request enters the raft log.
func (m *Member) hashPassword(password string) (string, error) {
	h, err := m.auth.HashPassword(password)
	if err != nil {
		return "", status.Error(codes.Unknown, err.Error())
	}
	return base64.StdEncoding.EncodeToString(h), nil
}

func (s *authServer) UserAdd(ctx context.Context, r *pb.AuthUserAddRequest) (*pb.AuthUserAddResponse, error) {
	req := &pb.AuthUserAddRequest{Name: r.Name, Options: r.Options, HashedPassword: r.HashedPassword}
	if !r.Options.GetNoPassword() {
		h, err := s.m.hashPassword(r.Password)
		if err != nil {
			return nil, err
		}
		req.HashedPassword = h
	}
	return proposeFor[*pb.AuthUserAddResponse](ctx, s.m, &pb.InternalRaftRequest{AuthUserAdd: req})
}

func (s *authServer) UserChangePassword(ctx context.Context, r *pb.AuthUserChangePasswordRequest) (*pb.AuthUserChangePasswordResponse, error) {
	req := &pb.AuthUserChangePasswordRequest{Name: r.Name, HashedPassword: r.HashedPassword}
	if r.Password != "" {
		h, err := s.m.hashPassword(r.Password)
		if err != nil {
			return nil, err
		}
		req.HashedPassword = h
	}
	return proposeFor[*pb.AuthUserChangePasswordResponse](ctx, s.m, &pb.InternalRaftRequest{AuthUserChangePassword: req})
}

func (s *authServer) UserGet(ctx context.Context, r *pb.AuthUserGetRequest) (*pb.AuthUserGetResponse, error) {
	return proposeFor[*pb.AuthUserGetResponse](ctx, s.m, &pb.InternalRaftRequest{AuthUserGet: r})
}

func (s *authServer) UserList(ctx context.Context, r *pb.AuthUserListRequest) (*pb.AuthUserListResponse, error) {
	return proposeFor[*pb.AuthUserListResponse](ctx, s.m, &pb.InternalRaftRequest{AuthUserList: r})
}

func (s *authServer) UserDelete(ctx context.Context, r *pb.AuthUserDeleteRequest) (*pb.AuthUserDeleteResponse, error) {
	return proposeFor[*pb.AuthUserDeleteResponse](ctx, s.m, &pb.InternalRaftRequest{AuthUserDelete: r})
}

func (s *authServer) UserGrantRole(ctx context.Context, r *pb.AuthUserGrantRoleRequest) (*pb.AuthUserGrantRoleResponse, error) {
	return proposeFor[*pb.AuthUserGrantRoleResponse](ctx, s.m, &pb.InternalRaftRequest{AuthUserGrantRole: r})
}

func (s *authServer) UserRevokeRole(ctx context.Context, r *pb.AuthUserRevokeRoleRequest) (*pb.AuthUserRevokeRoleResponse, error) {
	return proposeFor[*pb.AuthUserRevokeRoleResponse](ctx, s.m, &pb.InternalRaftRequest{AuthUserRevokeRole: r})
}

func (s *authServer) RoleAdd(ctx context.Context, r *pb.AuthRoleAddRequest) (*pb.AuthRoleAddResponse, error) {
	return proposeFor[*pb.AuthRoleAddResponse](ctx, s.m, &pb.InternalRaftRequest{AuthRoleAdd: r})
}

func (s *authServer) RoleGet(ctx context.Context, r *pb.AuthRoleGetRequest) (*pb.AuthRoleGetResponse, error) {
	return proposeFor[*pb.AuthRoleGetResponse](ctx, s.m, &pb.InternalRaftRequest{AuthRoleGet: r})
}

func (s *authServer) RoleList(ctx context.Context, r *pb.AuthRoleListRequest) (*pb.AuthRoleListResponse, error) {
	return proposeFor[*pb.AuthRoleListResponse](ctx, s.m, &pb.InternalRaftRequest{AuthRoleList: r})
}

func (s *authServer) RoleDelete(ctx context.Context, r *pb.AuthRoleDeleteRequest) (*pb.AuthRoleDeleteResponse, error) {
	return proposeFor[*pb.AuthRoleDeleteResponse](ctx, s.m, &pb.InternalRaftRequest{AuthRoleDelete: r})
}

func (s *authServer) RoleGrantPermission(ctx context.Context, r *pb.AuthRoleGrantPermissionRequest) (*pb.AuthRoleGrantPermissionResponse, error) {
	return proposeFor[*pb.AuthRoleGrantPermissionResponse](ctx, s.m, &pb.InternalRaftRequest{AuthRoleGrantPermission: r})
}

func (s *authServer) RoleRevokePermission(ctx context.Context, r *pb.AuthRoleRevokePermissionRequest) (*pb.AuthRoleRevokePermissionResponse, error) {
	return proposeFor[*pb.AuthRoleRevokePermissionResponse](ctx, s.m, &pb.InternalRaftRequest{AuthRoleRevokePermission: r})
}
