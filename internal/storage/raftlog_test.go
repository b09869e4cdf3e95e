package storage

import (
	"errors"
	"math"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// storedEntryIndexes lists the indexes of the raft entries physically present in the engine.
func storedEntryIndexes(t *testing.T, e *Engine) []uint64 {
	t.Helper()
	it, err := e.DB.NewIter(&pebble.IterOptions{LowerBound: keyEntryPfx, UpperBound: []byte{PrefixRaft, 'e' + 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	var out []uint64
	for it.First(); it.Valid(); it.Next() {
		ent := &raftpb.Entry{}
		if err := proto.Unmarshal(it.Value(), ent); err != nil {
			t.Fatalf("stored entry %x: %v", it.Key(), err)
		}
		out = append(out, ent.GetIndex())
	}
	return out
}

func checkBounds(t *testing.T, l *RaftLog, first, last uint64) {
	t.Helper()
	if f, err := l.FirstIndex(); err != nil || f != first {
		t.Errorf("FirstIndex() = %d, %v; want %d", f, err, first)
	}
	if la, err := l.LastIndex(); err != nil || la != last {
		t.Errorf("LastIndex() = %d, %v; want %d", la, err, last)
	}
}

func checkTerm(t *testing.T, l *RaftLog, i, want uint64, wantErr error) {
	t.Helper()
	term, err := l.Term(i)
	if !errors.Is(err, wantErr) || (wantErr == nil && err != nil) || term != want {
		t.Errorf("Term(%d) = %d, %v; want %d, %v", i, term, err, want, wantErr)
	}
}

func checkEntries(t *testing.T, l *RaftLog, lo, hi, maxSize uint64, want []*raftpb.Entry, wantErr error) {
	t.Helper()
	got, err := l.Entries(lo, hi, maxSize)
	if wantErr != nil {
		if !errors.Is(err, wantErr) {
			t.Errorf("Entries(%d, %d, %d) = %s, %v; want error %v", lo, hi, maxSize, describe(got), err, wantErr)
		}
		return
	}
	if err != nil || !entriesEqual(got, want) {
		t.Errorf("Entries(%d, %d, %d) = %s, %v; want %s", lo, hi, maxSize, describe(got), err, describe(want))
	}
}

func TestRaftLogEmpty(t *testing.T) {
	te := newTestEngine(t)
	l := mustOpenRaftLog(t, te.Engine)
	checkBounds(t, l, 1, 0)
	checkTerm(t, l, 0, 0, nil)
	checkTerm(t, l, 1, 0, raft.ErrUnavailable)
	checkEntries(t, l, 1, 2, math.MaxUint64, nil, raft.ErrUnavailable)
	hs, cs, err := l.InitialState()
	if err != nil {
		t.Fatalf("InitialState: %v", err)
	}
	if !raft.IsEmptyHardState(hs) {
		t.Errorf("InitialState hard state = %v, want empty", hs)
	}
	if cs == nil || len(cs.GetVoters())+len(cs.GetLearners())+len(cs.GetVotersOutgoing())+len(cs.GetLearnersNext()) != 0 {
		t.Errorf("InitialState conf state = %v, want empty", cs)
	}
	if !raft.IsEmptyHardState(l.HardState()) {
		t.Errorf("HardState() = %v, want empty", l.HardState())
	}
	if _, err := l.Snapshot(); !errors.Is(err, raft.ErrSnapshotTemporarilyUnavailable) {
		t.Errorf("Snapshot() error = %v, want ErrSnapshotTemporarilyUnavailable", err)
	}
	if got := l.SnapshotIndex(); got != 0 {
		t.Errorf("SnapshotIndex() = %d, want 0", got)
	}
	// Saving nothing is a no-op.
	mustSave(t, l, nil, nil)
	mustSave(t, l, &raftpb.HardState{}, nil)
	checkBounds(t, l, 1, 0)
}

func TestRaftLogSaveAndRead(t *testing.T) {
	te := newTestEngine(t)
	l := mustOpenRaftLog(t, te.Engine)
	all := ents(1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 5)
	hs := &raftpb.HardState{Term: proto.Uint64(5), Vote: proto.Uint64(2), Commit: proto.Uint64(7)}
	mustSave(t, l, hs, all)

	reopened := mustOpenRaftLog(t, te.Engine) // same data, empty entry cache
	for name, l := range map[string]*RaftLog{"cached": l, "reopened": reopened} {
		t.Run(name, func(t *testing.T) {
			checkBounds(t, l, 1, 10)
			if got := l.HardState(); !proto.Equal(got, hs) {
				t.Errorf("HardState() = %v, want %v", got, hs)
			}
			gotHS, _, err := l.InitialState()
			if err != nil || !proto.Equal(gotHS, hs) {
				t.Errorf("InitialState() hard state = %v, %v; want %v", gotHS, err, hs)
			}
			for i, want := range []uint64{0, 1, 1, 2, 2, 2, 3, 3, 3, 3, 5} {
				checkTerm(t, l, uint64(i), want, nil)
			}
			checkTerm(t, l, 11, 0, raft.ErrUnavailable)

			checkEntries(t, l, 1, 11, math.MaxUint64, all, nil)
			checkEntries(t, l, 3, 7, math.MaxUint64, all[2:6], nil)
			checkEntries(t, l, 10, 11, math.MaxUint64, all[9:], nil)
			// At least one entry, however small maxSize is.
			checkEntries(t, l, 4, 11, 0, all[3:4], nil)
			checkEntries(t, l, 4, 11, 1, all[3:4], nil)
			// Exactly as many entries as fit.
			two := uint64(proto.Size(all[3]) + proto.Size(all[4]))
			checkEntries(t, l, 4, 11, two, all[3:5], nil)
			checkEntries(t, l, 4, 11, two-1, all[3:4], nil)
			checkEntries(t, l, 4, 11, two+uint64(proto.Size(all[5]))-1, all[3:5], nil)
			// Out of bounds.
			checkEntries(t, l, 0, 5, math.MaxUint64, nil, raft.ErrCompacted)
			checkEntries(t, l, 5, 12, math.MaxUint64, nil, raft.ErrUnavailable)
			checkEntries(t, l, 11, 12, math.MaxUint64, nil, raft.ErrUnavailable)
		})
	}

	// A hard state alone, then entries alone.
	hs2 := &raftpb.HardState{Term: proto.Uint64(6), Vote: proto.Uint64(3), Commit: proto.Uint64(9)}
	mustSave(t, l, hs2, nil)
	more := ents(11, 6, 6)
	mustSave(t, l, nil, more)
	if got := l.HardState(); !proto.Equal(got, hs2) {
		t.Errorf("HardState() after Save(hs, nil) = %v, want %v", got, hs2)
	}
	checkBounds(t, l, 1, 12)
	checkEntries(t, l, 9, 13, math.MaxUint64, append(all[8:10:10], more...), nil)
	checkTerm(t, l, 12, 6, nil)

	// The returned hard state is a copy.
	l.HardState().Commit = proto.Uint64(100)
	if got := l.HardState().GetCommit(); got != 9 {
		t.Errorf("HardState() shares its record with callers: commit %d after a caller's change", got)
	}
}

func TestRaftLogSaveRejectsBadAppends(t *testing.T) {
	te := newTestEngine(t)
	l := mustOpenRaftLog(t, te.Engine)
	hs := &raftpb.HardState{Term: proto.Uint64(2), Commit: proto.Uint64(3)}
	mustSave(t, l, hs, ents(1, 1, 1, 2, 2, 2))
	if err := l.CreateSnapshot(3, &raftpb.ConfState{Voters: []uint64{1}}, 0); err != nil {
		t.Fatal(err)
	}
	badHS := &raftpb.HardState{Term: proto.Uint64(9), Commit: proto.Uint64(4)}
	for _, tc := range []struct {
		name string
		ents []*raftpb.Entry
	}{
		{"gap after last", ents(7, 2)},
		{"at the truncated index", ents(3, 2, 2, 2)},
		{"below the truncated index", ents(2, 2, 2, 2)},
	} {
		if err := l.Save(badHS, tc.ents); err == nil {
			t.Errorf("Save(%s %s) succeeded, want an error", tc.name, span(tc.ents))
		}
		checkBounds(t, l, 4, 5)
		if got := l.HardState(); !proto.Equal(got, hs) {
			t.Errorf("after the failed Save(%s): HardState() = %v, want the unchanged %v", tc.name, got, hs)
		}
	}
	if got := storedEntryIndexes(t, te.Engine); len(got) != 2 || got[0] != 4 || got[1] != 5 {
		t.Errorf("stored entries after failed saves = %v, want [4 5]", got)
	}
	if got := mustOpenRaftLog(t, te.Engine).HardState(); !proto.Equal(got, hs) {
		t.Errorf("persisted hard state after failed saves = %v, want %v", got, hs)
	}
}

func TestRaftLogConflictTruncation(t *testing.T) {
	te := newTestEngine(t)
	l := mustOpenRaftLog(t, te.Engine)
	mustSave(t, l, nil, ents(1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3))
	checkBounds(t, l, 1, 10)

	// A new leader in term 4 overwrites from index 5 (in the middle of term 2's run) with a
	// shorter suffix.
	repl := ents(5, 4, 4)
	mustSave(t, l, nil, repl)
	checkBounds(t, l, 1, 6)
	for i, want := range []uint64{0, 1, 1, 2, 2, 4, 4} {
		checkTerm(t, l, uint64(i), want, nil)
	}
	checkTerm(t, l, 7, 0, raft.ErrUnavailable)
	checkEntries(t, l, 1, 7, math.MaxUint64, append(ents(1, 1, 1, 2, 2), repl...), nil)
	checkEntries(t, l, 6, 8, math.MaxUint64, nil, raft.ErrUnavailable)
	if got := storedEntryIndexes(t, te.Engine); len(got) != 6 {
		t.Errorf("stored entries = %v, want 1..6 (7..10 deleted)", got)
	}

	// Overwrite exactly at a term boundary with the same term as the entry before it, then
	// extend far past the old end.
	long := ents(3, 2, 2, 2, 5, 5, 5, 5, 5, 5, 5, 6)
	mustSave(t, l, nil, long)
	checkBounds(t, l, 1, 13)
	for i, want := range []uint64{0, 1, 1, 2, 2, 2, 5, 5, 5, 5, 5, 5, 5, 6} {
		checkTerm(t, l, uint64(i), want, nil)
	}
	// Overwrite the whole log.
	whole := ents(1, 7, 7, 7)
	mustSave(t, l, nil, whole)
	checkBounds(t, l, 1, 3)
	for i, want := range []uint64{0, 7, 7, 7} {
		checkTerm(t, l, uint64(i), want, nil)
	}
	checkEntries(t, l, 1, 4, math.MaxUint64, whole, nil)

	// The reloaded log agrees.
	r := mustOpenRaftLog(t, te.Engine)
	checkBounds(t, r, 1, 3)
	for i, want := range []uint64{0, 7, 7, 7} {
		checkTerm(t, r, uint64(i), want, nil)
	}
	checkEntries(t, r, 1, 4, math.MaxUint64, whole, nil)
}

// TestRaftLogEntriesMaxSize checks every (lo, hi, maxSize) against raft's size rule, both on a
// log that just saved the entries (served from the in-memory entry cache) and on the same data
// reopened (served from Pebble): the answer must not depend on which one serves it.
func TestRaftLogEntriesMaxSize(t *testing.T) {
	t.Parallel()
	te := newTestEngine(t)
	l := mustOpenRaftLog(t, te.Engine)
	var all []*raftpb.Entry
	for i := uint64(1); i <= 24; i++ {
		all = append(all, entry(i, 1+i/8, int(i*37%150)))
	}
	mustSave(t, l, nil, all)
	reopened := mustOpenRaftLog(t, te.Engine)

	for name, l := range map[string]*RaftLog{"cached": l, "reopened": reopened} {
		t.Run(name, func(t *testing.T) {
			mismatches := 0
			for lo := uint64(1); lo <= 24; lo++ {
				for hi := lo + 1; hi <= 25; hi++ {
					sizes := []uint64{0, 1, math.MaxUint64}
					var sum uint64
					for _, e := range all[lo-1 : hi-1] {
						sum += uint64(proto.Size(e))
						sizes = append(sizes, sum-1, sum, sum+1)
					}
					for _, maxSize := range sizes {
						want := limitByProtoSize(all[lo-1:hi-1], maxSize)
						got, err := l.Entries(lo, hi, maxSize)
						if err != nil || !entriesEqual(got, want) {
							if mismatches++; mismatches <= 5 {
								t.Errorf("Entries(%d, %d, %d) = %s, %v; want %s", lo, hi, maxSize, describe(got), err, describe(want))
							}
						}
					}
				}
			}
			if mismatches > 5 {
				t.Errorf("... %d mismatches in all", mismatches)
			}
		})
	}
}

// TestRaftLogEntryCache saves more entries than the cache holds, in batches, with overwrites
// and compactions in between, and compares every read with a freshly opened log (empty cache).
func TestRaftLogEntryCache(t *testing.T) {
	t.Parallel()
	te := newTestEngine(t)
	l := mustOpenRaftLog(t, te.Engine)
	const n = maxCachedEntries + 2000
	var all []*raftpb.Entry
	term := uint64(1)
	for first := uint64(1); first <= n; first += 500 {
		var batch []*raftpb.Entry
		for i := first; i < first+500 && i <= n; i++ {
			batch = append(batch, entry(i, term, int(i%64)))
		}
		mustSave(t, l, nil, batch)
		all = append(all, batch...)
	}
	compare := func(what string) {
		t.Helper()
		r := mustOpenRaftLog(t, te.Engine)
		first, _ := l.FirstIndex()
		last, _ := l.LastIndex()
		rFirst, _ := r.FirstIndex()
		rLast, _ := r.LastIndex()
		if first != rFirst || last != rLast {
			t.Fatalf("%s: bounds [%d, %d], reopened [%d, %d]", what, first, last, rFirst, rLast)
		}
		bad := 0
		// Ranges below, across and inside the cached suffix, whole and size-limited.
		for _, q := range [][2]uint64{
			{first, last + 1}, {first, first + 1}, {last, last + 1}, {last - 100, last + 1},
			{last - maxCachedEntries + 1, last + 1}, {last - maxCachedEntries, last - maxCachedEntries + 10},
			{last - maxCachedEntries - 5, last - maxCachedEntries + 5}, {(first + last) / 2, last},
		} {
			lo, hi := max(q[0], first), min(q[1], last+1)
			if lo >= hi {
				continue
			}
			for _, maxSize := range []uint64{0, 100, 1000, 64 << 10, math.MaxUint64} {
				a, errA := l.Entries(lo, hi, maxSize)
				b, errB := r.Entries(lo, hi, maxSize)
				if !errors.Is(errA, errB) || !entriesEqual(a, b) {
					if bad++; bad <= 5 {
						t.Errorf("%s: Entries(%d, %d, %d): with cache %d entries (%v), from Pebble %d entries (%v)",
							what, lo, hi, maxSize, len(a), errA, len(b), errB)
					}
				}
			}
		}
		for i := first - 1; i <= last; i++ {
			ta, errA := l.Term(i)
			tb, errB := r.Term(i)
			if ta != tb || !errors.Is(errA, errB) {
				t.Fatalf("%s: Term(%d) = %d, %v; reopened %d, %v", what, i, ta, errA, tb, errB)
			}
		}
	}
	compare("after appends")
	got, err := l.Entries(1, n+1, math.MaxUint64)
	if err != nil || !entriesEqual(got, all) {
		t.Fatalf("Entries(1, %d) = %d entries, %v; want all %d", n+1, len(got), err, len(all))
	}

	// Overwrite a suffix inside the cache with a newer term.
	term++
	var repl []*raftpb.Entry
	for i := uint64(n - 300); i < n-100; i++ {
		repl = append(repl, entry(i, term, 40))
	}
	mustSave(t, l, nil, repl)
	compare("after overwriting a cached suffix")

	// Overwrite from below the cached range (the cache restarts with the new entries).
	term++
	repl = repl[:0]
	for i := uint64(100); i < 150; i++ {
		repl = append(repl, entry(i, term, 10))
	}
	mustSave(t, l, nil, repl)
	compare("after overwriting from below the cache")
	mustSave(t, l, nil, []*raftpb.Entry{entry(150, term, 3), entry(151, term, 3)})
	compare("after appending to a restarted cache")

	// Compact into the cached range, then past it.
	if err := l.CreateSnapshot(120, nil, 10); err != nil {
		t.Fatal(err)
	}
	compare("after compacting into the cache")
	if err := l.CreateSnapshot(151, nil, 0); err != nil {
		t.Fatal(err)
	}
	if first, _ := l.FirstIndex(); first != 152 {
		t.Fatalf("FirstIndex after compacting everything = %d, want 152", first)
	}
	mustSave(t, l, nil, []*raftpb.Entry{entry(152, term, 3), entry(153, term, 70)})
	compare("after compacting everything and appending")
}

func TestRaftLogEntryCacheBytesBound(t *testing.T) {
	t.Parallel()
	te := newTestEngine(t)
	l := mustOpenRaftLog(t, te.Engine)
	const size = 8 << 20
	count := maxCachedBytes/size + 1
	want := entry(1, 1, size)
	for i := 1; i <= count; i++ {
		mustSave(t, l, nil, []*raftpb.Entry{entry(uint64(i), 1, size)})
	}
	l.mu.Lock()
	cached, cachedBytes := len(l.mu.cache), l.mu.cacheBytes
	l.mu.Unlock()
	if cachedBytes > maxCachedBytes || cached >= count {
		t.Errorf("cache holds %d entries, %d bytes; want at most %d bytes", cached, cachedBytes, maxCachedBytes)
	}
	got, err := l.Entries(1, uint64(count)+1, math.MaxUint64)
	if err != nil || len(got) != count {
		t.Fatalf("Entries over the cache bound: %d entries, %v; want %d", len(got), err, count)
	}
	for i, e := range got {
		if e.GetIndex() != uint64(i+1) || len(e.GetData()) != size {
			t.Fatalf("entry %d: index %d, %d bytes; want %d bytes", i+1, e.GetIndex(), len(e.GetData()), size)
		}
	}
	if !proto.Equal(got[0], want) {
		t.Errorf("entry 1 differs from what was saved")
	}
}

func TestRaftLogCreateSnapshot(t *testing.T) {
	te := newTestEngine(t)
	l := mustOpenRaftLog(t, te.Engine)
	// Terms: 1..5 -> 1, 6..15 -> 2, 16..20 -> 3.
	var terms []uint64
	for i := 1; i <= 20; i++ {
		switch {
		case i <= 5:
			terms = append(terms, 1)
		case i <= 15:
			terms = append(terms, 2)
		default:
			terms = append(terms, 3)
		}
	}
	all := ents(1, terms...)
	mustSave(t, l, &raftpb.HardState{Term: proto.Uint64(3), Commit: proto.Uint64(20)}, all)
	cs := &raftpb.ConfState{Voters: []uint64{1, 2, 3}}

	if err := l.CreateSnapshot(10, cs, 3); err != nil {
		t.Fatalf("CreateSnapshot(10, keep 3): %v", err)
	}
	checkBounds(t, l, 8, 20)
	checkTerm(t, l, 7, 2, nil) // the truncated index still answers
	checkTerm(t, l, 6, 0, raft.ErrCompacted)
	checkTerm(t, l, 10, 2, nil)
	checkTerm(t, l, 16, 3, nil)
	checkEntries(t, l, 7, 21, math.MaxUint64, nil, raft.ErrCompacted)
	checkEntries(t, l, 8, 21, math.MaxUint64, all[7:], nil)
	if got := l.SnapshotIndex(); got != 10 {
		t.Errorf("SnapshotIndex() = %d, want 10", got)
	}
	snap, err := l.Snapshot()
	if err != nil {
		t.Fatalf("Snapshot(): %v", err)
	}
	wantMeta := &raftpb.SnapshotMetadata{Index: proto.Uint64(10), Term: proto.Uint64(2), ConfState: cs}
	if !proto.Equal(snap.GetMetadata(), wantMeta) || len(snap.GetData()) != 0 {
		t.Errorf("Snapshot() = %v, want metadata %v and no data", snap, wantMeta)
	}
	if got := storedEntryIndexes(t, te.Engine); len(got) != 13 || got[0] != 8 {
		t.Errorf("stored entries = %v, want 8..20", got)
	}

	// Not newer than the current snapshot.
	for _, i := range []uint64{10, 9, 5} {
		if err := l.CreateSnapshot(i, cs, 0); !errors.Is(err, raft.ErrSnapOutOfDate) {
			t.Errorf("CreateSnapshot(%d) = %v, want ErrSnapOutOfDate", i, err)
		}
	}
	// Beyond the log.
	if err := l.CreateSnapshot(21, cs, 0); err == nil || errors.Is(err, raft.ErrSnapOutOfDate) {
		t.Errorf("CreateSnapshot(21) past the last index = %v, want an error other than ErrSnapOutOfDate", err)
	}
	// keep reaching below the truncated index compacts nothing more.
	if err := l.CreateSnapshot(12, cs, 20); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, l, 8, 20)
	checkTerm(t, l, 7, 2, nil)
	if got := l.SnapshotIndex(); got != 12 {
		t.Errorf("SnapshotIndex() = %d, want 12", got)
	}
	// keep 0 at a term boundary.
	if err := l.CreateSnapshot(16, cs, 0); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, l, 17, 20)
	checkTerm(t, l, 16, 3, nil)
	checkTerm(t, l, 15, 0, raft.ErrCompacted)
	checkEntries(t, l, 17, 21, math.MaxUint64, all[16:], nil)
	// Appends continue the log; a snapshot of the last index empties it.
	more := ents(21, 3, 4, 4)
	mustSave(t, l, nil, more)
	if err := l.CreateSnapshot(23, cs, 0); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, l, 24, 23)
	checkTerm(t, l, 23, 4, nil)
	checkEntries(t, l, 24, 25, math.MaxUint64, nil, raft.ErrUnavailable)

	// All of it survives a restart.
	te.reopen()
	r := mustOpenRaftLog(t, te.Engine)
	checkBounds(t, r, 24, 23)
	checkTerm(t, r, 23, 4, nil)
	if snap, err := r.Snapshot(); err != nil || snap.GetMetadata().GetIndex() != 23 || snap.GetMetadata().GetTerm() != 4 {
		t.Errorf("reopened Snapshot() = %v, %v; want index 23 term 4", snap, err)
	}
	mustSave(t, r, nil, ents(24, 5))
	checkEntries(t, r, 24, 25, math.MaxUint64, ents(24, 5), nil)
}

func TestRaftLogApplySnapshot(t *testing.T) {
	te := newTestEngine(t)
	l := mustOpenRaftLog(t, te.Engine)
	mustSave(t, l, &raftpb.HardState{Term: proto.Uint64(2), Commit: proto.Uint64(5)}, ents(1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2))
	cs := &raftpb.ConfState{Voters: []uint64{1, 2}, Learners: []uint64{3}}
	meta := &raftpb.SnapshotMetadata{Index: proto.Uint64(50), Term: proto.Uint64(7), ConfState: cs}
	if err := l.ApplySnapshot(meta); err != nil {
		t.Fatalf("ApplySnapshot: %v", err)
	}
	check := func(l *RaftLog) {
		t.Helper()
		checkBounds(t, l, 51, 50)
		checkTerm(t, l, 50, 7, nil)
		checkTerm(t, l, 49, 0, raft.ErrCompacted)
		checkTerm(t, l, 5, 0, raft.ErrCompacted)
		checkTerm(t, l, 51, 0, raft.ErrUnavailable)
		checkEntries(t, l, 5, 10, math.MaxUint64, nil, raft.ErrCompacted)
		checkEntries(t, l, 51, 52, math.MaxUint64, nil, raft.ErrUnavailable)
		snap, err := l.Snapshot()
		if err != nil || !proto.Equal(snap.GetMetadata(), meta) {
			t.Errorf("Snapshot() = %v, %v; want %v", snap, err, meta)
		}
		if got := l.SnapshotIndex(); got != 50 {
			t.Errorf("SnapshotIndex() = %d, want 50", got)
		}
	}
	check(l)
	if got := storedEntryIndexes(t, te.Engine); len(got) != 0 {
		t.Errorf("stored entries after ApplySnapshot = %v, want none", got)
	}
	te.reopen()
	l = mustOpenRaftLog(t, te.Engine)
	check(l)

	if err := l.Save(nil, ents(50, 7)); err == nil {
		t.Errorf("Save at the snapshot index succeeded, want an error")
	}
	mustSave(t, l, nil, ents(51, 7, 8, 8))
	checkBounds(t, l, 51, 53)
	checkEntries(t, l, 51, 54, math.MaxUint64, ents(51, 7, 8, 8), nil)

	// A snapshot below the last index still replaces the whole log.
	meta2 := &raftpb.SnapshotMetadata{Index: proto.Uint64(52), Term: proto.Uint64(9), ConfState: cs}
	if err := l.ApplySnapshot(meta2); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, l, 53, 52)
	checkTerm(t, l, 52, 9, nil)
	if got := storedEntryIndexes(t, te.Engine); len(got) != 0 {
		t.Errorf("stored entries after the second ApplySnapshot = %v, want none", got)
	}
}

