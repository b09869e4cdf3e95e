package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
)

// tokenProvider issues and checks the tokens of authenticated users.
type tokenProvider interface {
	// info returns who token stands for; rev is the current auth revision.
	info(ctx context.Context, token string, rev uint64) (*Info, bool)
	// assign issues a token for user at auth revision rev, in the Authenticate entry at index
	// whose proposer chose prefix.
	assign(user string, rev uint64, prefix string, index uint64) (string, error)
	// genPrefix chooses the random part of a simple token ("" for JWTs).
	genPrefix() (string, error)
	enable()
	disable()
	invalidateUser(user string)
}

// Token types of --auth-token.
const (
	TokenSimple = "simple"
	TokenJWT    = "jwt"
)

// ErrInvalidAuthOpts is etcd's error for a malformed --auth-token.
var ErrInvalidAuthOpts = errors.New("auth: invalid auth options")

// ParseTokenOptions splits --auth-token into its type and its options ("jwt,ttl=5m,..." gives
// "jwt" and {"ttl": "5m"}), refusing an option without a value or given twice.
func ParseTokenOptions(s string) (string, map[string]string, error) {
	parts := strings.Split(s, ",")
	opts := map[string]string{}
	for _, p := range parts[1:] {
		kv := strings.Split(p, "=")
		if len(kv) != 2 {
			return "", nil, fmt.Errorf("%w: option %q is not key=value", ErrInvalidAuthOpts, p)
		}
		if _, dup := opts[kv[0]]; dup {
			return "", nil, fmt.Errorf("%w: option %q given twice", ErrInvalidAuthOpts, kv[0])
		}
		opts[kv[0]] = kv[1]
	}
	return parts[0], opts, nil
}

// CheckTokenOptions validates --auth-token as the member will use it, reading any JWT key
// files, so that a bad setting stops the member at startup.
func CheckTokenOptions(s string) error {
	_, err := newTokenProvider(zap.NewNop(), s, 0, nil)
	return err
}

func newTokenProvider(lg *zap.Logger, s string, ttl time.Duration, waitApplied func(context.Context, uint64) error) (tokenProvider, error) {
	typ, opts, err := ParseTokenOptions(s)
	if err != nil {
		return nil, err
	}
	switch typ {
	case TokenSimple, "":
		if ttl <= 0 {
			ttl = 300 * time.Second
		}
		return &simpleTokens{lg: lg, ttl: ttl, waitApplied: waitApplied, tokens: map[string]simpleToken{}}, nil
	case TokenJWT:
		return newJWTTokens(lg, opts)
	default:
		return nil, fmt.Errorf("%w: unknown token type %q (supported: simple, jwt)", ErrInvalidAuthOpts, typ)
	}
}

// redactToken is how logs name a token: the start of its SHA-256.
func redactToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])[:12]
}

// simpleTokens are random strings held in memory by every member: the Authenticate entry
// registers the token on each member as it applies it. A token expires after ttl without use.
type simpleTokens struct {
	lg          *zap.Logger
	ttl         time.Duration
	waitApplied func(context.Context, uint64) error

	mu      sync.Mutex
	enabled bool
	tokens  map[string]simpleToken
	assigns int // assignments since the last sweep of expired tokens
}

type simpleToken struct {
	user    string
	expires time.Time
}

const (
	simpleTokenLetters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	simpleTokenLength  = 16
)

func (t *simpleTokens) genPrefix() (string, error) {
	b := make([]byte, simpleTokenLength)
	n := big.NewInt(int64(len(simpleTokenLetters)))
	for i := range b {
		x, err := rand.Int(rand.Reader, n)
		if err != nil {
			return "", fmt.Errorf("auth: token prefix: %w", err)
		}
		b[i] = simpleTokenLetters[x.Int64()]
	}
	return string(b), nil
}

func (t *simpleTokens) assign(user string, _ uint64, prefix string, index uint64) (string, error) {
	token := prefix + "." + strconv.FormatUint(index, 10)
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.enabled {
		return token, nil
	}
	t.tokens[token] = simpleToken{user: user, expires: now.Add(t.ttl)}
	if t.assigns++; t.assigns >= 1024 || len(t.tokens) > 4*t.assigns+1024 {
		t.sweepLocked(now)
	}
	return token, nil
}

