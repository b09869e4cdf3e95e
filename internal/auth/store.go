package auth

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/etcd/api/v3/authpb"
	"go.uber.org/zap"
	"golang.org/x/crypto/bcrypt"
	"google.golang.org/protobuf/proto"

	"github.com/ordo-db/ordo/internal/storage"
)

// The root user and role: a user with the root role may do anything, and auth can only be
// enabled once the root user exists and has it.
const (
	RootUser = "root"
	RootRole = "root"
)

// Keys of the auth state, all under storage.PrefixAuth.
var (
	keyEnabled  = []byte{storage.PrefixAuth, 'E'}
	keyRevision = []byte{storage.PrefixAuth, 'V'}
	userPfx     = []byte{storage.PrefixAuth, 'u'}
	rolePfx     = []byte{storage.PrefixAuth, 'r'}
)

func userKey(name string) []byte { return append(slices.Clone(userPfx), name...) }
func roleKey(name string) []byte { return append(slices.Clone(rolePfx), name...) }

// rootPerm is what RoleGet shows for the root role: read and write on every key.
var rootPerm = &authpb.Permission{PermType: authpb.Permission_READWRITE, Key: []byte{}, RangeEnd: []byte{0}}

// Config configures a Store.
type Config struct {
	// DB holds the persisted auth state. Required.
	DB *pebble.DB
	// Logger defaults to a no-op logger.
	Logger *zap.Logger
	// BcryptCost is the cost of password hashes (--bcrypt-cost); out of bcrypt's bounds means
	// bcrypt.DefaultCost.
	BcryptCost int
	// TokenOptions is --auth-token: "simple", or "jwt,pub-key=...,priv-key=...,sign-method=...,ttl=...".
	TokenOptions string
	// TokenTTL is how long a simple token lives after its last use (--auth-token-ttl);
	// 0 means 300 s.
	TokenTTL time.Duration
	// WaitApplied waits until the member applied the raft entry at index: a simple token names
	// the entry that created it, and a member checks it only once it applied that entry.
	WaitApplied func(ctx context.Context, index uint64) error
	// ClientCertAuth (--client-cert-auth) makes the common name of a verified client
	// certificate the user of a request that carries no token.
	ClientCertAuth bool
}

// Store is a member's auth state. The Apply* methods are called by the apply loop only, one at
// a time; every other method is safe for concurrent use.
type Store struct {
	lg             *zap.Logger
	db             *pebble.DB
	bcryptCost     int
	tokens         tokenProvider
	clientCertAuth bool
	guard          *guessGuard

	// view is the current state; Apply* methods replace it, never change it in place.
	view atomic.Pointer[view]
}

// view is one immutable version of the auth state.
type view struct {
	enabled  bool
	revision uint64
	users    map[string]*authpb.User
	roles    map[string]*authpb.Role
	perms    map[string]*userPerms // the merged permissions of each user's roles
}

// clone copies the maps (not the users and roles, which are never changed in place).
func (v *view) clone() *view {
	return &view{enabled: v.enabled, revision: v.revision, users: maps.Clone(v.users), roles: maps.Clone(v.roles)}
}

// remerge recomputes every user's merged permissions.
func (v *view) remerge() {
	v.perms = make(map[string]*userPerms, len(v.users))
	for name, u := range v.users {
		v.perms[name] = mergePerms(u, v.roles)
	}
}

