package mvcc

import (
	"bytes"
	"context"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

var (
	// compactChunk is how many history entries one physical compaction batch processes.
	compactChunk = 1000
	// compactPointDeletes is how many obsolete versions of one key compaction deletes with
	// point deletes before it covers the rest with one range deletion.
	compactPointDeletes = 16
)

// Compact physically removes what the scheduled compaction at rev made unreadable: for every
// key changed since the last finished compaction, every version superseded at or before rev
// and the newest version <= rev if it is a tombstone, and the history below rev (the
// history of rev itself stays so that Events can start at the compact revision).
//
// It works through the history in chunks, each committed in its own batch, and records the
// finished revision at the end, so it is resumable after a crash (see PendingCompaction) and
// never holds the key set in memory. It runs concurrently with reads and with the writer: it
// only removes versions no read at a revision >= the compact revision needs, and all
// versions of one key are removed in the same batch. rev must not be above the published
// compact revision (ErrNotScheduled); a rev whose compaction already finished is a no-op.
func (s *Store) Compact(ctx context.Context, rev int64) error {
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	finished := s.finishedRev.Load()
	if rev <= finished {
		return nil
	}
	if c := s.compactRev.Load(); rev > c {
		return fmt.Errorf("mvcc: compact at revision %d, compact revision is %d: %w", rev, c, ErrNotScheduled)
	}
	c := compactor{
		db:   s.db,
		rev:  rev,
		end:  appendHistoryKey(nil, rev+1, 0),
		keep: appendHistoryKey(nil, rev, 0),
		seen: make(map[string]struct{}, compactChunk),
	}
	start := appendHistoryKey(nil, finished, 0)
	for start != nil {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("mvcc: compact at revision %d: %w", rev, err)
		}
		var err error
		if start, err = c.chunk(start); err != nil {
			return fmt.Errorf("mvcc: compact at revision %d: %w", rev, err)
		}
	}
	b := s.db.NewBatch()
	defer b.Close()
	if err := b.Set(metaFinishedKey, appendMetaRev(nil, rev), nil); err != nil {
		return fmt.Errorf("mvcc: compact at revision %d: write finished revision: %w", rev, err)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("mvcc: compact at revision %d: commit finished revision: %w", rev, err)
	}
	s.finishedRev.Store(rev)
	return nil
}

// compactor holds the state of one physical compaction.
type compactor struct {
	db   *pebble.DB
	rev  int64
	end  []byte // history bound: first key above rev
	keep []byte // history of rev and above is kept
	seen map[string]struct{}
	pfx  []byte
	seek []byte
}

// chunk processes up to compactChunk history entries from start in one committed batch and
// returns where the next chunk starts, nil when done.
func (c *compactor) chunk(start []byte) (next []byte, err error) {
	hit, err := c.db.NewIter(&pebble.IterOptions{LowerBound: start, UpperBound: c.end})
	if err != nil {
		return nil, fmt.Errorf("new iterator: %w", err)
	}
	defer closeIter(hit, &err)
	vit, err := c.db.NewIter(&pebble.IterOptions{LowerBound: versionsStart, UpperBound: versionsEnd})
	if err != nil {
		return nil, fmt.Errorf("new iterator: %w", err)
	}
	defer closeIter(vit, &err)
	b := c.db.NewBatch()
	defer b.Close()
	clear(c.seen)

	n := 0
	valid := hit.First()
	for ; valid && n < compactChunk; valid = hit.Next() {
		n++
		hv, err := hit.ValueAndErr()
		if err != nil {
			return nil, fmt.Errorf("read history: %w", err)
		}
		if len(hv) < 1 {
			return nil, fmt.Errorf("malformed history entry %q", hit.Key())
		}
		userKey := hv[1:]
		if _, ok := c.seen[string(userKey)]; ok {
			continue
		}
		c.seen[string(userKey)] = struct{}{}
		if err := c.compactKey(vit, b, userKey); err != nil {
			return nil, err
		}
	}
	if err := hit.Error(); err != nil {
		return nil, fmt.Errorf("iterate history: %w", err)
	}
	if valid {
		next = bytes.Clone(hit.Key())
	}
	// Drop the processed history below rev with one range deletion.
	delEnd := c.keep
	if next != nil && bytes.Compare(next, delEnd) < 0 {
		delEnd = next
	}
	if bytes.Compare(start, delEnd) < 0 {
		if err := b.DeleteRange(start, delEnd, nil); err != nil {
			return nil, fmt.Errorf("delete history: %w", err)
		}
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	return next, nil
}

// compactKey removes, in b, the versions of userKey that compaction at c.rev makes
// obsolete: all versions older than the newest one <= rev, and that one too if it is a
// tombstone.
func (c *compactor) compactKey(vit *pebble.Iterator, b *pebble.Batch, userKey []byte) error {
	c.pfx = appendKeyPrefix(c.pfx[:0], userKey)
	c.seek = appendInvMain(append(c.seek[:0], c.pfx...), c.rev)
	valid := vit.SeekGE(c.seek)
	if valid && hasKeyPrefix(vit.Key(), c.pfx) {
		vk, err := parseVersionKey(vit.Key())
		if err != nil {
			return err
		}
		if vk.kind == kindPut {
			valid = vit.Next()
		}
		for i := 0; valid && hasKeyPrefix(vit.Key(), c.pfx); i++ {
			if i == compactPointDeletes {
				// Every remaining version of the key is obsolete: versions written
				// concurrently are newer and sort before this one.
				if err := b.DeleteRange(vit.Key(), keyPrefixEnd(c.pfx), nil); err != nil {
					return fmt.Errorf("delete versions of %q: %w", userKey, err)
				}
				break
			}
			if err := b.Delete(vit.Key(), nil); err != nil {
				return fmt.Errorf("delete version of %q: %w", userKey, err)
			}
			valid = vit.Next()
		}
	}
	if err := vit.Error(); err != nil {
		return fmt.Errorf("iterate versions of %q: %w", userKey, err)
	}
	return nil
}