func (t *simpleTokens) sweepLocked(now time.Time) {
	t.assigns = 0
	for tok, st := range t.tokens {
		if now.After(st.expires) {
			delete(t.tokens, tok)
		}
	}
}

func (t *simpleTokens) info(ctx context.Context, token string, rev uint64) (*Info, bool) {
	prefix, idx, ok := strings.Cut(token, ".")
	if !ok || prefix == "" || strings.Contains(idx, ".") {
		return nil, false
	}
	index, err := strconv.ParseUint(idx, 10, 64)
	if err != nil {
		return nil, false
	}
	// A token made by an entry this member has not applied yet is valid once it has.
	if t.waitApplied != nil {
		if err := t.waitApplied(ctx, index); err != nil {
			return nil, false
		}
	}
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	st, ok := t.tokens[token]
	if !ok {
		return nil, false
	}
	if now.After(st.expires) {
		delete(t.tokens, token)
		return nil, false
	}
	st.expires = now.Add(t.ttl)
	t.tokens[token] = st
	return &Info{Username: st.user, Revision: rev}, true
}

func (t *simpleTokens) enable() {
	t.mu.Lock()
	t.enabled = true
	t.mu.Unlock()
}

func (t *simpleTokens) disable() {
	t.mu.Lock()
	t.enabled = false
	t.tokens = map[string]simpleToken{}
	t.mu.Unlock()
}

func (t *simpleTokens) invalidateUser(user string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for tok, st := range t.tokens {
		if st.user == user {
			delete(t.tokens, tok)
		}
	}
}

// JWT options of --auth-token.
const (
	jwtSignMethod = "sign-method"
	jwtPubKey     = "pub-key"
	jwtPrivKey    = "priv-key"
	jwtTTL        = "ttl"
)

// jwtTokens are signed tokens carrying the user name and the auth revision; every member holding
// the key verifies them, so they need no replicated state. A member given only the public key
// verifies tokens but cannot issue them.
type jwtTokens struct {
	lg     *zap.Logger
	method jwt.SigningMethod
	key    any // the signing key, or the public key when verifyOnly
	verify any // the key that verifies signatures
	ttl    time.Duration
	// verifyOnly: no private key was given.
	verifyOnly bool
}

// errVerifyOnly is etcd's error when a member with only a public key is asked for a token.
var errVerifyOnly = errors.New("auth: token signing attempted with verify-only key")

func newJWTTokens(lg *zap.Logger, opts map[string]string) (*jwtTokens, error) {
	t := &jwtTokens{lg: lg, ttl: 5 * time.Minute}
	for k := range opts {
		switch k {
		case jwtSignMethod, jwtPubKey, jwtPrivKey, jwtTTL:
		default:
			lg.Warn("unknown JWT option", zap.String("key", k))
		}
	}
	if s := opts[jwtTTL]; s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			return nil, fmt.Errorf("%w: jwt ttl: %v", ErrInvalidAuthOpts, err)
		}
		t.ttl = d
	}
	t.method = jwt.GetSigningMethod(opts[jwtSignMethod])
	if t.method == nil {
		return nil, fmt.Errorf("auth: invalid auth signature method %q", opts[jwtSignMethod])
	}
	var pub, priv []byte
	var err error
	if f := opts[jwtPubKey]; f != "" {
		if pub, err = os.ReadFile(f); err != nil {
			return nil, fmt.Errorf("auth: jwt public key: %w", err)
		}
	}
	if f := opts[jwtPrivKey]; f != "" {
		if priv, err = os.ReadFile(f); err != nil {
			return nil, fmt.Errorf("auth: jwt private key: %w", err)
		}
	}
	if err := t.loadKeys(pub, priv); err != nil {
		return nil, err
	}
	return t, nil
}

var (
	errMissingKey  = errors.New("auth: missing key data")
	errKeyMismatch = errors.New("auth: public and private keys don't match")
)

