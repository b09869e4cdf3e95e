package storage

import (
	"encoding/binary"

	"fmt"
	"sort"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Raft keys (prefix 0x01).
var (
	keyHardState = []byte{PrefixRaft, 'h'}
	keySnapMeta  = []byte{PrefixRaft, 's'} // raftpb.SnapshotMetadata of the latest snapshot
	keyTruncated = []byte{PrefixRaft, 't'} // index (8) + term (8) of the entry before the first one kept
	keyEntryPfx  = []byte{PrefixRaft, 'e'} // + index (8) -> raftpb.Entry
)

func entryKey(i uint64) []byte {
	k := make([]byte, 0, 10)
	k = append(k, keyEntryPfx...)
	return binary.BigEndian.AppendUint64(k, i)
}

// termStart records that entries from index on (until the next termStart) have term.
type termStart struct{ index, term uint64 }

// RaftLog is the raft log, hard state and snapshot metadata kept in the engine. It implements
// raft.Storage. The raft node reads it from its own goroutine while the Ready loop appends to it,
// so the in-memory bounds are guarded by mu.
//
// Invariant: entries (truncIndex, last] are stored; entry truncIndex is represented only by its
// term; the terms of stored entries are described by terms.
type RaftLog struct {
	db *pebble.DB

	mu struct {
		sync.Mutex
		hs         *raftpb.HardState
		snap       *raftpb.SnapshotMetadata
		truncIndex uint64
		truncTerm  uint64
		last       uint64
		terms      []termStart
		// cache holds the newest entries, contiguous and ending at last, so that raft reads
		// the entries it just appended (to apply them, or to send them to followers) without
		// decoding them from Pebble again. cacheBytes is their total data size.
		cache      []*raftpb.Entry
		cacheBytes int
	}
}

// Bounds of the in-memory entry cache.
const (
	maxCachedEntries = 8192
	maxCachedBytes   = 64 << 20
)

// cachedLocked returns the cached entries in [lo, hi) within maxSize, if lo is cached.
func (l *RaftLog) cachedLocked(lo, hi, maxSize uint64) ([]*raftpb.Entry, bool) {
	c := l.mu.cache
	if len(c) == 0 || lo < c[0].GetIndex() {
		return nil, false
	}
	start := int(lo - c[0].GetIndex())
	end := int(hi - c[0].GetIndex())
	if end > len(c) {
		return nil, false
	}
	out := make([]*raftpb.Entry, 0, end-start)
	var size uint64
	for _, ent := range c[start:end] {
		size += uint64(proto.Size(ent))
		if len(out) > 0 && size > maxSize {
			break
		}
		out = append(out, ent)
	}
	return out, true
}

// cacheAppendLocked adds entries that were just persisted, replacing any from their first index on.
func (l *RaftLog) cacheAppendLocked(ents []*raftpb.Entry) {
	c := l.mu.cache
	first := ents[0].GetIndex()
	if len(c) > 0 {
		switch {
		case first < c[0].GetIndex() || first > c[len(c)-1].GetIndex()+1:
			c = nil
		default:
			for _, ent := range c[first-c[0].GetIndex():] {
				l.mu.cacheBytes -= len(ent.GetData())
			}
			c = c[:first-c[0].GetIndex()]
		}
	}
	if len(c) == 0 {
		l.mu.cacheBytes = 0
	}
	for _, ent := range ents {
		c = append(c, ent)
		l.mu.cacheBytes += len(ent.GetData())
	}
	drop := 0
	for len(c)-drop > maxCachedEntries || (l.mu.cacheBytes > maxCachedBytes && len(c)-drop > 1) {
		l.mu.cacheBytes -= len(c[drop].GetData())
		drop++
	}
	if drop > 0 {
		c = c[drop:]
	}
	l.mu.cache = c
}

// cacheTrimLocked drops cached entries at or below index.
func (l *RaftLog) cacheTrimLocked(index uint64) {
	c := l.mu.cache
	if len(c) == 0 || index < c[0].GetIndex() {
		return
	}
	if index >= c[len(c)-1].GetIndex() {
		l.mu.cache, l.mu.cacheBytes = nil, 0
		return
	}
	n := int(index - c[0].GetIndex() + 1)
	for _, ent := range c[:n] {
		l.mu.cacheBytes -= len(ent.GetData())
	}
	l.mu.cache = append([]*raftpb.Entry(nil), c[n:]...)
}

var _ raft.Storage = (*RaftLog)(nil)

// OpenRaftLog loads the raft log bounds from e. If the state machine is ahead of the log (a
// snapshot was ingested but the crash came before the log was reset), the log is reset to start
// after the applied index.
func OpenRaftLog(e *Engine) (*RaftLog, error) {
	l := &RaftLog{db: e.DB}
	hs := &raftpb.HardState{}
	if v, err := getValue(e.DB, keyHardState); err != nil {
		return nil, err
	} else if v != nil {
		if err := proto.Unmarshal(v, hs); err != nil {
			return nil, fmt.Errorf("%w: hard state: %v", ErrCorrupt, err)
		}
	}
	l.mu.hs = hs
	snap := &raftpb.SnapshotMetadata{}
	if v, err := getValue(e.DB, keySnapMeta); err != nil {
		return nil, err
	} else if v != nil {
		if err := proto.Unmarshal(v, snap); err != nil {
			return nil, fmt.Errorf("%w: snapshot metadata: %v", ErrCorrupt, err)
		}
	}
	l.mu.snap = snap
	if v, err := getValue(e.DB, keyTruncated); err != nil {
		return nil, err
	} else if v != nil {
		if len(v) != 16 {
			return nil, fmt.Errorf("%w: truncated state has %d bytes", ErrCorrupt, len(v))
		}
		l.mu.truncIndex, l.mu.truncTerm = binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:])
	}
	l.mu.last = l.mu.truncIndex
	// Load the terms of the stored entries; the log is bounded by snapshot-count plus the
	// catch-up entries, so this is a short scan.
	it, err := e.DB.NewIter(&pebble.IterOptions{LowerBound: entryKey(l.mu.truncIndex + 1), UpperBound: entryKey(^uint64(0))})
	if err != nil {
		return nil, fmt.Errorf("iterate raft log: %w", err)
	}
	for it.First(); it.Valid(); it.Next() {
		ent := &raftpb.Entry{}
		if err := proto.Unmarshal(it.Value(), ent); err != nil {
			it.Close()
			return nil, fmt.Errorf("%w: raft entry %x: %v", ErrCorrupt, it.Key(), err)
		}
		if ent.GetIndex() != l.mu.last+1 {
			it.Close()
			return nil, fmt.Errorf("%w: raft log gap: entry %d follows %d", ErrCorrupt, ent.GetIndex(), l.mu.last)
		}
		l.noteTermLocked(ent.GetIndex(), ent.GetTerm())
		l.mu.last = ent.GetIndex()
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("iterate raft log: %w", err)
	}

	applied, appliedTerm, err := Applied(e.DB)
	if err != nil {
		return nil, err
	}
	if applied > l.mu.last {
		cs, err := ConfState(e.DB)
		if err != nil {
			return nil, err
		}
		meta := &raftpb.SnapshotMetadata{Index: proto.Uint64(applied), Term: proto.Uint64(appliedTerm), ConfState: cs}
		b := e.DB.NewBatch()
		defer b.Close()
		if err := l.resetToSnapshotLocked(b, meta); err != nil {
			return nil, err
		}
		if hs.GetCommit() < applied {
			hs.Commit = proto.Uint64(applied)
			if err := l.setHardStateLocked(b, hs); err != nil {
				return nil, err
			}
		}
		if err := b.Commit(pebble.Sync); err != nil {
			return nil, fmt.Errorf("reset raft log to applied index %d: %w", applied, err)
		}
	}
	return l, nil
}

