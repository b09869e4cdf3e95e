package auth

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"sort"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.uber.org/zap"
	"golang.org/x/crypto/bcrypt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// errNoPasswordUser is etcd's answer when a password is checked or set for a user created
// without one (etcd has no gRPC code of its own for it and sends it as Unknown).
var errNoPasswordUser = status.Error(codes.Unknown, "auth: authentication failed, password was given for no password user")

// The Apply* methods apply one auth request of a committed raft entry: they write the change
// to b (the entry's batch, committed with the applied index) and publish the new state. They
// return etcd's errors for requests that cannot be applied; those change nothing.

// ApplyAuthEnable turns authentication on; the root user must exist and have the root role.
// Enabling it again changes nothing.
func (s *Store) ApplyAuthEnable(b *pebble.Batch) error {
	v := s.view.Load()
	if v.enabled {
		s.lg.Info("authentication is already enabled; ignored auth enable request")
		return nil
	}
	u, ok := v.users[RootUser]
	if !ok {
		return rpctypes.ErrGRPCRootUserNotExist
	}
	if !hasRole(u, RootRole) {
		return rpctypes.ErrGRPCRootRoleNotExist
	}
	nv := v.clone()
	nv.perms = v.perms
	nv.enabled = true
	if err := b.Set(keyEnabled, []byte{1}, nil); err != nil {
		return fmt.Errorf("auth: enable: %w", err)
	}
	s.view.Store(nv)
	s.tokens.enable()
	s.lg.Info("enabled authentication")
	return nil
}

// ApplyAuthDisable turns authentication off and drops every simple token.
func (s *Store) ApplyAuthDisable(b *pebble.Batch) error {
	v := s.view.Load()
	if !v.enabled {
		return nil
	}
	nv := v.clone()
	nv.perms = v.perms
	nv.enabled = false
	if err := b.Set(keyEnabled, []byte{0}, nil); err != nil {
		return fmt.Errorf("auth: disable: %w", err)
	}
	if err := s.commit(b, nv, false); err != nil {
		return err
	}
	s.tokens.disable()
	s.lg.Info("disabled authentication")
	return nil
}

// Status answers AuthStatus.
func (s *Store) Status() *pb.AuthStatusResponse {
	v := s.view.Load()
	return &pb.AuthStatusResponse{Enabled: v.enabled, AuthRevision: v.revision}
}

// ApplyAuthenticate gives user name a token, once the member that received the Authenticate
// request checked its password. index is the raft index of the entry, which a simple token
// names.
func (s *Store) ApplyAuthenticate(r *pb.InternalAuthenticateRequest, index uint64) (*pb.AuthenticateResponse, error) {
	v := s.view.Load()
	if !v.enabled {
		return nil, rpctypes.ErrGRPCAuthNotEnabled
	}
	u, ok := v.users[r.Name]
	if !ok || u.Options.GetNoPassword() {
		return nil, rpctypes.ErrGRPCAuthFailed
	}
	token, err := s.tokens.assign(r.Name, v.revision, r.SimpleToken, index)
	if err != nil {
		return nil, err
	}
	if ce := s.lg.Check(zap.DebugLevel, "authenticated a user"); ce != nil {
		ce.Write(zap.String("user-name", r.Name), zap.String("token-fingerprint", redactToken(token)))
	}
	return &pb.AuthenticateResponse{Token: token}, nil
}

// password decodes the hashed password of a user request. An entry with a password but no hash
// (written by a version that hashed passwords when applying) is hashed here.
func (s *Store) password(clear, hashed string) ([]byte, error) {
	if clear != "" && hashed == "" {
		return bcrypt.GenerateFromPassword([]byte(clear), s.bcryptCost)
	}
	return base64.StdEncoding.DecodeString(hashed)
}