// loadKeys parses the PEM keys for the signing method: HMAC takes the private key file as the
// shared secret; RSA, RSA-PSS, ECDSA and Ed25519 take a private key (signing and verifying), a
// public key (verifying only), or both, which must match.
func (t *jwtTokens) loadKeys(pub, priv []byte) (err error) {
	switch t.method.(type) {
	case *jwt.SigningMethodHMAC:
		if len(priv) == 0 {
			return errMissingKey
		}
		t.key, t.verify = priv, priv
		return nil
	case *jwt.SigningMethodRSA, *jwt.SigningMethodRSAPSS:
		t.key, t.verify, t.verifyOnly, err = pickKeys(priv, pub, jwt.ParseRSAPrivateKeyFromPEM, jwt.ParseRSAPublicKeyFromPEM,
			func(k *rsa.PrivateKey) *rsa.PublicKey { return &k.PublicKey })
	case *jwt.SigningMethodECDSA:
		t.key, t.verify, t.verifyOnly, err = pickKeys(priv, pub, jwt.ParseECPrivateKeyFromPEM, jwt.ParseECPublicKeyFromPEM,
			func(k *ecdsa.PrivateKey) *ecdsa.PublicKey { return &k.PublicKey })
	case *jwt.SigningMethodEd25519:
		t.key, t.verify, t.verifyOnly, err = pickKeys(priv, pub,
			func(b []byte) (ed25519.PrivateKey, error) {
				k, err := jwt.ParseEdPrivateKeyFromPEM(b)
				if err != nil {
					return nil, err
				}
				return k.(ed25519.PrivateKey), nil
			},
			func(b []byte) (ed25519.PublicKey, error) {
				k, err := jwt.ParseEdPublicKeyFromPEM(b)
				if err != nil {
					return nil, err
				}
				return k.(ed25519.PublicKey), nil
			},
			func(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) })
	default:
		return fmt.Errorf("auth: unsupported signing method: %T", t.method)
	}
	return err
}

// pickKeys parses an asymmetric key pair, either half of which may be missing, and returns the
// key to sign with (the public key when only it was given), the key to verify with, and whether
// the member can only verify.
func pickKeys[Priv any, Pub interface{ Equal(crypto.PublicKey) bool }](priv, pub []byte,
	parsePriv func([]byte) (Priv, error), parsePub func([]byte) (Pub, error), public func(Priv) Pub,
) (sign, verify any, verifyOnly bool, err error) {
	var pk Priv
	var pu Pub
	havePriv, havePub := len(priv) > 0, len(pub) > 0
	if havePriv {
		if pk, err = parsePriv(priv); err != nil {
			return nil, nil, false, fmt.Errorf("auth: jwt private key: %w", err)
		}
	}
	if havePub {
		if pu, err = parsePub(pub); err != nil {
			return nil, nil, false, fmt.Errorf("auth: jwt public key: %w", err)
		}
	}
	switch {
	case !havePriv && !havePub:
		return nil, nil, false, errMissingKey
	case !havePriv:
		return pu, pu, true, nil
	case havePub && !pu.Equal(public(pk)):
		return nil, nil, false, errKeyMismatch
	}
	return pk, public(pk), false, nil
}

func (t *jwtTokens) enable()               {}
func (t *jwtTokens) disable()              {}
func (t *jwtTokens) invalidateUser(string) {}

func (t *jwtTokens) genPrefix() (string, error) { return "", nil }

func (t *jwtTokens) assign(user string, rev uint64, _ string, _ uint64) (string, error) {
	if t.verifyOnly {
		return "", errVerifyOnly
	}
	tok := jwt.NewWithClaims(t.method, jwt.MapClaims{
		"username": user,
		"revision": rev,
		"exp":      time.Now().Add(t.ttl).Unix(),
	})
	signed, err := tok.SignedString(t.key)
	if err != nil {
		return "", fmt.Errorf("auth: sign token: %w", err)
	}
	return signed, nil
}

func (t *jwtTokens) info(_ context.Context, token string, _ uint64) (*Info, bool) {
	parsed, err := jwt.Parse(token, func(tk *jwt.Token) (any, error) {
		if tk.Method.Alg() != t.method.Alg() {
			return nil, errors.New("invalid signing method")
		}
		return t.verify, nil
	})
	if err != nil {
		t.lg.Warn("failed to parse a JWT token", zap.Error(err))
		return nil, false
	}
	claims, ok := parsed.Claims.(jwt.MapClaims)
	if !parsed.Valid || !ok {
		return nil, false
	}
	user, ok := claims["username"].(string)
	if !ok {
		return nil, false
	}
	rev, ok := claims["revision"].(float64)
	if !ok {
		return nil, false
	}
	return &Info{Username: user, Revision: uint64(rev)}, true
}
