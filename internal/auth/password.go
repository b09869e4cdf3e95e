package auth

import (
	"context"
	"crypto/rand"
	"runtime"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.uber.org/zap"
	"golang.org/x/crypto/bcrypt"
)

// CheckPassword checks a user's password for Authenticate, before the request is proposed, and
// returns the auth revision it checked against (etcd proposes again when the revision moved
// meanwhile). Password guessing is slowed per user name (see guessGuard) without holding back
// other users or other requests.
func (s *Store) CheckPassword(ctx context.Context, name, password string) (uint64, error) {
	v := s.view.Load()
	if !v.enabled {
		return 0, rpctypes.ErrGRPCAuthNotEnabled
	}
	if err := s.guard.wait(ctx, name); err != nil {
		return 0, err
	}
	u, ok := v.users[name]
	if ok && u.Options.GetNoPassword() {
		return 0, errNoPasswordUser
	}
	hash := dummyHash
	if ok {
		hash = u.Password
	}
	if err := s.guard.compare(ctx, hash, password); err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		s.guard.failed(name)
		s.lg.Info("invalid password", zap.String("user-name", name))
		return 0, rpctypes.ErrGRPCAuthFailed
	}
	if !ok {
		// Unreachable: no password matches the dummy hash.
		return 0, rpctypes.ErrGRPCAuthFailed
	}
	s.guard.succeeded(name)
	return v.revision, nil
}

// dummyHash is compared against for unknown users, so that an unknown user name takes as long
// to refuse as a wrong password and a guesser cannot tell which names exist. No password
// matches it: it hashes 32 random bytes.
var dummyHash = func() []byte {
	secret := make([]byte, 32)
	_, _ = rand.Read(secret) // never fails (crypto/rand panics rather than return an error)
	h, err := bcrypt.GenerateFromPassword(secret, bcrypt.DefaultCost)
	if err != nil {
		panic("auth: dummy hash: " + err.Error()) // bcrypt fails only on bad cost or length
	}
	return h
}()

// Password-guessing slowdown: after n failed attempts in a row for one user name, the next
// attempt for that name waits guessDelay(n), and attempts for the name are spaced at least that
// far apart however many arrive at once. A success resets the count; so does guessForget of
// quiet time.
const (
	guessBaseDelay = 100 * time.Millisecond
	guessMaxDelay  = 2 * time.Second
	guessForget    = 10 * time.Minute
	guessMaxNames  = 10000
)

func guessDelay(n int) time.Duration {
	if n <= 0 {
		return 0
	}
	d := guessBaseDelay
	for i := 1; i < n && d < guessMaxDelay; i++ {
		d *= 2
	}
	return min(d, guessMaxDelay)
}

// guessGuard holds the failure counts of user names and bounds concurrent bcrypt comparisons
// (each costs tens of milliseconds of CPU) to half the processors, so that a flood of
// Authenticate requests leaves the member CPU for everything else.
type guessGuard struct {
	sem chan struct{}

	mu    sync.Mutex
	fails map[string]*guessState
}

type guessState struct {
	n    int       // failures in a row
	next time.Time // the earliest time of the next attempt
	last time.Time // the last failure
}

func newGuessGuard() *guessGuard {
	return &guessGuard{sem: make(chan struct{}, max(1, runtime.GOMAXPROCS(0)/2)), fails: map[string]*guessState{}}
}

// wait holds an attempt for name back until its turn.
func (g *guessGuard) wait(ctx context.Context, name string) error {
	g.mu.Lock()
	st, ok := g.fails[name]
	if !ok {
		g.mu.Unlock()
		return nil
	}
	now := time.Now()
	at := later(st.next, now)
	st.next = at.Add(guessDelay(st.n))
	g.mu.Unlock()
	if !at.After(now) {
		return nil
	}
	t := time.NewTimer(at.Sub(now))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *guessGuard) compare(ctx context.Context, hash []byte, password string) error {
	select {
	case g.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-g.sem }()
	return bcrypt.CompareHashAndPassword(hash, []byte(password))
}

func (g *guessGuard) failed(name string) {
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	st, ok := g.fails[name]
	if !ok {
		if len(g.fails) >= guessMaxNames {
			g.forgetLocked(now)
		}
		st = &guessState{}
		g.fails[name] = st
	}
	st.n++
	st.last = now
	st.next = later(st.next, now.Add(guessDelay(st.n)))
}

func (g *guessGuard) succeeded(name string) {
	g.mu.Lock()
	delete(g.fails, name)
	g.mu.Unlock()
}

// forgetLocked drops names quiet for guessForget, and if that is not enough, any names, to
// keep the table bounded.
func (g *guessGuard) forgetLocked(now time.Time) {
	for name, st := range g.fails {
		if now.Sub(st.last) > guessForget {
			delete(g.fails, name)
		}
	}
	for name := range g.fails {
		if len(g.fails) < guessMaxNames/2 {
			break
		}
		delete(g.fails, name)
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