// ApplyUserAdd adds a user.
func (s *Store) ApplyUserAdd(b *pebble.Batch, r *pb.AuthUserAddRequest) (*pb.AuthUserAddResponse, error) {
	if r.Name == "" {
		return nil, rpctypes.ErrGRPCUserEmpty
	}
	v := s.view.Load()
	if _, ok := v.users[r.Name]; ok {
		return nil, rpctypes.ErrGRPCUserAlreadyExist
	}
	opts := r.Options
	if opts == nil {
		opts = &authpb.UserAddOptions{}
	}
	var pw []byte
	if !opts.NoPassword {
		var err error
		if pw, err = s.password(r.Password, r.HashedPassword); err != nil {
			return nil, errNoPasswordUser
		}
	}
	nv := v.clone()
	nv.users[r.Name] = &authpb.User{Name: []byte(r.Name), Password: pw, Options: opts}
	if err := s.putUser(b, nv.users[r.Name]); err != nil {
		return nil, err
	}
	if err := s.commit(b, nv, true); err != nil {
		return nil, err
	}
	s.lg.Info("added a user", zap.String("user-name", r.Name))
	return &pb.AuthUserAddResponse{}, nil
}

// ApplyUserDelete deletes a user; root cannot be deleted while authentication is on.
func (s *Store) ApplyUserDelete(b *pebble.Batch, r *pb.AuthUserDeleteRequest) (*pb.AuthUserDeleteResponse, error) {
	v := s.view.Load()
	if v.enabled && r.Name == RootUser {
		s.lg.Error("cannot delete 'root' user", zap.String("user-name", r.Name))
		return nil, rpctypes.ErrGRPCInvalidAuthMgmt
	}
	u, ok := v.users[r.Name]
	if !ok {
		return nil, rpctypes.ErrGRPCUserNotFound
	}
	nv := v.clone()
	delete(nv.users, r.Name)
	if err := b.Delete(userKey(r.Name), nil); err != nil {
		return nil, fmt.Errorf("auth: delete user: %w", err)
	}
	if err := s.commit(b, nv, true); err != nil {
		return nil, err
	}
	s.tokens.invalidateUser(r.Name)
	s.lg.Info("deleted a user", zap.String("user-name", r.Name), zap.Strings("user-roles", u.Roles))
	return &pb.AuthUserDeleteResponse{}, nil
}

// ApplyUserChangePassword replaces a user's password and drops its simple tokens.
func (s *Store) ApplyUserChangePassword(b *pebble.Batch, r *pb.AuthUserChangePasswordRequest) (*pb.AuthUserChangePasswordResponse, error) {
	v := s.view.Load()
	u, ok := v.users[r.Name]
	if !ok {
		return nil, rpctypes.ErrGRPCUserNotFound
	}
	var pw []byte
	if !u.Options.GetNoPassword() {
		var err error
		if pw, err = s.password(r.Password, r.HashedPassword); err != nil {
			return nil, errNoPasswordUser
		}
	}
	nv := v.clone()
	nu := &authpb.User{Name: []byte(r.Name), Roles: u.Roles, Password: pw, Options: u.Options}
	nv.users[r.Name] = nu
	if err := s.putUser(b, nu); err != nil {
		return nil, err
	}
	if err := s.commit(b, nv, true); err != nil {
		return nil, err
	}
	s.tokens.invalidateUser(r.Name)
	s.lg.Info("changed a password of a user", zap.String("user-name", r.Name), zap.Strings("user-roles", u.Roles))
	return &pb.AuthUserChangePasswordResponse{}, nil
}

