package mvcc

import (
	"bytes"
	"context"
	"fmt"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// maxNexts is how many Next calls a scan tries to step over a key's other versions before
// it falls back to a seek. Compacted keys usually have a single version, so one Next
// normally reaches the next key. A Next costs well under a tenth of a seek, so keys with up
// to about ten versions are cheaper to step over than to seek past.
const maxNexts = 10

// ctxCheckEvery is how many keys a scan visits between checks of its context.
const ctxCheckEvery = 256

// scanner holds the reusable buffers of range scans. It is not safe for concurrent use.
type scanner struct {
	seek []byte // seek key
	pfx  []byte // copy of the current user key's version prefix
	lo   []byte // iterator lower bound
	hi   []byte // iterator upper bound
	opts pebble.IterOptions
}

var scannerPool = sync.Pool{New: func() any { return new(scanner) }}

func getScanner() *scanner { return scannerPool.Get().(*scanner) }

func putScanner(sc *scanner) {
	sc.opts = pebble.IterOptions{}
	scannerPool.Put(sc)
}

// checkRev resolves the revision a read at want is served at, given the current and
// compact revisions of the view.
func checkRev(want, cur, compact int64) (int64, error) {
	if want > cur {
		return 0, fmt.Errorf("mvcc: read at revision %d, current revision is %d: %w", want, cur, ErrFutureRev)
	}
	if want <= 0 {
		want = cur
	}
	if want < compact {
		return 0, fmt.Errorf("mvcc: read at revision %d, compacted at %d: %w", want, compact, ErrCompacted)
	}
	return want, nil
}

// rangeAt scans the live keys at revision rev in the range the iterator is bounded to.
// lower is the iterator's lower bound; single means the bounds enclose one user key.
func (sc *scanner) rangeAt(ctx context.Context, it *pebble.Iterator, lower []byte, single bool,
	rev int64, ro RangeOptions) (kvs []*mvccpb.KeyValue, count int64, err error) {
	var alloc kvAlloc
	switch {
	case single:
		alloc.hint = 1
	case ro.Limit > 0:
		alloc.hint = int(min(ro.Limit, maxKVChunk))
	}
	seek := lower
	if single {
		sc.seek = appendInvMain(append(sc.seek[:0], lower...), rev)
		seek = sc.seek
	}
	valid := it.SeekGE(seek)
	for n := 1; valid; n++ {
		if n%ctxCheckEvery == 0 {
			if err := ctx.Err(); err != nil {
				return nil, 0, fmt.Errorf("mvcc: range: %w", err)
			}
		}
		vk, err := parseVersionKey(it.Key())
		if err != nil {
			return nil, 0, err
		}
		if vk.main > rev {
			// Step to the newest version <= rev of this key, if any.
			valid = sc.seekRev(it, vk.prefix, rev)
			if !valid {
				break
			}
			if vk, err = parseVersionKey(it.Key()); err != nil {
				return nil, 0, err
			}
			if !bytes.Equal(vk.prefix, sc.pfx) {
				// The key has no version at rev; the iterator is on the next key.
				continue
			}
		}
		if vk.kind == kindPut {
			count++
			if !ro.CountOnly && (ro.Limit <= 0 || int64(len(kvs)) < ro.Limit) {
				kv, err := alloc.decode(it, vk, ro.KeysOnly)
				if err != nil {
					return nil, 0, err
				}
				kvs = append(kvs, kv)
				if ro.SkipTotalCount && int64(len(kvs)) == ro.Limit {
					return kvs, count, nil
				}
			}
		}
		if single {
			break
		}
		valid = sc.nextKey(it, vk.prefix)
	}
	if err := it.Error(); err != nil {
		return nil, 0, fmt.Errorf("mvcc: range: iterate: %w", err)
	}
	if ro.SkipTotalCount && !ro.CountOnly {
		count = int64(len(kvs))
	}
	return kvs, count, nil
}

// seekRev moves the iterator, positioned on a version of the user key with the given
// prefix, to that key's newest version <= rev. It leaves a copy of the prefix in sc.pfx;
// the caller compares the new position's prefix with it to learn whether the key has such
// a version.
func (sc *scanner) seekRev(it *pebble.Iterator, prefix []byte, rev int64) bool {
	sc.pfx = append(sc.pfx[:0], prefix...)
	for range maxNexts {
		if !it.Next() {
			return false
		}
		k := it.Key()
		if !hasKeyPrefix(k, sc.pfx) {
			return true
		}
		if vk, err := parseVersionKey(k); err != nil || vk.main <= rev {
			// On a parse error the caller parses again and reports it.
			return true
		}
	}
	sc.seek = appendInvMain(append(sc.seek[:0], sc.pfx...), rev)
	return it.SeekGE(sc.seek)
}

// nextKey moves the iterator, positioned on a version of the user key with the given
// prefix, to the newest version of the next user key.
func (sc *scanner) nextKey(it *pebble.Iterator, prefix []byte) bool {
	sc.pfx = append(sc.pfx[:0], prefix...)
	for range maxNexts {
		if !it.Next() {
			return false
		}
		if !hasKeyPrefix(it.Key(), sc.pfx) {
			return true
		}
	}
	sc.seek = keyPrefixEnd(append(sc.seek[:0], sc.pfx...))
	return it.SeekGE(sc.seek)
}

// kvAlloc hands out KeyValues and their bytes from chunks, to avoid allocating each one
// separately. Everything it hands out stays valid (and is never reused).
type kvAlloc struct {
	hint int // size of the first chunk of KeyValues
	kvs  []mvccpb.KeyValue
	buf  []byte
}

const (
	maxKVChunk   = 256
	minByteChunk = 256
	maxByteChunk = 64 << 10
)

func (a *kvAlloc) newKV() *mvccpb.KeyValue {
	if len(a.kvs) == 0 {
		n := a.hint
		if n <= 0 {
			n = 8
		}
		a.kvs = make([]mvccpb.KeyValue, n)
		a.hint = min(2*n, maxKVChunk)
	}
	kv := &a.kvs[0]
	a.kvs = a.kvs[1:]
	return kv
}

// bytes returns a zero-length slice with capacity n carved from the current chunk.
func (a *kvAlloc) bytes(n int) []byte {
	if n > cap(a.buf)-len(a.buf) {
		if n >= maxByteChunk/4 {
			return make([]byte, 0, n)
		}
		size := max(min(2*cap(a.buf), maxByteChunk), minByteChunk, n)
		a.buf = make([]byte, 0, size)
	}
	start := len(a.buf)
	a.buf = a.buf[:start+n]
	return a.buf[start : start : start+n]
}

// userKey decodes the user key of a version prefix into the arena.
func (a *kvAlloc) userKey(prefix []byte) ([]byte, error) {
	esc := escapedUserKey(prefix)
	return appendUnescaped(a.bytes(len(esc)), esc)
}

// decode builds the KeyValue of the put version the iterator is positioned on.
func (a *kvAlloc) decode(it *pebble.Iterator, vk versionKey, keysOnly bool) (*mvccpb.KeyValue, error) {
	raw, err := it.ValueAndErr()
	if err != nil {
		return nil, fmt.Errorf("mvcc: read value: %w", err)
	}
	pv, err := parsePutValue(raw)
	if err != nil {
		return nil, fmt.Errorf("mvcc: version %d/%d of %q: %w", vk.main, vk.sub, escapedUserKey(vk.prefix), err)
	}
	key, err := a.userKey(vk.prefix)
	if err != nil {
		return nil, err
	}
	kv := a.newKV()
	kv.Key = key
	kv.CreateRevision = pv.create
	kv.ModRevision = vk.main
	kv.Version = pv.version
	kv.Lease = pv.lease
	if !keysOnly && len(pv.value) > 0 {
		kv.Value = append(a.bytes(len(pv.value)), pv.value...)
	}
	return kv, nil
}
