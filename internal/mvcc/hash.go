package mvcc

import (
	"bytes"
	"context"
	"fmt"
	"hash/crc32"

	"github.com/cockroachdb/pebble/v2"
)

// KeyValueHash is the outcome of HashKV, as in etcd's HashKV response.
type KeyValueHash struct {
	// Hash is a CRC-32C over the key versions that reads at revisions in
	// [CompactRevision, Revision] can see.
	Hash uint32
	// CompactRevision is the compact revision the hash was computed under.
	CompactRevision int64
	// Revision is the revision the hash covers up to.
	Revision int64
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// HashKV hashes every key version with revision <= rev (0: the view's revision) that
// compaction at the view's compact revision keeps: versions above the compact revision,
// and each key's newest version at or below it if that is a put. Members with the same
// history therefore get the same hash whether or not physical compaction has run. It
// fails with ErrCompacted below the compact revision and ErrFutureRev above the view's
// revision. It scans every key version.
func (v *ReadView) HashKV(ctx context.Context, rev int64) (KeyValueHash, error) {
	rev, err := checkRev(rev, v.rev, v.compactRev)
	if err != nil {
		return KeyValueHash{}, err
	}
	it, err := v.lock(versionsStart, versionsEnd)
	if err != nil {
		return KeyValueHash{}, err
	}
	h, err := hashVersions(ctx, it, rev, v.compactRev)
	v.mu.Unlock()
	if err != nil {
		return KeyValueHash{}, err
	}
	return KeyValueHash{Hash: h, CompactRevision: v.compactRev, Revision: rev}, nil
}

func hashVersions(ctx context.Context, it *pebble.Iterator, rev, compactRev int64) (uint32, error) {
	h := crc32.New(castagnoli)
	var (
		pfx      []byte
		seenOld  bool // the current key's newest version <= compactRev was seen
		nVisited int
	)
	for valid := it.First(); valid; valid = it.Next() {
		if nVisited++; nVisited%(16*ctxCheckEvery) == 0 {
			if err := ctx.Err(); err != nil {
				return 0, fmt.Errorf("mvcc: hash: %w", err)
			}
		}
		k := it.Key()
		vk, err := parseVersionKey(k)
		if err != nil {
			return 0, err
		}
		if !bytes.Equal(vk.prefix, pfx) {
			pfx = append(pfx[:0], vk.prefix...)
			seenOld = false
		}
		if vk.main > rev {
			continue
		}
		if vk.main <= compactRev {
			if seenOld {
				continue
			}
			seenOld = true
			if vk.kind != kindPut {
				continue
			}
		}
		val, err := it.ValueAndErr()
		if err != nil {
			return 0, fmt.Errorf("mvcc: hash: read value: %w", err)
		}
		// hash.Hash.Write never fails.
		_, _ = h.Write(k)
		_, _ = h.Write(val)
	}
	if err := it.Error(); err != nil {
		return 0, fmt.Errorf("mvcc: hash: iterate: %w", err)
	}
	return h.Sum32(), nil
}
