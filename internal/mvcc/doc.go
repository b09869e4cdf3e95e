// Package mvcc implements etcd's revisioned key-value model (etcd v3 mvcc semantics) on the
// shared Pebble database, without an in-memory key index: the set of keys need not fit in
// memory, every read is served by Pebble iterators.
//
// # Revisions
//
// The store has one main revision. An empty store is at revision 1 (as in etcd), and every
// transaction that changes something consumes the next main revision; its changes get
// sub-revisions 0, 1, ... in order. A key's KeyValue carries create_revision (main revision
// of the put that started its current life), mod_revision (main revision of its last
// change), version (1 on creation, +1 per put) and lease. A delete writes a tombstone that
// ends the key's life; a put after it starts a new life at version 1.
//
// Reads name a revision between the compact revision and the current revision (0 = the
// current one). Compacting at C makes reads below C fail with ErrCompacted and then
// physically removes, for every key, every version superseded at or before C, and the
// newest version <= C if it is a tombstone. As in etcd, a store that was never compacted has
// compact revision -1, so the first compaction may be at revision 0 (a no-op apart from the
// compact revision) and later ones must be above the compact revision.
//
// # Key layout
//
// The package owns every key starting with storage.PrefixMVCC (0x03) and nothing else. The
// second byte selects a table:
//
//	0x03 'k' esc(key) 0x00 0x01 ^main(8) ^sub(8) kind   key versions
//	0x03 'h' main(8) sub(8)                              history by revision
//	0x03 'm' name                                        metadata
//
// Integers are big-endian; ^x is the bitwise complement, so newer revisions sort first.
//
// Key versions. esc(key) is the user key with every 0x00 byte replaced by 0x00 0xff; with
// the terminator 0x00 0x01 this is order-preserving and prefix-free, so all versions of a
// key are adjacent, keys sort in user key order, and [key, end) maps to the version-key
// range [0x03 'k' esc(key), 0x03 'k' esc(end)). Within a key the newest version comes
// first, so SeekGE(0x03 'k' esc(key) 0x00 0x01 ^R) lands on the newest version with main
// revision <= R: a read at a revision costs about one seek (or a Next) per distinct key.
// kind is 0x01 for a put and 0x00 for a tombstone, so scans and counts tell live keys
// from deleted ones without reading values. A put's value is
//
//	0x01 uvarint(create_revision) uvarint(version) uvarint(lease) value-bytes
//
// (mod_revision and key come from the version key); a tombstone's value is empty.
//
// History. Every change also writes 0x03 'h' main sub -> kind key. It lists the changes in
// revision order: compaction finds the keys changed since the previous compaction in it,
// and ReadView.Events replays changes from a revision (watch). A delete event is built
// from the history entry alone; a put event (and any event's PrevKV, the next older
// version) is read from the key versions.
//
// Metadata. 'm' "compact" holds the compact revision (also the scheduled physical
// compaction) and 'm' "finished" the revision through which physical compaction has
// completed; both are 8-byte big-endian revisions, absent meaning -1 (never compacted) and 0
// respectively. The current revision
// is not stored: it is the main revision of the newest history entry (1 if there is none).
//
// # Invariants
//
//   - Every main revision in (1, current] has at least one history entry, except revisions
//     below the compact revision whose history compaction removed; the history of the
//     compact revision itself is kept, so the newest entry always names the current
//     revision.
//   - Every version key has exactly one history entry with the same revision, unless
//     compaction removed the entry (revision below the compact revision) or the version
//     (superseded or tombstone at or below it).
//   - For revisions >= the compact revision, history entries and versions are complete:
//     compaction only removes versions with main revision <= compact revision that are
//     not the newest put of their key at or below it.
//   - Within one Pebble batch all versions of one key removed by one compaction are
//     removed together, so a reader never sees a key with a gap in its remaining
//     versions.
//
// # Hash
//
// ReadView.HashKV hashes the raw version keys and values that compaction at the compact
// revision keeps (versions above it, plus each key's newest put at or below it), so
// members with the same history agree whether or not physical compaction has run. History
// and metadata are not hashed.
//
// # Concurrency
//
// One goroutine (the apply loop) writes, through a Writer over an indexed batch it commits
// itself, then calls Store.Publish so readers see the new current and compact revisions.
// Readers take a ReadView (a Pebble iterator plus the revisions valid for it; the current
// revision is loaded before the iterator is created and the compact revision after, so a
// view never misses data a permitted read needs). Physical compaction (Store.Compact)
// commits its own batches concurrently with both; it runs only for a published compact
// revision and only removes what reads at or above it cannot see.
package mvcc
