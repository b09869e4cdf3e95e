package mvcc

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/ordo-db/ordo/internal/storage"
)

// Second byte of every MVCC key: which table the key belongs to.
const (
	tagHistory byte = 'h'
	tagVersion byte = 'k'
	tagMeta    byte = 'm'
)

// Kinds of a key version, stored as the last byte of its version key so that scans can tell
// live values from tombstones without reading values.
const (
	kindTombstone byte = 0x00
	kindPut       byte = 0x01
)

// valueFormatV1 is the first byte of every put value (see doc.go).
const valueFormatV1 byte = 0x01

const (
	// revLen is the length of an encoded revision: main and sub, 8 bytes each.
	revLen = 16
	// suffixLen is the length of what follows the escaped user key and its terminator in a
	// version key: the inverted revision and the kind byte.
	suffixLen = revLen + 1
	// historyKeyLen is the length of a history key: prefix, tag, revision.
	historyKeyLen = 2 + revLen
)

var (
	versionsStart = []byte{storage.PrefixMVCC, tagVersion}
	versionsEnd   = []byte{storage.PrefixMVCC, tagVersion + 1}
	historyStart  = []byte{storage.PrefixMVCC, tagHistory}
	historyEnd    = []byte{storage.PrefixMVCC, tagHistory + 1}

	metaCompactKey  = []byte{storage.PrefixMVCC, tagMeta, 'c', 'o', 'm', 'p', 'a', 'c', 't'}
	metaFinishedKey = []byte{storage.PrefixMVCC, tagMeta, 'f', 'i', 'n', 'i', 's', 'h', 'e', 'd'}
)

// appendEscaped appends key to dst with every 0x00 byte replaced by 0x00 0xff. The escaping
// preserves byte order and, followed by the terminator 0x00 0x01, is prefix-free.
func appendEscaped(dst, key []byte) []byte {
	for {
		i := bytes.IndexByte(key, 0)
		if i < 0 {
			return append(dst, key...)
		}
		dst = append(dst, key[:i+1]...)
		dst = append(dst, 0xff)
		key = key[i+1:]
	}
}

// appendUnescaped appends the user key encoded in esc (without terminator) to dst.
func appendUnescaped(dst, esc []byte) ([]byte, error) {
	for {
		i := bytes.IndexByte(esc, 0)
		if i < 0 {
			return append(dst, esc...), nil
		}
		if i+1 >= len(esc) || esc[i+1] != 0xff {
			return dst, fmt.Errorf("mvcc: malformed escaped key %q", esc)
		}
		dst = append(dst, esc[:i+1]...)
		esc = esc[i+2:]
	}
}

// appendKeyStart appends the first version key bound of user key k: prefix, tag, escaped key.
// Every version key of every user key >= k is >= the result, every one of a key < k is below.
func appendKeyStart(dst, k []byte) []byte {
	dst = append(dst, storage.PrefixMVCC, tagVersion)
	return appendEscaped(dst, k)
}

// appendKeyPrefix appends the common prefix of all version keys of user key k.
func appendKeyPrefix(dst, k []byte) []byte {
	return append(appendKeyStart(dst, k), 0x00, 0x01)
}

// keyPrefixEnd turns a key prefix built by appendKeyPrefix into the smallest key above all
// versions of that user key (terminator 0x00 0x01 becomes 0x00 0x02), in place.
func keyPrefixEnd(prefix []byte) []byte {
	prefix[len(prefix)-1] = 0x02
	return prefix
}

// appendInvRev appends the inverted big-endian encoding of a revision so that newer
// revisions sort first.
func appendInvRev(dst []byte, main, sub int64) []byte {
	dst = binary.BigEndian.AppendUint64(dst, ^uint64(main))
	return binary.BigEndian.AppendUint64(dst, ^uint64(sub))
}

// appendInvMain appends only the inverted main revision: as a seek key after a key prefix it
// sorts before every version with that main revision, so SeekGE lands on the newest version
// whose main revision is <= main.
func appendInvMain(dst []byte, main int64) []byte {
	return binary.BigEndian.AppendUint64(dst, ^uint64(main))
}

// appendVersionKey appends the full version key of (k, main, sub, kind).
func appendVersionKey(dst, k []byte, main, sub int64, kind byte) []byte {
	dst = appendKeyPrefix(dst, k)
	dst = appendInvRev(dst, main, sub)
	return append(dst, kind)
}

// versionKey is a decoded view of a version key. Slices alias the encoded key.
type versionKey struct {
	prefix []byte // prefix, tag, escaped user key and terminator
	main   int64
	sub    int64
	kind   byte
}