// Open loads the auth state from cfg.DB.
func Open(cfg Config) (*Store, error) {
	if cfg.DB == nil {
		return nil, errors.New("auth: config: DB is required")
	}
	lg := cfg.Logger
	if lg == nil {
		lg = zap.NewNop()
	}
	cost := cfg.BcryptCost
	if cost < bcrypt.MinCost || cost > bcrypt.MaxCost {
		cost = bcrypt.DefaultCost
	}
	tokens, err := newTokenProvider(lg, cfg.TokenOptions, cfg.TokenTTL, cfg.WaitApplied)
	if err != nil {
		return nil, err
	}
	s := &Store{lg: lg, db: cfg.DB, bcryptCost: cost, tokens: tokens, clientCertAuth: cfg.ClientCertAuth, guard: newGuessGuard()}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Reload reads the state again from the database, after a raft snapshot replaced it.
func (s *Store) Reload() error {
	v, err := load(s.db)
	if err != nil {
		return err
	}
	old := s.view.Swap(v)
	switch {
	case v.enabled && (old == nil || !old.enabled):
		s.tokens.enable()
	case !v.enabled && old != nil && old.enabled:
		s.tokens.disable()
	}
	return nil
}

func load(r pebble.Reader) (*view, error) {
	v := &view{users: map[string]*authpb.User{}, roles: map[string]*authpb.Role{}}
	b, err := get(r, keyEnabled)
	if err != nil {
		return nil, err
	}
	v.enabled = len(b) == 1 && b[0] == 1
	b, err = get(r, keyRevision)
	if err != nil {
		return nil, err
	}
	switch len(b) {
	case 0:
		// A new store starts at revision 1, so that a request authenticated at revision 0
		// (no user) is never mistaken for a current one.
		v.revision = 1
	case 8:
		v.revision = binary.BigEndian.Uint64(b)
	default:
		return nil, fmt.Errorf("%w: auth revision of %d bytes", storage.ErrCorrupt, len(b))
	}
	if err := scan(r, userPfx, func(name string, val []byte) error {
		u := &authpb.User{}
		if err := proto.Unmarshal(val, u); err != nil {
			return fmt.Errorf("%w: auth user %q: %v", storage.ErrCorrupt, name, err)
		}
		v.users[name] = u
		return nil
	}); err != nil {
		return nil, err
	}
	if err := scan(r, rolePfx, func(name string, val []byte) error {
		role := &authpb.Role{}
		if err := proto.Unmarshal(val, role); err != nil {
			return fmt.Errorf("%w: auth role %q: %v", storage.ErrCorrupt, name, err)
		}
		v.roles[name] = role
		return nil
	}); err != nil {
		return nil, err
	}
	v.remerge()
	return v, nil
}

func get(r pebble.Reader, key []byte) ([]byte, error) {
	val, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("auth: read %q: %w", key, err)
	}
	out := slices.Clone(val)
	if err := closer.Close(); err != nil {
		return nil, fmt.Errorf("auth: read %q: %w", key, err)
	}
	return out, nil
}

func scan(r pebble.Reader, pfx []byte, fn func(name string, val []byte) error) (err error) {
	upper := slices.Clone(pfx)
	upper[len(upper)-1]++
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: pfx, UpperBound: upper})
	if err != nil {
		return fmt.Errorf("auth: scan: %w", err)
	}
	defer func() {
		if cerr := it.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("auth: scan: %w", cerr)
		}
	}()
	for it.First(); it.Valid(); it.Next() {
		if err := fn(string(it.Key()[len(pfx):]), it.Value()); err != nil {
			return err
		}
	}
	return it.Error()
}

// Enabled reports whether authentication is on.
func (s *Store) Enabled() bool { return s.view.Load().enabled }

// Revision is the auth revision: it grows with every change of users, roles or permissions.
func (s *Store) Revision() uint64 { return s.view.Load().revision }

// BcryptCost is the cost passwords are hashed with.
func (s *Store) BcryptCost() int { return s.bcryptCost }

// HashPassword hashes a password for AuthUserAdd and AuthUserChangePassword, before the request
// is proposed, so that raft entries never carry a password in clear.
func (s *Store) HashPassword(password string) ([]byte, error) {
	return bcrypt.GenerateFromPassword([]byte(password), s.bcryptCost)
}

// Users lists the user names in order.
func (s *Store) Users() []string { return slices.Sorted(maps.Keys(s.view.Load().users)) }

// Close drops every simple token.
func (s *Store) Close() { s.tokens.disable() }

// TokenPrefix chooses the random part of a simple token for an Authenticate request ("" with
// JWTs); the member proposing the request chooses it, so that every member registers the same
// token.
func (s *Store) TokenPrefix() (string, error) { return s.tokens.genPrefix() }