// ApplyUserGrantRole grants a role (which must exist, root aside) to a user. Granting a role
// the user has changes nothing.
func (s *Store) ApplyUserGrantRole(b *pebble.Batch, r *pb.AuthUserGrantRoleRequest) (*pb.AuthUserGrantRoleResponse, error) {
	v := s.view.Load()
	u, ok := v.users[r.User]
	if !ok {
		return nil, rpctypes.ErrGRPCUserNotFound
	}
	if r.Role != RootRole {
		if _, ok := v.roles[r.Role]; !ok {
			return nil, rpctypes.ErrGRPCRoleNotFound
		}
	}
	if hasRole(u, r.Role) {
		s.lg.Warn("ignored grant role request to a user", zap.String("user-name", r.User),
			zap.Strings("user-roles", u.Roles), zap.String("duplicate-role-name", r.Role))
		return &pb.AuthUserGrantRoleResponse{}, nil
	}
	nu := proto.Clone(u).(*authpb.User)
	nu.Roles = append(nu.Roles, r.Role)
	sort.Strings(nu.Roles)
	nv := v.clone()
	nv.users[r.User] = nu
	if err := s.putUser(b, nu); err != nil {
		return nil, err
	}
	if err := s.commit(b, nv, true); err != nil {
		return nil, err
	}
	s.lg.Info("granted a role to a user", zap.String("user-name", r.User),
		zap.Strings("user-roles", nu.Roles), zap.String("added-role-name", r.Role))
	return &pb.AuthUserGrantRoleResponse{}, nil
}

// UserGet answers AuthUserGet: the user's roles.
func (s *Store) UserGet(r *pb.AuthUserGetRequest) (*pb.AuthUserGetResponse, error) {
	u, ok := s.view.Load().users[r.Name]
	if !ok {
		return nil, rpctypes.ErrGRPCUserNotFound
	}
	return &pb.AuthUserGetResponse{Roles: slices.Clone(u.Roles)}, nil
}

// UserList answers AuthUserList: every user name, in order.
func (s *Store) UserList() *pb.AuthUserListResponse {
	return &pb.AuthUserListResponse{Users: s.Users()}
}

// ApplyUserRevokeRole revokes a role from a user; root keeps the root role while
// authentication is on.
func (s *Store) ApplyUserRevokeRole(b *pebble.Batch, r *pb.AuthUserRevokeRoleRequest) (*pb.AuthUserRevokeRoleResponse, error) {
	v := s.view.Load()
	if v.enabled && r.Name == RootUser && r.Role == RootRole {
		s.lg.Error("'root' user cannot revoke 'root' role", zap.String("user-name", r.Name), zap.String("role-name", r.Role))
		return nil, rpctypes.ErrGRPCInvalidAuthMgmt
	}
	u, ok := v.users[r.Name]
	if !ok {
		return nil, rpctypes.ErrGRPCUserNotFound
	}
	nu := &authpb.User{Name: u.Name, Password: u.Password, Options: u.Options}
	for _, role := range u.Roles {
		if role != r.Role {
			nu.Roles = append(nu.Roles, role)
		}
	}
	if len(nu.Roles) == len(u.Roles) {
		return nil, rpctypes.ErrGRPCRoleNotGranted
	}
	nv := v.clone()
	nv.users[r.Name] = nu
	if err := s.putUser(b, nu); err != nil {
		return nil, err
	}
	if err := s.commit(b, nv, true); err != nil {
		return nil, err
	}
	s.lg.Info("revoked a role from a user", zap.String("user-name", r.Name), zap.Strings("old-user-roles", u.Roles),
		zap.Strings("new-user-roles", nu.Roles), zap.String("revoked-role-name", r.Role))
	return &pb.AuthUserRevokeRoleResponse{}, nil
}

// RoleGet answers AuthRoleGet: the role's permissions (for root, every key).
func (s *Store) RoleGet(r *pb.AuthRoleGetRequest) (*pb.AuthRoleGetResponse, error) {
	role, ok := s.view.Load().roles[r.Role]
	if !ok {
		return nil, rpctypes.ErrGRPCRoleNotFound
	}
	if r.Role == RootRole {
		return &pb.AuthRoleGetResponse{Perm: []*authpb.Permission{proto.Clone(rootPerm).(*authpb.Permission)}}, nil
	}
	resp := &pb.AuthRoleGetResponse{}
	for _, p := range role.KeyPermission {
		resp.Perm = append(resp.Perm, proto.Clone(p).(*authpb.Permission))
	}
	return resp, nil
}

// RoleList answers AuthRoleList: every role name, in order.
func (s *Store) RoleList() *pb.AuthRoleListResponse {
	return &pb.AuthRoleListResponse{Roles: slices.Sorted(maps.Keys(s.view.Load().roles))}
}