// parseVersionKey decodes a version key without copying.
func parseVersionKey(k []byte) (versionKey, error) {
	n := len(k) - suffixLen
	if n < 4 || k[0] != storage.PrefixMVCC || k[1] != tagVersion || k[n-2] != 0x00 || k[n-1] != 0x01 {
		return versionKey{}, fmt.Errorf("mvcc: malformed version key %q", k)
	}
	return versionKey{
		prefix: k[:n],
		main:   int64(^binary.BigEndian.Uint64(k[n:])),
		sub:    int64(^binary.BigEndian.Uint64(k[n+8:])),
		kind:   k[len(k)-1],
	}, nil
}

// escapedUserKey returns the escaped user key of a version key prefix.
func escapedUserKey(prefix []byte) []byte {
	return prefix[2 : len(prefix)-2]
}

// hasKeyPrefix reports whether version key k belongs to the user key whose prefix is given.
func hasKeyPrefix(k, prefix []byte) bool {
	return len(k) == len(prefix)+suffixLen && bytes.Equal(k[:len(prefix)], prefix)
}

// appendHistoryKey appends the history key of revision (main, sub).
func appendHistoryKey(dst []byte, main, sub int64) []byte {
	dst = append(dst, storage.PrefixMVCC, tagHistory)
	dst = binary.BigEndian.AppendUint64(dst, uint64(main))
	return binary.BigEndian.AppendUint64(dst, uint64(sub))
}

// parseHistoryKey decodes a history key.
func parseHistoryKey(k []byte) (main, sub int64, err error) {
	if len(k) != historyKeyLen || k[0] != storage.PrefixMVCC || k[1] != tagHistory {
		return 0, 0, fmt.Errorf("mvcc: malformed history key %q", k)
	}
	return int64(binary.BigEndian.Uint64(k[2:])), int64(binary.BigEndian.Uint64(k[10:])), nil
}

// appendPutValue appends the value of a put version.
func appendPutValue(dst []byte, create, version, lease int64, value []byte) []byte {
	dst = append(dst, valueFormatV1)
	dst = binary.AppendUvarint(dst, uint64(create))
	dst = binary.AppendUvarint(dst, uint64(version))
	dst = binary.AppendUvarint(dst, uint64(lease))
	return append(dst, value...)
}

// putValue is a decoded put value. value aliases the encoded bytes.
type putValue struct {
	create, version, lease int64
	value                  []byte
}

// parsePutValue decodes a put value without copying.
func parsePutValue(v []byte) (putValue, error) {
	if len(v) == 0 || v[0] != valueFormatV1 {
		return putValue{}, fmt.Errorf("mvcc: malformed value (format byte)")
	}
	v = v[1:]
	var fields [3]uint64
	for i := range fields {
		x, n := binary.Uvarint(v)
		if n <= 0 {
			return putValue{}, fmt.Errorf("mvcc: malformed value (field %d)", i)
		}
		fields[i] = x
		v = v[n:]
	}
	return putValue{
		create:  int64(fields[0]),
		version: int64(fields[1]),
		lease:   int64(fields[2]),
		value:   v,
	}, nil
}

// appendMetaRev appends the encoding of a revision stored in the meta table.
func appendMetaRev(dst []byte, rev int64) []byte {
	return binary.BigEndian.AppendUint64(dst, uint64(rev))
}

// parseMetaRev decodes a revision stored in the meta table.
func parseMetaRev(v []byte) (int64, error) {
	if len(v) != 8 {
		return 0, fmt.Errorf("mvcc: malformed meta revision (%d bytes)", len(v))
	}
	return int64(binary.BigEndian.Uint64(v)), nil
}

// rangeBounds computes the iterator bounds of the etcd range [key, end) over version keys,
// appending them to lo and hi. ok is false if the range is empty.
//
// end == nil is the single key; an empty non-nil end or end == "\x00" means every key >= key.
func rangeBounds(lo, hi, key, end []byte) (lower, upper []byte, ok bool) {
	switch {
	case end == nil:
		lower = appendKeyPrefix(lo, key)
		upper = keyPrefixEnd(appendKeyPrefix(hi, key))
	case len(end) == 0 || (len(end) == 1 && end[0] == 0):
		lower = appendKeyStart(lo, key)
		upper = append(hi, versionsEnd...)
	default:
		if bytes.Compare(key, end) >= 0 {
			return lo, hi, false
		}
		lower = appendKeyStart(lo, key)
		upper = appendKeyStart(hi, end)
	}
	return lower, upper, true
}
