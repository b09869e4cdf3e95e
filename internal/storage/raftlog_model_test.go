package storage

import (
	"errors"
	"math"
	"math/rand/v2"
	"strconv"
	"testing"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// TestRaftLogMatchesMemoryStorage runs random appends (with conflicting overwrites), snapshots
// with compaction, incoming snapshots and reopens against both RaftLog and raft.MemoryStorage,
// and checks after every step that every query agrees.
func TestRaftLogMatchesMemoryStorage(t *testing.T) {
	t.Parallel()
	steps := 300
	if testing.Short() {
		steps = 100
	}
	// "unlimited" reads whole ranges only; "size-limited" also passes maxSize values that cut
	// ranges short, so the two tell a size rule mismatch from a structural one.
	for _, mode := range []struct {
		name    string
		limited bool
	}{{"unlimited", false}, {"size-limited", true}} {
		t.Run(mode.name, func(t *testing.T) {
			for _, seed := range []uint64{1, 2, 3} {
				t.Run("seed"+strconv.FormatUint(seed, 10), func(t *testing.T) {
					runRaftLogModel(t, seed, steps, mode.limited)
				})
			}
		})
	}
}

func runRaftLogModel(t *testing.T, seed uint64, steps int, limited bool) {
	rng := rand.New(rand.NewPCG(seed, 0x0d0))
	te := newTestEngine(t)
	l := mustOpenRaftLog(t, te.Engine)
	ms := raft.NewMemoryStorage()
	term := uint64(1)
	var snapIndex uint64 // the newest snapshot; entries at or below it are committed
	cs := &raftpb.ConfState{Voters: []uint64{1, 2, 3}}
	var history []string

	fail := func(format string, args ...any) {
		t.Helper()
		n := len(history)
		t.Fatalf("seed %d after steps %v: "+format, append([]any{seed, history[max(0, n-8):]}, args...)...)
	}
	msFirst := func() uint64 { f, _ := ms.FirstIndex(); return f }
	msLast := func() uint64 { l, _ := ms.LastIndex(); return l }

	for step := 0; step < steps; step++ {
		first, last := msFirst(), msLast()
		switch op := rng.IntN(100); {
		case op < 60: // append, overwriting a suffix when starting inside the log
			lo := max(first, snapIndex+1)
			start := lo + uint64(rng.IntN(int(last+2-lo)))
			if start <= last || rng.IntN(4) == 0 {
				term++ // a conflicting suffix comes from a newer leader
			}
			n := 1 + rng.IntN(8)
			batch := make([]*raftpb.Entry, n)
			for i := range batch {
				if rng.IntN(10) == 0 {
					term++
				}
				batch[i] = entry(start+uint64(i), term, rng.IntN(300))
			}
			var hs *raftpb.HardState
			if rng.IntN(3) == 0 {
				hs = &raftpb.HardState{Term: proto.Uint64(term), Vote: proto.Uint64(uint64(rng.IntN(3) + 1)), Commit: proto.Uint64(snapIndex)}
				if err := ms.SetHardState(hs); err != nil {
					fail("MemoryStorage.SetHardState: %v", err)
				}
			}
			history = append(history, "append"+span(batch))
			if err := ms.Append(batch); err != nil {
				fail("MemoryStorage.Append: %v", err)
			}
			if err := l.Save(hs, batch); err != nil {
				fail("Save%s: %v", span(batch), err)
			}
			if hs != nil && !proto.Equal(l.HardState(), hs) {
				fail("HardState() = %v, want %v", l.HardState(), hs)
			}
		case op < 80: // snapshot and compact, as the apply loop does
			if last <= snapIndex {
				continue
			}
			i := snapIndex + 1 + uint64(rng.IntN(int(last-snapIndex)))
			keep := uint64(rng.IntN(8))
			history = append(history, "snapshot@"+itoa(i)+"/keep"+itoa(keep))
			if _, err := ms.CreateSnapshot(i, cs, nil); err != nil {
				fail("MemoryStorage.CreateSnapshot: %v", err)
			}
			if i > keep && i-keep >= first {
				if err := ms.Compact(i - keep); err != nil {
					fail("MemoryStorage.Compact: %v", err)
				}
			}
			if err := l.CreateSnapshot(i, cs, keep); err != nil {
				fail("CreateSnapshot(%d, keep %d): %v", i, keep, err)
			}
			snapIndex = i
			// Stale requests (down to the truncated index) fail alike.
			trunc, _ := l.FirstIndex()
			trunc--
			stale := trunc + uint64(rng.IntN(int(i-trunc+1)))
			if err := l.CreateSnapshot(stale, cs, keep); !errors.Is(err, raft.ErrSnapOutOfDate) {
				fail("CreateSnapshot(%d) below snapshot %d = %v, want ErrSnapOutOfDate", stale, i, err)
			}
		case op < 85: // a snapshot from the leader replaces the log
			term++
			index := snapIndex + 1 + uint64(rng.IntN(int(last-snapIndex)+10))
			meta := &raftpb.SnapshotMetadata{Index: proto.Uint64(index), Term: proto.Uint64(term), ConfState: cs}
			history = append(history, "apply-snapshot@"+itoa(index))
			if err := ms.ApplySnapshot(&raftpb.Snapshot{Metadata: meta}); err != nil {
				fail("MemoryStorage.ApplySnapshot: %v", err)
			}
			if err := l.ApplySnapshot(meta); err != nil {
				fail("ApplySnapshot(%d): %v", index, err)
			}
			snapIndex = index
		case op < 95: // restart the log (empty cache)
			history = append(history, "reopen-log")
			l = mustOpenRaftLog(t, te.Engine)
		default: // restart the engine
			history = append(history, "reopen-engine")
			te.reopen()
			l = mustOpenRaftLog(t, te.Engine)
		}
		checkAgainstModel(t, rng, l, ms, limited, fail)
	}
}

func itoa(i uint64) string { return strconv.FormatUint(i, 10) }

func checkAgainstModel(t *testing.T, rng *rand.Rand, l *RaftLog, ms *raft.MemoryStorage, limited bool, fail func(string, ...any)) {
	t.Helper()
	wantFirst, _ := ms.FirstIndex()
	wantLast, _ := ms.LastIndex()
	first, err := l.FirstIndex()
	if err != nil || first != wantFirst {
		fail("FirstIndex() = %d, %v; want %d", first, err, wantFirst)
	}
	last, err := l.LastIndex()
	if err != nil || last != wantLast {
		fail("LastIndex() = %d, %v; want %d", last, err, wantLast)
	}
	for i := max(first, 2) - 2; i <= last+1; i++ {
		want, wantErr := ms.Term(i)
		got, err := l.Term(i)
		if got != want || !errors.Is(err, wantErr) || (wantErr == nil) != (err == nil) {
			fail("Term(%d) = %d, %v; want %d, %v", i, got, err, want, wantErr)
		}
	}
	for q := 0; q < 6 && last >= first; q++ {
		lo := first - 1 + uint64(rng.IntN(int(last-first+2)))
		hi := lo + 1 + uint64(rng.IntN(int(last+1-lo)))
		maxSize := uint64(math.MaxUint64)
		if limited {
			switch rng.IntN(3) {
			case 0:
				maxSize = uint64(rng.IntN(64))
			case 1:
				maxSize = uint64(rng.IntN(2000))
			}
		}
		if lo == 0 {
			lo = 1
		}
		if hi <= lo {
			continue
		}
		want, wantErr := ms.Entries(lo, hi, maxSize)
		got, err := l.Entries(lo, hi, maxSize)
		if !errors.Is(err, wantErr) || (wantErr == nil) != (err == nil) || !entriesEqual(got, want) {
			fail("Entries(%d, %d, %d) = %s, %v; want %s, %v", lo, hi, maxSize, describe(got), err, describe(want), wantErr)
		}
	}
	wantSnap, _ := ms.Snapshot()
	snap, err := l.Snapshot()
	if wantSnap.GetMetadata().GetIndex() == 0 {
		if !errors.Is(err, raft.ErrSnapshotTemporarilyUnavailable) {
			fail("Snapshot() = %v, %v; want none yet", snap, err)
		}
	} else if err != nil || snap.GetMetadata().GetIndex() != wantSnap.GetMetadata().GetIndex() ||
		snap.GetMetadata().GetTerm() != wantSnap.GetMetadata().GetTerm() ||
		snap.GetMetadata().GetConfState().Equivalent(wantSnap.GetMetadata().GetConfState()) != nil {
		fail("Snapshot() = %v, %v; want %v", snap, err, wantSnap)
	}
}