func (l *RaftLog) noteTermLocked(index, term uint64) {
	if n := len(l.mu.terms); n == 0 || l.mu.terms[n-1].term != term {
		l.mu.terms = append(l.mu.terms, termStart{index, term})
	}
}

// InitialState implements raft.Storage.
func (l *RaftLog) InitialState() (*raftpb.HardState, *raftpb.ConfState, error) {
	cs, err := ConfState(l.db)
	if err != nil {
		return nil, nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return proto.Clone(l.mu.hs).(*raftpb.HardState), cs, nil
}

// HardState returns the last persisted hard state.
func (l *RaftLog) HardState() *raftpb.HardState {
	l.mu.Lock()
	defer l.mu.Unlock()
	return proto.Clone(l.mu.hs).(*raftpb.HardState)
}

// Entries implements raft.Storage.
func (l *RaftLog) Entries(lo, hi, maxSize uint64) ([]*raftpb.Entry, error) {
	l.mu.Lock()
	first, last := l.mu.truncIndex+1, l.mu.last
	if lo >= first && hi <= last+1 {
		if ents, ok := l.cachedLocked(lo, hi, maxSize); ok {
			l.mu.Unlock()
			return ents, nil
		}
	}
	l.mu.Unlock()
	if lo < first {
		return nil, raft.ErrCompacted
	}
	if hi > last+1 {
		return nil, raft.ErrUnavailable
	}
	it, err := l.db.NewIter(&pebble.IterOptions{LowerBound: entryKey(lo), UpperBound: entryKey(hi)})
	if err != nil {
		return nil, fmt.Errorf("iterate raft log: %w", err)
	}
	defer it.Close()
	out := make([]*raftpb.Entry, 0, hi-lo)
	var size uint64
	next := lo
	for it.First(); it.Valid(); it.Next() {
		ent := &raftpb.Entry{}
		if err := proto.Unmarshal(it.Value(), ent); err != nil {
			return nil, fmt.Errorf("%w: raft entry %x: %v", ErrCorrupt, it.Key(), err)
		}
		if ent.GetIndex() != next {
			// Compacted or truncated concurrently.
			return nil, raft.ErrCompacted
		}
		size += uint64(len(it.Value()))
		if len(out) > 0 && size > maxSize {
			break
		}
		out = append(out, ent)
		next++
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("iterate raft log: %w", err)
	}
	if len(out) == 0 {
		return nil, raft.ErrCompacted
	}
	return out, nil
}

// Term implements raft.Storage.
func (l *RaftLog) Term(i uint64) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case i == l.mu.truncIndex:
		return l.mu.truncTerm, nil
	case i < l.mu.truncIndex:
		return 0, raft.ErrCompacted
	case i > l.mu.last:
		return 0, raft.ErrUnavailable
	}
	ts := l.mu.terms
	k := sort.Search(len(ts), func(k int) bool { return ts[k].index > i }) - 1
	if k < 0 {
		return 0, fmt.Errorf("%w: no term known for raft index %d", ErrCorrupt, i)
	}
	return ts[k].term, nil
}