func TestRaftLogReopen(t *testing.T) {
	te := newTestEngine(t)
	l := mustOpenRaftLog(t, te.Engine)
	cs := &raftpb.ConfState{Voters: []uint64{1, 2, 3}}
	commit(t, te.Engine, func(b *pebble.Batch) error { return SetConfState(b, cs) })
	hs := &raftpb.HardState{Term: proto.Uint64(4), Vote: proto.Uint64(3), Commit: proto.Uint64(14)}
	mustSave(t, l, nil, ents(1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2))
	mustSave(t, l, hs, ents(8, 3, 3, 4, 4, 4, 4, 4, 4, 4)) // overwrites 8..10
	if err := l.CreateSnapshot(12, cs, 4); err != nil {
		t.Fatal(err)
	}
	wantTerms := map[uint64]uint64{8: 3, 9: 3, 10: 4, 11: 4, 12: 4, 13: 4, 14: 4, 15: 4, 16: 4}
	want, err := l.Entries(9, 17, math.MaxUint64)
	if err != nil {
		t.Fatal(err)
	}

	te.reopen()
	r := mustOpenRaftLog(t, te.Engine)
	checkBounds(t, r, 9, 16)
	for i, term := range wantTerms {
		checkTerm(t, r, i, term, nil)
	}
	checkTerm(t, r, 7, 0, raft.ErrCompacted)
	checkEntries(t, r, 9, 17, math.MaxUint64, want, nil)
	gotHS, gotCS, err := r.InitialState()
	if err != nil || !proto.Equal(gotHS, hs) || !proto.Equal(gotCS, cs) {
		t.Errorf("InitialState() = %v, %v, %v; want %v, %v", gotHS, gotCS, err, hs, cs)
	}
	snap, err := r.Snapshot()
	wantMeta := &raftpb.SnapshotMetadata{Index: proto.Uint64(12), Term: proto.Uint64(4), ConfState: cs}
	if err != nil || !proto.Equal(snap.GetMetadata(), wantMeta) {
		t.Errorf("Snapshot() = %v, %v; want %v", snap, err, wantMeta)
	}
}

