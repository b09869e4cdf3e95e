package mvcc

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

var (
	// ErrCompacted is returned for reads, watches and compactions at a revision that has
	// been compacted.
	ErrCompacted = errors.New("mvcc: required revision has been compacted")
	// ErrFutureRev is returned for reads and compactions at a revision above the current
	// revision.
	ErrFutureRev = errors.New("mvcc: required revision is a future revision")
	// ErrWriterClosed is returned by Writer methods called after Publish or Close.
	ErrWriterClosed = errors.New("mvcc: writer is closed")
	// ErrViewClosed is returned by ReadView methods called after Close.
	ErrViewClosed = errors.New("mvcc: read view is closed")
	// ErrWriterActive is returned by Reload while a writer is active.
	ErrWriterActive = errors.New("mvcc: a writer is active")
	// ErrNotScheduled is returned by Store.Compact for a revision above the compact revision:
	// physical compaction may only remove what no permitted read can see.
	ErrNotScheduled = errors.New("mvcc: compaction revision not scheduled")
)

// Event is one change to a key, in revision order.
type Event struct {
	// Type is PUT or DELETE.
	Type mvccpb.Event_EventType
	// KV is the key after the change. For a DELETE only Key and ModRevision are set, like
	// etcd's delete events.
	KV *mvccpb.KeyValue
	// PrevKV is the key's value just before the change, nil if it did not exist (or, for
	// events at the compact revision, if compaction already removed it).
	PrevKV *mvccpb.KeyValue
}

// RangeOptions selects what Range returns.
type RangeOptions struct {
	// Limit caps the number of KVs returned; <= 0 means no limit.
	Limit int64
	// Rev is the revision to read at; 0 means the view's current revision.
	Rev int64
	// CountOnly returns only Count, no KVs.
	CountOnly bool
	// KeysOnly returns KVs without their Value.
	KeysOnly bool
	// SkipTotalCount stops the scan once Limit KVs were found instead of counting every
	// key in the range; Count is then only the number of KVs returned. It is etcd's
	// WithTotalCount=false (used by its streaming range) and saves scanning the rest of a
	// large range. Ignored for CountOnly.
	SkipTotalCount bool
}

// RangeResult is the outcome of a Range.
type RangeResult struct {
	// KVs are the live keys in the range at the read revision, in key order.
	KVs []*mvccpb.KeyValue
	// Rev is the current revision of the view or writer the range was served from (what
	// etcd reports in the response header), not RangeOptions.Rev.
	Rev int64
	// Count is the number of live keys in the range at the read revision, ignoring Limit
	// (see SkipTotalCount).
	Count int64
}

// Store is the revisioned key-value store kept in the MVCC keyspace of a Pebble DB.
//
// Reads go through ReadViews and may run concurrently with each other, with the single
// writer (the apply loop) and with physical compaction.
type Store struct {
	db *pebble.DB

	// currentRev and compactRev are the published revisions readers see. Publish stores
	// currentRev before compactRev so that a reader that loads currentRev before creating
	// its Pebble iterator and compactRev after it normally finds compactRev <= currentRev.
	currentRev atomic.Int64
	compactRev atomic.Int64
	// finishedRev is the revision through which physical compaction has completed.
	finishedRev atomic.Int64

	writerActive atomic.Bool
	// compactMu serializes physical compactions.
	compactMu sync.Mutex
}

// Open loads the MVCC state kept in db. The DB stays owned by the caller; the Store must
// not be used after the DB is closed.
func Open(db *pebble.DB) (*Store, error) {
	s := &Store{db: db}
	if err := s.load(); err != nil {
		return nil, fmt.Errorf("mvcc: open: %w", err)
	}
	return s, nil
}

// Reload reloads the revisions from the DB after the state-machine keys were replaced (a
// raft snapshot was installed). It must not run while a writer is active, and the caller
// must not run Compact while it replaces the state. Views opened before keep their old
// state.
func (s *Store) Reload() error {
	if s.writerActive.Load() {
		return fmt.Errorf("mvcc: reload: %w", ErrWriterActive)
	}
	// Wait for a physical compaction that is still finishing.
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	if err := s.load(); err != nil {
		return fmt.Errorf("mvcc: reload: %w", err)
	}
	return nil
}

