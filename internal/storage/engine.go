package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
)

// ErrCorrupt marks data in the data dir that cannot be what Ordo wrote.
var ErrCorrupt = errors.New("storage: corrupt data")

// Meta keys (prefix 0x02). They are state-machine state, written by the apply loop in the same
// batch as the changes they describe.
var (
	keyApplied   = []byte{PrefixMeta, 'a'} // applied index (8) + its term (8)
	keyConfState = []byte{PrefixMeta, 'c'} // raftpb.ConfState after the applied index
	keyCluster   = []byte{PrefixMeta, 'i'} // cluster id (8)
	keyMemberPfx = []byte{PrefixMeta, 'm'} // + member id (8) -> Member
)

// blockCacheBytes sizes Pebble's block cache. Pebble's default is small enough that the
// memtable reservations take all of it.
const blockCacheBytes = 256 << 20

// Engine is a member's one Pebble database.
type Engine struct {
	DB   *pebble.DB
	dir  string
	opts *pebble.Options
	lg   *zap.Logger

	// mu guards closed: Size may be called by a metrics scrape still running while the
	// member shuts down, and Pebble must not be used after Close.
	mu     sync.RWMutex
	closed bool
}

// Options tune how an Engine is opened. The zero value is what a member uses.
type Options struct {
	// FS is the filesystem Pebble works on (vfs.Default when nil). Tests wrap it to inject
	// faults.
	FS vfs.FS
	// SkipVerify skips the full verification pass over the data dir (see Verify).
	SkipVerify bool
}

// Open opens (creating if needed) the Pebble database in dir/db and verifies it (see Verify).
func Open(dir string, lg *zap.Logger) (*Engine, error) {
	return OpenWithOptions(dir, lg, Options{})
}

// OpenWithOptions is Open with explicit options.
func OpenWithOptions(dir string, lg *zap.Logger, o Options) (*Engine, error) {
	fs := o.FS
	if fs == nil {
		fs = vfs.Default
	}
	if err := fs.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir %q: %w", dir, err)
	}
	dbDir := filepath.Join(dir, "db")
	fresh := false
	if _, err := fs.Stat(dbDir); errors.Is(err, os.ErrNotExist) {
		fresh = true
	}
	if !fresh {
		if err := checkOptionsFile(fs, dbDir); err != nil {
			return nil, fmt.Errorf("data dir %q is damaged: %w", dir, err)
		}
	}
	cache := pebble.NewCache(blockCacheBytes)
	defer cache.Unref() // the DB holds its own reference
	opts := &pebble.Options{
		FormatMajorVersion: pebble.FormatNewest,
		MemTableSize:       64 << 20,
		Cache:              cache,
		FS:                 fs,
		Logger:             pebbleLogger{s: lg.Sugar(), dir: dir},
		// An existing data dir must be complete: a missing MANIFEST or OPTIONS file is
		// damage, not a new database.
		ErrorIfNotExists: !fresh,
		EventListener: &pebble.EventListener{
			// Pebble's default stops the process on a checksum mismatch. The read that found
			// it fails with the error instead: Verify turns it into a startup error naming the
			// data dir, and a request that hits it later gets an error, never wrong data.
			DataCorruption: func(info pebble.DataCorruptionInfo) {
				lg.Error("damaged file in the data dir", zap.String("data-dir", dir),
					zap.String("path", info.Path), zap.Error(info.Details))
			},
		},
	}
	opts.EnsureDefaults()
	db, err := pebble.Open(dbDir, opts)
	if err != nil {
		return nil, fmt.Errorf("open pebble in data dir %q: %w: %w", dir, ErrCorrupt, err)
	}
	e := &Engine{DB: db, dir: dir, opts: opts, lg: lg}
	if !o.SkipVerify && !fresh {
		if err := e.Verify(); err != nil {
			_ = db.Close()
			return nil, err
		}
	}
	return e, nil
}

// Dir is the data dir the engine lives in.
func (e *Engine) Dir() string { return e.dir }

// Close closes the database.
func (e *Engine) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closed = true
	if err := e.DB.Close(); err != nil {
		return fmt.Errorf("close pebble: %w", err)
	}
	return nil
}