func TestRaftLogOpenRecoversAppliedBeyondLog(t *testing.T) {
	te := newTestEngine(t)
	l := mustOpenRaftLog(t, te.Engine)
	mustSave(t, l, &raftpb.HardState{Term: proto.Uint64(3), Vote: proto.Uint64(1), Commit: proto.Uint64(8)},
		ents(1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3))

	// Applied within the log: nothing to recover.
	commit(t, te.Engine, func(b *pebble.Batch) error { return SetApplied(b, 8, 3) })
	r := mustOpenRaftLog(t, te.Engine)
	checkBounds(t, r, 1, 10)
	if _, err := r.Snapshot(); !errors.Is(err, raft.ErrSnapshotTemporarilyUnavailable) {
		t.Errorf("Snapshot() = %v, want none", err)
	}

	// A snapshot's state was ingested (applied 25 in term 4), but the crash came before the log
	// was reset.
	cs := &raftpb.ConfState{Voters: []uint64{1, 2, 3}}
	commit(t, te.Engine, func(b *pebble.Batch) error {
		if err := SetConfState(b, cs); err != nil {
			return err
		}
		return SetApplied(b, 25, 4)
	})
	check := func(l *RaftLog) {
		t.Helper()
		checkBounds(t, l, 26, 25)
		checkTerm(t, l, 25, 4, nil)
		checkTerm(t, l, 10, 0, raft.ErrCompacted)
		checkEntries(t, l, 26, 27, math.MaxUint64, nil, raft.ErrUnavailable)
		wantHS := &raftpb.HardState{Term: proto.Uint64(3), Vote: proto.Uint64(1), Commit: proto.Uint64(25)}
		if got := l.HardState(); !proto.Equal(got, wantHS) {
			t.Errorf("HardState() = %v, want %v", got, wantHS)
		}
		wantMeta := &raftpb.SnapshotMetadata{Index: proto.Uint64(25), Term: proto.Uint64(4), ConfState: cs}
		if snap, err := l.Snapshot(); err != nil || !proto.Equal(snap.GetMetadata(), wantMeta) {
			t.Errorf("Snapshot() = %v, %v; want %v", snap, err, wantMeta)
		}
		if got := l.SnapshotIndex(); got != 25 {
			t.Errorf("SnapshotIndex() = %d, want 25", got)
		}
	}
	r = mustOpenRaftLog(t, te.Engine)
	check(r)
	if got := storedEntryIndexes(t, te.Engine); len(got) != 0 {
		t.Errorf("stored entries after recovery = %v, want none", got)
	}
	// The reset is durable: a restart finds the same log without recovering again.
	te.reopen()
	r = mustOpenRaftLog(t, te.Engine)
	check(r)
	mustSave(t, r, nil, ents(26, 4, 5))
	checkBounds(t, r, 26, 27)
	checkEntries(t, r, 26, 28, math.MaxUint64, ents(26, 4, 5), nil)
}