// ApplyRoleAdd adds a role with no permissions.
func (s *Store) ApplyRoleAdd(b *pebble.Batch, r *pb.AuthRoleAddRequest) (*pb.AuthRoleAddResponse, error) {
	if r.Name == "" {
		return nil, rpctypes.ErrGRPCRoleEmpty
	}
	v := s.view.Load()
	if _, ok := v.roles[r.Name]; ok {
		return nil, rpctypes.ErrGRPCRoleAlreadyExist
	}
	nv := v.clone()
	nv.roles[r.Name] = &authpb.Role{Name: []byte(r.Name)}
	if err := s.putRole(b, nv.roles[r.Name]); err != nil {
		return nil, err
	}
	if err := s.commit(b, nv, true); err != nil {
		return nil, err
	}
	s.lg.Info("created a role", zap.String("role-name", r.Name))
	return &pb.AuthRoleAddResponse{}, nil
}

// ApplyRoleDelete deletes a role and revokes it from every user; the root role cannot be
// deleted while authentication is on.
func (s *Store) ApplyRoleDelete(b *pebble.Batch, r *pb.AuthRoleDeleteRequest) (*pb.AuthRoleDeleteResponse, error) {
	v := s.view.Load()
	if v.enabled && r.Role == RootRole {
		s.lg.Error("cannot delete 'root' role", zap.String("role-name", r.Role))
		return nil, rpctypes.ErrGRPCInvalidAuthMgmt
	}
	if _, ok := v.roles[r.Role]; !ok {
		return nil, rpctypes.ErrGRPCRoleNotFound
	}
	nv := v.clone()
	delete(nv.roles, r.Role)
	if err := b.Delete(roleKey(r.Role), nil); err != nil {
		return nil, fmt.Errorf("auth: delete role: %w", err)
	}
	for _, name := range slices.Sorted(maps.Keys(v.users)) {
		u := v.users[name]
		if !hasRole(u, r.Role) {
			continue
		}
		nu := &authpb.User{Name: u.Name, Password: u.Password, Options: u.Options}
		for _, role := range u.Roles {
			if role != r.Role {
				nu.Roles = append(nu.Roles, role)
			}
		}
		nv.users[name] = nu
		if err := s.putUser(b, nu); err != nil {
			return nil, err
		}
	}
	if err := s.commit(b, nv, true); err != nil {
		return nil, err
	}
	s.lg.Info("deleted a role", zap.String("role-name", r.Role))
	return &pb.AuthRoleDeleteResponse{}, nil
}

// permSlice orders a role's permissions by key.
type permSlice []*authpb.Permission

func (p permSlice) Len() int           { return len(p) }
func (p permSlice) Less(i, j int) bool { return bytes.Compare(p[i].Key, p[j].Key) < 0 }
func (p permSlice) Swap(i, j int)      { p[i], p[j] = p[j], p[i] }

// ApplyRoleGrantPermission grants a permission on a key or range to a role, or changes the
// type of the permission the role has on exactly that key and range.
func (s *Store) ApplyRoleGrantPermission(b *pebble.Batch, r *pb.AuthRoleGrantPermissionRequest) (*pb.AuthRoleGrantPermissionResponse, error) {
	if r.Perm == nil {
		return nil, rpctypes.ErrGRPCPermissionNotGiven
	}
	if !validPermRange(r.Perm.Key, r.Perm.RangeEnd) {
		return nil, rpctypes.ErrGRPCInvalidAuthMgmt
	}
	v := s.view.Load()
	role, ok := v.roles[r.Name]
	if !ok {
		return nil, rpctypes.ErrGRPCRoleNotFound
	}
	nr := proto.Clone(role).(*authpb.Role)
	idx := sort.Search(len(nr.KeyPermission), func(i int) bool {
		return bytes.Compare(nr.KeyPermission[i].Key, r.Perm.Key) >= 0
	})
	if idx < len(nr.KeyPermission) && bytes.Equal(nr.KeyPermission[idx].Key, r.Perm.Key) &&
		bytes.Equal(nr.KeyPermission[idx].RangeEnd, r.Perm.RangeEnd) {
		nr.KeyPermission[idx].PermType = r.Perm.PermType
	} else {
		nr.KeyPermission = append(nr.KeyPermission, &authpb.Permission{
			Key: r.Perm.Key, RangeEnd: r.Perm.RangeEnd, PermType: r.Perm.PermType,
		})
		sort.Sort(permSlice(nr.KeyPermission))
	}
	nv := v.clone()
	nv.roles[r.Name] = nr
	if err := s.putRole(b, nr); err != nil {
		return nil, err
	}
	if err := s.commit(b, nv, true); err != nil {
		return nil, err
	}
	s.lg.Info("granted/updated a permission to a role", zap.String("role-name", r.Name),
		zap.String("permission-name", r.Perm.PermType.String()),
		zap.ByteString("key", r.Perm.Key), zap.ByteString("range-end", r.Perm.RangeEnd))
	return &pb.AuthRoleGrantPermissionResponse{}, nil
}