// load reads the revisions kept in the DB into s.
func (s *Store) load() error {
	compact, err := getMetaRev(s.db, metaCompactKey, -1)
	if err != nil {
		return fmt.Errorf("load compact revision: %w", err)
	}
	finished, err := getMetaRev(s.db, metaFinishedKey, 0)
	if err != nil {
		return fmt.Errorf("load finished compaction revision: %w", err)
	}
	current, err := lastHistoryRev(s.db)
	if err != nil {
		return fmt.Errorf("load current revision: %w", err)
	}
	if compact > current || finished > max(compact, 0) {
		return fmt.Errorf("inconsistent revisions: current %d, compact %d, finished compaction %d",
			current, compact, finished)
	}
	// Same order as Publish (see currentRev).
	s.currentRev.Store(current)
	s.compactRev.Store(compact)
	s.finishedRev.Store(finished)
	return nil
}

// getMetaRev reads a revision from the meta table, absent if it is not there.
func getMetaRev(db *pebble.DB, key []byte, absent int64) (int64, error) {
	v, closer, err := db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return absent, nil
	}
	if err != nil {
		return 0, fmt.Errorf("get %q: %w", key, err)
	}
	rev, err := parseMetaRev(v)
	if cerr := closer.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close %q: %w", key, cerr)
	}
	return rev, err
}

// lastHistoryRev derives the current revision from the newest history entry: every
// revision above 1 changed at least one key and compaction keeps the history of the
// compact revision, so the newest entry always names the current revision. An empty store
// is at revision 1, like etcd.
func lastHistoryRev(db *pebble.DB) (int64, error) {
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: historyStart, UpperBound: historyEnd})
	if err != nil {
		return 0, fmt.Errorf("new iterator: %w", err)
	}
	rev := int64(1)
	if it.Last() {
		main, _, perr := parseHistoryKey(it.Key())
		if perr != nil {
			err = perr
		} else if main > rev {
			rev = main
		}
	}
	if ierr := it.Error(); err == nil && ierr != nil {
		err = fmt.Errorf("iterate history: %w", ierr)
	}
	if cerr := it.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close iterator: %w", cerr)
	}
	return rev, err
}

// CurrentRev returns the published current revision.
func (s *Store) CurrentRev() int64 { return s.currentRev.Load() }

// CompactRev returns the published compact revision: reads below it fail with
// ErrCompacted. It is -1 if the store was never compacted, as in etcd: a first compaction at
// revision 0 is accepted (and changes nothing but this revision).
func (s *Store) CompactRev() int64 { return s.compactRev.Load() }

// PendingCompaction returns the newest scheduled compaction whose physical removal has not
// finished (to resume after a restart with Compact).
func (s *Store) PendingCompaction() (rev int64, ok bool) {
	c := s.compactRev.Load()
	if c > s.finishedRev.Load() {
		return c, true
	}
	return 0, false
}

// NewWriter returns the writer for the next writes, to be done into the indexed batch b,
// which the caller commits. There is at most one writer at a time: after committing b the
// caller must call Publish(w), or w.Close() to abandon it, before the next NewWriter, and
// before closing b.
func (s *Store) NewWriter(b *pebble.Batch) *Writer {
	if !b.Indexed() {
		panic("mvcc: NewWriter needs an indexed batch")
	}
	if !s.writerActive.CompareAndSwap(false, true) {
		panic("mvcc: NewWriter while another writer is active")
	}
	return &Writer{
		s:          s,
		b:          b,
		rev:        s.currentRev.Load(),
		compactRev: s.compactRev.Load(),
	}
}

// Publish makes the revisions written through w visible to readers. It is called after w's
// batch was committed. A transaction still open in w is ended first. Publish closes w.
func (s *Store) Publish(w *Writer) {
	if w.s != s {
		panic("mvcc: Publish of another store's writer")
	}
	switch w.state {
	case writerPublished:
		return
	case writerAbandoned:
		panic("mvcc: Publish of an abandoned writer")
	}
	w.EndTxn()
	// An iterator error surfaced already in the operation that hit it.
	_ = w.release()
	w.state = writerPublished
	s.currentRev.Store(w.rev)
	s.compactRev.Store(w.compactRev)
	s.writerActive.Store(false)
}
