// Package lease keeps Ordo's leases: their TTLs, their deadlines on a replicated lease clock,
// and the keys attached to them.
//
// Deadlines survive leader changes because they are not measured on any member's clock. The
// leader proposes a clock tick every TickInterval carrying its estimate of the lease clock.
// Every member applies the same ticks, so every member holds the same clock value, and a grant
// or keep-alive sets
//
//	deadline = applied clock + TTL + TickInterval + tickSlack
//
// The leader's estimate is the applied clock as of the moment it started leading plus the time
// its own monotonic clock measured since (or the applied clock, if that is ahead): it is not
// re-anchored when one of its own ticks is applied, so the time a tick spends between the
// leader's estimate and its application is not lost, and the clock keeps wall-clock pace under
// any commit latency. The applied clock lags that estimate by at most one tick interval plus the
// commit time of a tick, which the added interval covers while ticks commit within tickSlack.
// Beyond that the leader does not depend on the margin: every member also notes, in memory,
// the time on its own monotonic clock TTL after it applied a grant or keep-alive, and the leader
// expires a lease only once that time has passed too, so a lease never expires before TTL
// after its last keep-alive was applied on the leader, whatever the commit latency and however
// the leader's estimate moved (it moves back when a member starts leading, and a follower's
// moves in steps with the ticks it applies).
//
// A new leader continues the clock from the last applied tick, counting from the moment it
// became leader, so the time between the old leader's last tick and the new leader's first
// one is not counted: across a leader change a lease lives at most that long (about one
// election) beyond its deadline, and is never reset to a full TTL.
//
// Keyspace (prefix 0x04): 'l' id(8) -> ttl(8) deadline(8); 'k' id(8) key -> "" for each
// attached key; 'c' -> the lease clock in milliseconds.
package lease

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/ordo-db/ordo/internal/storage"
)

// MaxTTL is etcd's largest lease TTL in seconds.
const MaxTTL = 9000000000

// TickInterval is how often the leader advances the lease clock.
const TickInterval = 250 * time.Millisecond

// tickSlack covers the time a tick takes from the leader's estimate to being applied.
const tickSlack = 50 * time.Millisecond

// Errors.
var (
	ErrNotFound = errors.New("lease: not found")
	ErrExists   = errors.New("lease: already exists")
)

var (
	keyClock  = []byte{storage.PrefixLease, 'c'}
	leasePfx  = []byte{storage.PrefixLease, 'l'}
	attachPfx = []byte{storage.PrefixLease, 'k'}
)

func leaseKey(id int64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), leasePfx...), uint64(id))
}

func attachPrefix(id int64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), attachPfx...), uint64(id))
}

// Lease is one lease's state.
type Lease struct {
	ID       int64
	TTL      int64 // granted TTL in seconds
	Deadline int64 // lease clock (ms) at which it expires

	// notBefore is the time on this member's monotonic clock TTL after it applied the grant
	// or last keep-alive: the lease does not expire earlier even if the applied clock lagged
	// the leader's estimate by more than the deadline's margin. Kept in memory only (zero after
	// a restart or a snapshot), as it is this member's measurement, not replicated state.
	notBefore time.Time
}

// expired reports whether this member lets l expire at clock estimate now and monotonic
// time wall.
func (l *Lease) expired(now int64, wall time.Time) bool {
	return l.Deadline <= now && !wall.Before(l.notBefore)
}

// Store holds every lease in memory (ids, TTLs and deadlines; attached keys stay on disk) and
// applies changes into the apply loop's batches. Only the apply goroutine changes it.
type Store struct {
	db *pebble.DB
	// now reads this member's monotonic clock (time.Now; tests replace it).
	now func() time.Time

	mu struct {
		sync.Mutex
		leases map[int64]*Lease
		clock  int64 // applied lease clock, ms
		// This member's estimate of the lease clock is base plus the time since at, and never
		// less than an estimate it gave before (last), except when it starts leading. A leader
		// sets base and at when it starts leading and moves them only to an applied clock that
		// is ahead of its estimate; any other member moves them to every tick it applies.
		leading bool
		base    int64
		at      time.Time
		last    int64
	}
}

// Open loads the leases kept in db.
func Open(db *pebble.DB) (*Store, error) {
	return open(db, time.Now)
}