// LastIndex implements raft.Storage.
func (l *RaftLog) LastIndex() (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mu.last, nil
}

// FirstIndex implements raft.Storage.
func (l *RaftLog) FirstIndex() (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mu.truncIndex + 1, nil
}

// Snapshot implements raft.Storage. Raft snapshots carry metadata only: the transport streams the
// state-machine data when it sends one.
func (l *RaftLog) Snapshot() (*raftpb.Snapshot, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mu.snap.GetIndex() == 0 {
		return nil, raft.ErrSnapshotTemporarilyUnavailable
	}
	return &raftpb.Snapshot{Metadata: proto.Clone(l.mu.snap).(*raftpb.SnapshotMetadata)}, nil
}

// SnapshotIndex is the index of the latest snapshot (0 if none).
func (l *RaftLog) SnapshotIndex() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mu.snap.GetIndex()
}

// Save durably appends ents and records hs (either may be empty) with at most one fsync.
// Entries at or after the first new index replace what was there.
func (l *RaftLog) Save(hs *raftpb.HardState, ents []*raftpb.Entry) error {
	if raft.IsEmptyHardState(hs) && len(ents) == 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	// Only entries, term and vote must be durable before raft acts on them; a commit index
	// that advanced alone can be recovered, so it is written without an fsync of its own.
	sync := pebble.NoSync
	if raft.MustSync(hs, l.mu.hs, len(ents)) {
		sync = pebble.Sync
	}
	var newLast uint64
	if len(ents) > 0 {
		first := ents[0].GetIndex()
		newLast = ents[len(ents)-1].GetIndex()
		if first <= l.mu.truncIndex {
			return fmt.Errorf("append raft entries from %d: at or below the truncated index %d", first, l.mu.truncIndex)
		}
		if first > l.mu.last+1 {
			return fmt.Errorf("append raft entries from %d: gap after last index %d", first, l.mu.last)
		}
	}
	b := l.db.NewBatch()
	defer b.Close()
	if !raft.IsEmptyHardState(hs) {
		if err := writeHardState(b, hs); err != nil {
			return err
		}
	}
	var buf []byte
	for _, ent := range ents {
		var err error
		buf, err = proto.MarshalOptions{}.MarshalAppend(buf[:0], ent)
		if err != nil {
			return fmt.Errorf("marshal raft entry %d: %w", ent.GetIndex(), err)
		}
		if err := b.Set(entryKey(ent.GetIndex()), buf, nil); err != nil {
			return fmt.Errorf("write raft entry: %w", err)
		}
	}
	if len(ents) > 0 && newLast < l.mu.last {
		if err := b.DeleteRange(entryKey(newLast+1), entryKey(l.mu.last+1), nil); err != nil {
			return fmt.Errorf("truncate raft log: %w", err)
		}
	}
	if err := b.Commit(sync); err != nil {
		return fmt.Errorf("persist raft log: %w", err)
	}
	if !raft.IsEmptyHardState(hs) {
		l.mu.hs = proto.Clone(hs).(*raftpb.HardState)
	}
	if len(ents) > 0 {
		first := ents[0].GetIndex()
		ts := l.mu.terms
		k := sort.Search(len(ts), func(k int) bool { return ts[k].index >= first })
		l.mu.terms = ts[:k]
		for _, ent := range ents {
			l.noteTermLocked(ent.GetIndex(), ent.GetTerm())
		}
		l.mu.last = newLast
		l.cacheAppendLocked(ents)
	}
	return nil
}