func TestRaftLogCorruptRecords(t *testing.T) {
	openErr := func(e *Engine) error {
		_, err := OpenRaftLog(e)
		return err
	}
	initialStateErr := func(e *Engine) error {
		l, err := OpenRaftLog(e)
		if err != nil {
			return err
		}
		_, _, err = l.InitialState()
		return err
	}
	for _, tc := range []struct {
		name  string
		key   []byte
		val   []byte
		check func(*Engine) error
	}{
		{"hard state", keyHardState, []byte{0xff, 0xff}, openErr},
		{"snapshot metadata", keySnapMeta, []byte{0x0a, 0x7f}, openErr},
		{"truncated state", keyTruncated, []byte{1, 2, 3}, openErr},
		{"entry", entryKey(1), []byte{0xff}, openErr},
		{"applied", keyApplied, []byte{1}, openErr},
		{"conf state", keyConfState, []byte{0xff, 0x01}, initialStateErr},
	} {
		t.Run(tc.name, func(t *testing.T) {
			te := newTestEngine(t)
			commit(t, te.Engine, func(b *pebble.Batch) error { return b.Set(tc.key, tc.val, nil) })
			if err := tc.check(te.Engine); !errors.Is(err, ErrCorrupt) {
				t.Errorf("corrupt %s: error %v, want ErrCorrupt", tc.name, err)
			}
		})
	}
	t.Run("gap", func(t *testing.T) {
		te := newTestEngine(t)
		l := mustOpenRaftLog(t, te.Engine)
		mustSave(t, l, nil, ents(1, 1, 1, 1))
		commit(t, te.Engine, func(b *pebble.Batch) error { return b.Delete(entryKey(2), nil) })
		if _, err := OpenRaftLog(te.Engine); !errors.Is(err, ErrCorrupt) {
			t.Errorf("OpenRaftLog with a gap = %v, want ErrCorrupt", err)
		}
	})
}