// ApplyRoleRevokePermission revokes the permission a role has on exactly a key and range.
func (s *Store) ApplyRoleRevokePermission(b *pebble.Batch, r *pb.AuthRoleRevokePermissionRequest) (*pb.AuthRoleRevokePermissionResponse, error) {
	v := s.view.Load()
	role, ok := v.roles[r.Role]
	if !ok {
		return nil, rpctypes.ErrGRPCRoleNotFound
	}
	nr := &authpb.Role{Name: role.Name}
	for _, p := range role.KeyPermission {
		if !bytes.Equal(p.Key, r.Key) || !bytes.Equal(p.RangeEnd, r.RangeEnd) {
			nr.KeyPermission = append(nr.KeyPermission, p)
		}
	}
	if len(nr.KeyPermission) == len(role.KeyPermission) {
		return nil, rpctypes.ErrGRPCPermissionNotGranted
	}
	nv := v.clone()
	nv.roles[r.Role] = nr
	if err := s.putRole(b, nr); err != nil {
		return nil, err
	}
	if err := s.commit(b, nv, true); err != nil {
		return nil, err
	}
	s.lg.Info("revoked a permission on range", zap.String("role-name", r.Role),
		zap.String("key", string(r.Key)), zap.String("range-end", string(r.RangeEnd)))
	return &pb.AuthRoleRevokePermissionResponse{}, nil
}

func (s *Store) putUser(b *pebble.Batch, u *authpb.User) error {
	data, err := proto.Marshal(u)
	if err != nil {
		return fmt.Errorf("auth: marshal user: %w", err)
	}
	if err := b.Set(userKey(string(u.Name)), data, nil); err != nil {
		return fmt.Errorf("auth: write user: %w", err)
	}
	return nil
}

func (s *Store) putRole(b *pebble.Batch, r *authpb.Role) error {
	data, err := proto.Marshal(r)
	if err != nil {
		return fmt.Errorf("auth: marshal role: %w", err)
	}
	if err := b.Set(roleKey(string(r.Name)), data, nil); err != nil {
		return fmt.Errorf("auth: write role: %w", err)
	}
	return nil
}

// commit bumps nv's revision, writes it to b and publishes nv, with freshly merged permissions
// when remerge is set (else nv must carry them already).
func (s *Store) commit(b *pebble.Batch, nv *view, remerge bool) error {
	nv.revision++
	var rev [8]byte
	binary.BigEndian.PutUint64(rev[:], nv.revision)
	if err := b.Set(keyRevision, rev[:], nil); err != nil {
		return fmt.Errorf("auth: write revision: %w", err)
	}
	if remerge {
		nv.remerge()
	}
	s.view.Store(nv)
	return nil
}

// hasRole reports whether u has role (u.Roles is kept sorted).
func hasRole(u *authpb.User, role string) bool {
	i := sort.SearchStrings(u.Roles, role)
	return i < len(u.Roles) && u.Roles[i] == role
}
