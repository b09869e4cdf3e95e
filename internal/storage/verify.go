package storage

import (
	"encoding/binary"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
)

// Verify checks the whole database before a member serves from it and returns an error wrapping
// ErrCorrupt that names the data dir when anything is wrong.
//
// Pebble checksums every block but verifies a block only when it reads it, so damage in data
// nobody reads would go unnoticed until a request (or a compaction) touches it. Verify reads
// every key of every level once (Pebble's CheckLevels, which also checks the ordering
// invariants between levels), which verifies the checksum of every data block. That costs a
// sequential read of the whole store: see docs/operations-disk.md for measured figures.
//
// Open runs Verify; Ordo's own invariants between the raft log and the state machine are
// checked separately by CheckInvariants, which a member runs before it starts raft.
func (e *Engine) Verify() error {
	start := time.Now()
	var stats pebble.CheckLevelsStats
	if err := e.DB.CheckLevels(&stats); err != nil {
		return fmt.Errorf("data dir %q is damaged: %w: checksum or ordering check failed: %w", e.dir, ErrCorrupt, err)
	}
	e.lg.Info("verified data dir",
		zap.String("data-dir", e.dir),
		zap.Int64("keys", stats.NumPoints),
		zap.Int64("size-bytes", e.Size()),
		zap.Duration("took", time.Since(start)))
	return nil
}

// CheckInvariants returns an error wrapping ErrCorrupt that names the data dir if the records
// Ordo keeps contradict each other (see checkInvariants).
func (e *Engine) CheckInvariants() error {
	if err := checkInvariants(e.DB); err != nil {
		return fmt.Errorf("data dir %q is damaged: %w", e.dir, err)
	}
	return nil
}

// checkInvariants checks what must hold between the records Ordo keeps:
//   - a member id is recorded only together with a cluster id;
//   - the raft log is contiguous, above the truncation point;
//   - the hard state's commit index is within the log;
//   - the applied index is at or above the truncation point (the log is truncated only below
//     applied entries) and at or below the commit index and the last log index;
//   - once anything was applied, the raft configuration is recorded.
//
// A state machine ahead of the log is legitimate in exactly one case: a snapshot was
// installed and the member stopped before the log was reset after it (OpenRaftLog finishes
// that reset). Then the hard state and log lag behind the applied index, and the configuration
// of the snapshot must be present.
func checkInvariants(db *pebble.DB) error {
	localID, err := LocalID(db)
	if err != nil {
		return err
	}
	clusterID, err := ClusterID(db)
	if err != nil {
		return err
	}
	if localID != 0 && clusterID == 0 {
		return fmt.Errorf("%w: member id %x is recorded without a cluster id", ErrCorrupt, localID)
	}
	hs := &raftpb.HardState{}
	if v, err := getValue(db, keyHardState); err != nil {
		return err
	} else if v != nil {
		if err := proto.Unmarshal(v, hs); err != nil {
			return fmt.Errorf("%w: hard state: %v", ErrCorrupt, err)
		}
	}
	var truncIndex uint64
	if v, err := getValue(db, keyTruncated); err != nil {
		return err
	} else if v != nil {
		if len(v) != 16 {
			return fmt.Errorf("%w: truncated state has %d bytes", ErrCorrupt, len(v))
		}
		truncIndex = binary.BigEndian.Uint64(v)
	}
	last, err := lastLogIndex(db, truncIndex)
	if err != nil {
		return err
	}
	applied, _, err := Applied(db)
	if err != nil {
		return err
	}
	cs, err := ConfState(db)
	if err != nil {
		return err
	}
	if applied > 0 && len(cs.GetVoters()) == 0 && len(cs.GetLearners()) == 0 {
		return fmt.Errorf("%w: applied index %d but no raft configuration recorded", ErrCorrupt, applied)
	}
	if applied < truncIndex {
		return fmt.Errorf("%w: applied index %d is below the raft log truncation point %d", ErrCorrupt, applied, truncIndex)
	}
	if applied > last {
		// A snapshot installed just before a stop: see above.
		return nil
	}
	if hs.GetCommit() > last {
		return fmt.Errorf("%w: hard state commit index %d is beyond the last raft log index %d", ErrCorrupt, hs.GetCommit(), last)
	}
	if applied > hs.GetCommit() {
		return fmt.Errorf("%w: applied index %d is beyond the commit index %d", ErrCorrupt, applied, hs.GetCommit())
	}
	return nil
}

// checkOptionsFile checks the newest OPTIONS file of the Pebble database in dbDir before Pebble
// reads it. Pebble rewrites that file at every open and only compares a few of its settings,
// so damage to it would pass unnoticed; Ordo requires it to parse and to be complete (Pebble
// writes the section of the last level, L6, last).
func checkOptionsFile(fs vfs.FS, dbDir string) error {
	names, err := fs.List(dbDir)
	if err != nil {
		return fmt.Errorf("list %q: %w", dbDir, err)
	}
	newest := ""
	for _, n := range names {
		if strings.HasPrefix(n, "OPTIONS-") && n > newest {
			newest = n
		}
	}
	if newest == "" {
		return fmt.Errorf("%w: no OPTIONS file in %q", ErrCorrupt, dbDir)
	}
	path := fs.PathJoin(dbDir, newest)
	f, err := fs.Open(path)
	if err != nil {
		return fmt.Errorf("open %q: %w", path, err)
	}
	b, err := io.ReadAll(f)
	_ = f.Close()
	if err != nil {
		return fmt.Errorf("read %q: %w", path, err)
	}
	text := string(b)
	i := strings.LastIndex(text, "[Level \"6\"]")
	if !strings.Contains(text, "[Options]") || i < 0 || !strings.Contains(text[i:], "\n  target_file_size=") || !strings.HasSuffix(text, "\n") {
		return fmt.Errorf("%w: OPTIONS file %q is incomplete", ErrCorrupt, path)
	}
	var o pebble.Options
	if err := o.Parse(text, &pebble.ParseHooks{}); err != nil {
		return fmt.Errorf("%w: OPTIONS file %q: %v", ErrCorrupt, path, err)
	}
	return nil
}

// lastLogIndex returns the index of the last stored raft entry, checking that the stored
// entries are contiguous from truncIndex+1 on.
func lastLogIndex(db *pebble.DB, truncIndex uint64) (uint64, error) {
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: keyEntryPfx, UpperBound: entryKey(^uint64(0))})
	if err != nil {
		return 0, fmt.Errorf("iterate raft log: %w", err)
	}
	defer it.Close()
	last := truncIndex
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if len(k) != len(keyEntryPfx)+8 {
			return 0, fmt.Errorf("%w: raft entry key %x", ErrCorrupt, k)
		}
		i := binary.BigEndian.Uint64(k[len(keyEntryPfx):])
		if i <= truncIndex {
			return 0, fmt.Errorf("%w: raft entry %d at or below the truncation point %d", ErrCorrupt, i, truncIndex)
		}
		if i != last+1 {
			return 0, fmt.Errorf("%w: raft log gap: entry %d follows %d", ErrCorrupt, i, last)
		}
		last = i
	}
	if err := it.Error(); err != nil {
		return 0, fmt.Errorf("iterate raft log: %w", err)
	}
	return last, nil
}