// setHardStateLocked writes hs to b and takes it as the current hard state; the caller
// commits b before anyone can observe the difference (startup recovery).
func (l *RaftLog) setHardStateLocked(b *pebble.Batch, hs *raftpb.HardState) error {
	if err := writeHardState(b, hs); err != nil {
		return err
	}
	l.mu.hs = proto.Clone(hs).(*raftpb.HardState)
	return nil
}

func writeHardState(b *pebble.Batch, hs *raftpb.HardState) error {
	v, err := proto.Marshal(hs)
	if err != nil {
		return fmt.Errorf("marshal hard state: %w", err)
	}
	if err := b.Set(keyHardState, v, nil); err != nil {
		return fmt.Errorf("write hard state: %w", err)
	}
	return nil
}

// CreateSnapshot records a snapshot at applied index i (with the configuration cs at i) and
// discards log entries up to i-keep, so slow followers within keep entries catch up from the log.
func (l *RaftLog) CreateSnapshot(i uint64, cs *raftpb.ConfState, keep uint64) error {
	if i <= l.SnapshotIndex() {
		return raft.ErrSnapOutOfDate
	}
	term, err := l.Term(i)
	if err != nil {
		return fmt.Errorf("snapshot at %d: %w", i, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if i <= l.mu.snap.GetIndex() {
		return raft.ErrSnapOutOfDate
	}
	meta := &raftpb.SnapshotMetadata{Index: proto.Uint64(i), Term: proto.Uint64(term), ConfState: cs}
	v, err := proto.Marshal(meta)
	if err != nil {
		return fmt.Errorf("marshal snapshot metadata: %w", err)
	}
	b := l.db.NewBatch()
	defer b.Close()
	if err := b.Set(keySnapMeta, v, nil); err != nil {
		return fmt.Errorf("write snapshot metadata: %w", err)
	}
	compact := uint64(0)
	if i > keep {
		compact = i - keep
	}
	var compactTerm uint64
	if compact > l.mu.truncIndex {
		ts := l.mu.terms
		k := sort.Search(len(ts), func(k int) bool { return ts[k].index > compact }) - 1
		if k < 0 {
			return fmt.Errorf("%w: no term known for raft index %d", ErrCorrupt, compact)
		}
		compactTerm = ts[k].term
		if err := b.DeleteRange(entryKey(l.mu.truncIndex+1), entryKey(compact+1), nil); err != nil {
			return fmt.Errorf("compact raft log: %w", err)
		}
		if err := b.Set(keyTruncated, truncValue(compact, compactTerm), nil); err != nil {
			return fmt.Errorf("write truncated state: %w", err)
		}
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("persist snapshot metadata: %w", err)
	}
	l.mu.snap = meta
	if compact > l.mu.truncIndex {
		l.mu.truncIndex, l.mu.truncTerm = compact, compactTerm
		l.cacheTrimLocked(compact)
		ts := l.mu.terms
		k := sort.Search(len(ts), func(k int) bool { return ts[k].index > compact }) - 1
		if k > 0 {
			l.mu.terms = append([]termStart(nil), ts[k:]...)
		}
	}
	return nil
}

func truncValue(index, term uint64) []byte {
	v := binary.BigEndian.AppendUint64(nil, index)
	return binary.BigEndian.AppendUint64(v, term)
}

// ApplySnapshot resets the log to start after the snapshot described by meta; the state machine
// has already been replaced by the snapshot's data.
func (l *RaftLog) ApplySnapshot(meta *raftpb.SnapshotMetadata) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.db.NewBatch()
	defer b.Close()
	if err := l.resetToSnapshotLocked(b, meta); err != nil {
		return err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("persist snapshot metadata: %w", err)
	}
	return nil
}

func (l *RaftLog) resetToSnapshotLocked(b *pebble.Batch, meta *raftpb.SnapshotMetadata) error {
	v, err := proto.Marshal(meta)
	if err != nil {
		return fmt.Errorf("marshal snapshot metadata: %w", err)
	}
	if err := b.Set(keySnapMeta, v, nil); err != nil {
		return fmt.Errorf("write snapshot metadata: %w", err)
	}
	if err := b.DeleteRange(entryKey(0), entryKey(^uint64(0)), nil); err != nil {
		return fmt.Errorf("clear raft log: %w", err)
	}
	if err := b.Set(keyTruncated, truncValue(meta.GetIndex(), meta.GetTerm()), nil); err != nil {
		return fmt.Errorf("write truncated state: %w", err)
	}
	l.mu.snap = proto.Clone(meta).(*raftpb.SnapshotMetadata)
	l.mu.truncIndex, l.mu.truncTerm = meta.GetIndex(), meta.GetTerm()
	l.mu.last = meta.GetIndex()
	l.mu.terms = nil
	l.mu.cache, l.mu.cacheBytes = nil, 0
	return nil
}

// keyLocalID holds this member's id. It lives under the raft prefix because it is not
// replicated state: a snapshot from another member must not overwrite it.
var keyLocalID = []byte{PrefixRaft, 'l'}

// LocalID returns the stored id of this member (0 if the data dir is new).
func LocalID(r pebble.Reader) (uint64, error) {
	v, err := getValue(r, keyLocalID)
	if err != nil || v == nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: member id record has %d bytes", ErrCorrupt, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// SetLocalID records this member's id in b.
func SetLocalID(b *pebble.Batch, id uint64) error {
	return b.Set(keyLocalID, binary.BigEndian.AppendUint64(nil, id), nil)
}