func open(db *pebble.DB, now func() time.Time) (*Store, error) {
	s := &Store{db: db, now: now}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Reload reads the leases again (after the state was replaced by a snapshot).
func (s *Store) Reload() error {
	leases := make(map[int64]*Lease)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: leasePfx, UpperBound: []byte{storage.PrefixLease, 'l' + 1}})
	if err != nil {
		return fmt.Errorf("lease: iterate: %w", err)
	}
	for it.First(); it.Valid(); it.Next() {
		k, v := it.Key(), it.Value()
		if len(k) != len(leasePfx)+8 || len(v) != 16 {
			_ = it.Close()
			return fmt.Errorf("%w: lease record %x", storage.ErrCorrupt, k)
		}
		l := &Lease{ID: int64(binary.BigEndian.Uint64(k[len(leasePfx):])), TTL: int64(binary.BigEndian.Uint64(v)), Deadline: int64(binary.BigEndian.Uint64(v[8:]))}
		leases[l.ID] = l
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("lease: iterate: %w", err)
	}
	var clock int64
	v, closer, err := s.db.Get(keyClock)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return fmt.Errorf("lease: read clock: %w", err)
	default:
		if len(v) == 8 {
			clock = int64(binary.BigEndian.Uint64(v))
		}
		_ = closer.Close()
	}
	s.mu.Lock()
	s.mu.leases, s.mu.clock = leases, clock
	if s.mu.at.IsZero() {
		s.mu.base, s.mu.at = clock, s.now()
	} else {
		s.appliedLocked()
	}
	s.mu.Unlock()
	return nil
}

// Now is this member's estimate of the lease clock. On the leader: the applied clock as of
// the moment it started leading plus the time since, or the applied clock if that is ahead. On
// any other member: the last applied tick plus the time since it was applied. Either way it
// never moves backwards, except once when the member starts leading (see Lead).
func (s *Store) Now() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nowLocked()
}

func (s *Store) nowLocked() int64 {
	est := max(s.mu.base+s.now().Sub(s.mu.at).Milliseconds(), s.mu.last)
	s.mu.last = est
	return est
}

// appliedLocked re-anchors the estimate after the applied clock changed: a member that does
// not lead takes every applied tick; the leader takes it only if it is ahead of its estimate
// (a tick of an earlier leader applied late), as its own ticks carry its own estimate and
// re-anchoring on them would lose the time each spent being committed.
func (s *Store) appliedLocked() {
	at := s.now()
	if est := s.nowLocked(); !s.mu.leading || s.mu.clock > est {
		s.mu.base, s.mu.at = s.mu.clock, at
	}
}

// Lead is called when this member becomes leader: its clock estimate continues from the
// applied clock as of now, counted on this member's monotonic clock from now on, so the time
// no leader ticked (the election) is not counted and no deadline set from the applied clock can
// pass early. This is the one time the estimate may move backwards: a former follower's
// estimate kept counting through the election (and a member that restarted kept counting while
// it waited for a quorum). The in-memory notes are on the monotonic clock, so they do not move.
func (s *Store) Lead() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mu.leading = true
	s.mu.base, s.mu.at, s.mu.last = s.mu.clock, s.now(), s.mu.clock
}

// Follow is called when this member stops leading: from the next applied tick on, its
// estimate follows the applied clock again (never moving backwards).
func (s *Store) Follow() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mu.leading = false
}

// Lookup returns a copy of lease id.
func (s *Store) Lookup(id int64) (Lease, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.mu.leases[id]
	if !ok {
		return Lease{}, false
	}
	return *l, true
}

// Exists reports whether lease id exists.
func (s *Store) Exists(id int64) bool {
	_, ok := s.Lookup(id)
	return ok
}

// Remaining is the time left before lease id expires, by this member's clock estimate.
func (s *Store) Remaining(id int64) (time.Duration, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now, wall := s.nowLocked(), s.now()
	l, ok := s.mu.leases[id]
	if !ok {
		return 0, false
	}
	return max(time.Duration(l.Deadline-now)*time.Millisecond, l.notBefore.Sub(wall), 0), true
}

