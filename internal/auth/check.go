package auth

import (
	"context"
	"strings"

	"go.etcd.io/etcd/api/v3/authpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.uber.org/zap"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// Info is who a request acts for: a user name and the auth revision its credentials were
// checked at. The zero Info (or nil) is no user.
type Info struct {
	Username string
	Revision uint64
}

// CheckRange is etcd's IsRangePermitted: may the user read key (end empty) or [key, end)?
func (s *Store) CheckRange(ai *Info, key, end []byte) error {
	return s.checkOp(ai, key, end, authpb.Permission_READ)
}

// CheckPut is etcd's IsPutPermitted: may the user write key?
func (s *Store) CheckPut(ai *Info, key []byte) error {
	return s.checkOp(ai, key, nil, authpb.Permission_WRITE)
}

// CheckDeleteRange is etcd's IsDeleteRangePermitted: may the user write key or [key, end)?
func (s *Store) CheckDeleteRange(ai *Info, key, end []byte) error {
	return s.checkOp(ai, key, end, authpb.Permission_WRITE)
}

func (s *Store) checkOp(ai *Info, key, end []byte, typ authpb.Permission_Type) error {
	v := s.view.Load()
	if !v.enabled {
		return nil
	}
	if ai == nil || ai.Revision == 0 {
		return rpctypes.ErrGRPCUserEmpty
	}
	if ai.Revision < v.revision {
		s.lg.Warn("request auth revision is less than current node auth revision",
			zap.Uint64("current node auth revision", v.revision),
			zap.Uint64("request auth revision", ai.Revision),
			zap.ByteString("request key", key))
		return rpctypes.ErrGRPCAuthOldRevision
	}
	u, ok := v.users[ai.Username]
	if !ok {
		s.lg.Error("cannot find a user for permission check", zap.String("user-name", ai.Username))
		return rpctypes.ErrGRPCPermissionDenied
	}
	if hasRole(u, RootRole) {
		return nil
	}
	if up, ok := v.perms[ai.Username]; ok && up.permits(typ, key, end) {
		return nil
	}
	return rpctypes.ErrGRPCPermissionDenied
}

// CheckAdmin is etcd's IsAdminPermitted: is the user root (has the root role)? Anyone is while
// authentication is off.
func (s *Store) CheckAdmin(ai *Info) error {
	v := s.view.Load()
	if !v.enabled {
		return nil
	}
	if ai == nil || ai.Username == "" {
		return rpctypes.ErrGRPCUserEmpty
	}
	u, ok := v.users[ai.Username]
	if !ok {
		return rpctypes.ErrGRPCUserNotFound
	}
	if !hasRole(u, RootRole) {
		return rpctypes.ErrGRPCPermissionDenied
	}
	return nil
}

// HasRole reports whether user exists and has role.
func (s *Store) HasRole(user, role string) bool {
	u, ok := s.view.Load().users[user]
	return ok && hasRole(u, role)
}

// RequireUser is what etcd asks of requests any user may make (Status, MemberList, lease
// requests): with authentication on, the request must carry valid credentials.
func (s *Store) RequireUser(ctx context.Context) error {
	if !s.Enabled() {
		return nil
	}
	ai, err := s.InfoFromContext(ctx)
	if err != nil {
		return err
	}
	if ai == nil {
		return rpctypes.ErrGRPCUserEmpty
	}
	return nil
}

// RequireAdmin is what etcd asks of the admin RPCs (Compact, Defragment, HashKV, MoveLeader,
// raising or clearing alarms, membership changes): valid credentials of a root user.
func (s *Store) RequireAdmin(ctx context.Context) error {
	ai, err := s.InfoFromContext(ctx)
	if err != nil {
		return err
	}
	return s.CheckAdmin(ai)
}

// Metadata keys a token may come in: gRPC clients send "token", the JSON gateway passes the
// HTTP Authorization header on as "authorization".
var (
	tokenKey         = rpctypes.TokenFieldNameGRPC
	authorizationKey = rpctypes.TokenFieldNameSwagger
)

// gatewayKey marks requests forwarded by the JSON gateway; the gateway's own client
// certificate must never stand for a user.
const gatewayKey = "grpcgateway-accept"

// InfoFromContext finds who a gRPC request acts for: nil with authentication off or without
// credentials; the token's user when the request carries a token (etcd's "invalid auth token"
// when it is not valid); else, with --client-cert-auth, the common name of the verified client
// certificate, unless the request came through the JSON gateway.
func (s *Store) InfoFromContext(ctx context.Context) (*Info, error) {
	v := s.view.Load()
	if !v.enabled {
		return nil, nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	ts, ok := md[tokenKey]
	if !ok {
		ts, ok = md[authorizationKey]
	}
	if ok && len(ts) > 0 {
		token := strings.TrimPrefix(ts[0], "Bearer ")
		ai, valid := s.tokens.info(ctx, token, s.Revision())
		if !valid {
			s.lg.Warn("invalid auth token", zap.String("token-fingerprint", redactToken(token)))
			return nil, rpctypes.ErrGRPCInvalidAuthToken
		}
		return ai, nil
	}
	if !s.clientCertAuth {
		return nil, nil
	}
	return s.infoFromTLS(ctx, md), nil
}

func (s *Store) infoFromTLS(ctx context.Context, md metadata.MD) *Info {
	p, ok := peer.FromContext(ctx)
	if !ok || p == nil {
		return nil
	}
	tlsInfo, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return nil
	}
	for _, chain := range tlsInfo.State.VerifiedChains {
		if len(chain) == 0 {
			continue
		}
		cn := chain[0].Subject.CommonName
		if _, gw := md[gatewayKey]; gw {
			s.lg.Warn("ignoring common name in gRPC-gateway proxy request", zap.String("common-name", cn))
			return nil
		}
		return &Info{Username: cn, Revision: s.Revision()}
	}
	return nil
}