// Size is the on-disk size of the database in bytes (0 once the engine is closed).
func (e *Engine) Size() int64 {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed {
		return 0
	}
	m := e.DB.Metrics()
	return int64(m.DiskSpaceUsage())
}

// DiskUsage reports the space of the filesystem holding the data dir.
func (e *Engine) DiskUsage() (vfs.DiskUsage, error) {
	u, err := e.opts.FS.GetDiskUsage(e.dir)
	if err != nil {
		return vfs.DiskUsage{}, fmt.Errorf("disk usage of data dir %q: %w", e.dir, err)
	}
	return u, nil
}

// pebbleLogger routes Pebble's log lines to the member's logger.
//
// Pebble calls Fatalf when it cannot go on safely, above all when a write to its WAL or
// MANIFEST fails (a full disk, an I/O error): its commit pipeline is then broken and a commit it
// reports may not be durable. (It also calls it on broken internal invariants.) Pebble requires Fatalf not to return, so the member stops here,
// with a log line naming the data dir and exit code 1, as etcd stops when its backend cannot
// write. Nothing acknowledged is lost: a write is acknowledged only after its raft entry was
// synced, and a restart replays every synced entry.
type pebbleLogger struct {
	s   *zap.SugaredLogger
	dir string
}

func (l pebbleLogger) Infof(format string, args ...any)  { l.s.Debugf(format, args...) }
func (l pebbleLogger) Errorf(format string, args ...any) { l.s.Errorf(format, args...) }
func (l pebbleLogger) Fatalf(format string, args ...any) {
	l.s.Fatalw("stopping: the data dir cannot be written (disk full or I/O error) or storage cannot continue safely; free space or fix the disk, then restart the member",
		"data-dir", l.dir, "error", fmt.Sprintf(format, args...))
}

// getValue returns a copy of the value at key in r, or nil if absent.
func getValue(r pebble.Reader, key []byte) ([]byte, error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get %x: %w", key, err)
	}
	out := append([]byte(nil), v...)
	if err := closer.Close(); err != nil {
		return nil, fmt.Errorf("get %x: %w", key, err)
	}
	return out, nil
}

// Applied returns the applied index and its term.
func Applied(r pebble.Reader) (index, term uint64, err error) {
	v, err := getValue(r, keyApplied)
	if err != nil || v == nil {
		return 0, 0, err
	}
	if len(v) != 16 {
		return 0, 0, fmt.Errorf("%w: applied index record has %d bytes", ErrCorrupt, len(v))
	}
	return binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:]), nil
}

// SetApplied records the applied index and term in b.
func SetApplied(b *pebble.Batch, index, term uint64) error {
	var v [16]byte
	binary.BigEndian.PutUint64(v[:], index)
	binary.BigEndian.PutUint64(v[8:], term)
	return b.Set(keyApplied, v[:], nil)
}

// ConfState returns the raft configuration as of the applied index.
func ConfState(r pebble.Reader) (*raftpb.ConfState, error) {
	v, err := getValue(r, keyConfState)
	if err != nil {
		return nil, err
	}
	cs := &raftpb.ConfState{}
	if err := proto.Unmarshal(v, cs); err != nil {
		return nil, fmt.Errorf("%w: conf state: %v", ErrCorrupt, err)
	}
	return cs, nil
}

// SetConfState records the raft configuration in b.
func SetConfState(b *pebble.Batch, cs *raftpb.ConfState) error {
	v, err := proto.Marshal(cs)
	if err != nil {
		return fmt.Errorf("marshal conf state: %w", err)
	}
	return b.Set(keyConfState, v, nil)
}

// ClusterID returns the stored cluster id (0 if none).
func ClusterID(r pebble.Reader) (uint64, error) {
	v, err := getValue(r, keyCluster)
	if err != nil || v == nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: cluster id record has %d bytes", ErrCorrupt, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// SetClusterID records the cluster id in b.
func SetClusterID(b *pebble.Batch, id uint64) error {
	return b.Set(keyCluster, binary.BigEndian.AppendUint64(nil, id), nil)
}