// IDs lists every lease id in order.
func (s *Store) IDs() []int64 {
	s.mu.Lock()
	ids := make([]int64, 0, len(s.mu.leases))
	for id := range s.mu.leases {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

// Expired returns up to limit leases whose deadline has passed by clock now (and that this
// member has not seen renewed less than their TTL ago on its monotonic clock), earliest
// deadline first, as copies taken together: each carries the deadline the decision was made on.
func (s *Store) Expired(now int64, limit int) []Lease {
	s.mu.Lock()
	wall := s.now()
	var out []Lease
	for _, l := range s.mu.leases {
		if l.expired(now, wall) {
			out = append(out, *l)
		}
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Deadline < out[j].Deadline })
	return out[:min(len(out), limit)]
}

func (s *Store) deadlineLocked(ttl int64) int64 {
	return s.mu.clock + ttl*1000 + (TickInterval + tickSlack).Milliseconds()
}

// notBefore is the note for a grant or renewal of ttl seconds applied now.
func (s *Store) notBefore(ttl int64) time.Time {
	return s.now().Add(time.Duration(min(ttl, MaxTTL)) * time.Second)
}

func (s *Store) writeLocked(b *pebble.Batch, l *Lease) error {
	v := binary.BigEndian.AppendUint64(nil, uint64(l.TTL))
	v = binary.BigEndian.AppendUint64(v, uint64(l.Deadline))
	return b.Set(leaseKey(l.ID), v, nil)
}

// Grant creates lease id with ttl seconds in b.
func (s *Store) Grant(b *pebble.Batch, id, ttl int64) (Lease, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.mu.leases[id]; ok {
		return Lease{}, ErrExists
	}
	l := &Lease{ID: id, TTL: ttl, Deadline: s.deadlineLocked(ttl), notBefore: s.notBefore(ttl)}
	if err := s.writeLocked(b, l); err != nil {
		return Lease{}, err
	}
	s.mu.leases[id] = l
	return *l, nil
}

// Renew restarts lease id's TTL in b.
func (s *Store) Renew(b *pebble.Batch, id int64) (Lease, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.mu.leases[id]
	if !ok {
		return Lease{}, ErrNotFound
	}
	// The deadline moves forward on every renewal, even when the applied clock did not
	// (ticks stalled): an expiry the leader proposed before this renewal names the old
	// deadline and must not revoke the lease when it is applied after it.
	l.Deadline, l.notBefore = max(s.deadlineLocked(l.TTL), l.Deadline+1), s.notBefore(l.TTL)
	if err := s.writeLocked(b, l); err != nil {
		return Lease{}, err
	}
	return *l, nil
}

// Tick advances the lease clock to clock (never backwards) in b.
func (s *Store) Tick(b *pebble.Batch, clock int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if clock <= s.mu.clock {
		return nil
	}
	if err := b.Set(keyClock, binary.BigEndian.AppendUint64(nil, uint64(clock)), nil); err != nil {
		return err
	}
	s.mu.clock = clock
	s.appliedLocked()
	return nil
}

// Remove deletes lease id in b; the caller has already deleted (and so detached) its keys.
func (s *Store) Remove(b *pebble.Batch, id int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.mu.leases[id]; !ok {
		return ErrNotFound
	}
	// Attachments go with their keys (the caller deleted them, which detached each); no range
	// deletion here, since thousands of them in a memtable slow every later iterator.
	if err := b.Delete(leaseKey(id), nil); err != nil {
		return err
	}
	delete(s.mu.leases, id)
	return nil
}

// Attach records that key belongs to lease id, in b.
func (s *Store) Attach(b *pebble.Batch, id int64, key []byte) error {
	return b.Set(append(attachPrefix(id), key...), nil, nil)
}

// Detach removes key from lease id, in b.
func (s *Store) Detach(b *pebble.Batch, id int64, key []byte) error {
	return b.Delete(append(attachPrefix(id), key...), nil)
}

// Keys returns the keys attached to lease id as r sees them.
func (s *Store) Keys(r pebble.Reader, id int64) ([][]byte, error) {
	pfx := attachPrefix(id)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: pfx, UpperBound: prefixEnd(pfx)})
	if err != nil {
		return nil, fmt.Errorf("lease: iterate keys: %w", err)
	}
	var keys [][]byte
	for it.First(); it.Valid(); it.Next() {
		keys = append(keys, append([]byte(nil), it.Key()[len(pfx):]...))
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("lease: iterate keys: %w", err)
	}
	return keys, nil
}

func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}
