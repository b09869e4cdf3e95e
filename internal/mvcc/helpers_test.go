package mvcc

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"
)

// quietLogger drops Pebble's informational messages.
type quietLogger struct{ tb testing.TB }

func (quietLogger) Infof(string, ...any)           {}
func (l quietLogger) Errorf(f string, args ...any) { l.tb.Logf(f, args...) }
func (l quietLogger) Fatalf(f string, args ...any) { l.tb.Fatalf(f, args...) }

// closedDBs records the DBs tests closed themselves (Pebble panics on a second Close).
var closedDBs sync.Map

// openDB opens a Pebble DB in dir and closes it at the end of the test unless closeDB
// closed it already.
func openDB(tb testing.TB, dir string) *pebble.DB {
	tb.Helper()
	// Pebble reserves memtable memory in the block cache: the default 8MB cache would hold
	// nothing, so benchmarks would measure disk reads.
	db, err := pebble.Open(dir, &pebble.Options{Logger: quietLogger{tb}, CacheSize: 128 << 20})
	if err != nil {
		tb.Fatalf("open pebble: %v", err)
	}
	tb.Cleanup(func() {
		if _, closed := closedDBs.LoadAndDelete(db); !closed {
			if err := db.Close(); err != nil {
				tb.Errorf("close pebble: %v", err)
			}
		}
	})
	return db
}

func closeDB(tb testing.TB, db *pebble.DB) {
	tb.Helper()
	closedDBs.Store(db, true)
	if err := db.Close(); err != nil {
		tb.Fatalf("close pebble: %v", err)
	}
}

// newStore opens a fresh store in a temporary directory.
func newStore(tb testing.TB) (*Store, *pebble.DB, string) {
	tb.Helper()
	dir := tb.TempDir()
	db := openDB(tb, dir)
	s, err := Open(db)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	return s, db, dir
}

// write runs fn with a writer over a new indexed batch, commits it and publishes.
func write(tb testing.TB, s *Store, fn func(w *Writer)) *Writer {
	tb.Helper()
	b := s.db.NewIndexedBatch()
	defer b.Close()
	w := s.NewWriter(b)
	fn(w)
	if err := b.Commit(pebble.NoSync); err != nil {
		tb.Fatalf("commit: %v", err)
	}
	s.Publish(w)
	return w
}

// mustPut puts in its own transaction and returns the revision after it.
func mustPut(tb testing.TB, s *Store, key, value string, lease int64) int64 {
	tb.Helper()
	var rev int64
	write(tb, s, func(w *Writer) {
		if _, err := w.Put([]byte(key), []byte(value), lease); err != nil {
			tb.Fatalf("put %q: %v", key, err)
		}
		rev = w.EndTxn()
	})
	return rev
}

// mustDelete deletes a range in its own transaction and returns the deleted KVs.
func mustDelete(tb testing.TB, s *Store, key, end []byte) []*mvccpb.KeyValue {
	tb.Helper()
	var del []*mvccpb.KeyValue
	write(tb, s, func(w *Writer) {
		var err error
		if del, err = w.DeleteRange(key, end); err != nil {
			tb.Fatalf("delete %q-%q: %v", key, end, err)
		}
		w.EndTxn()
	})
	return del
}

// read runs a range on a fresh view.
func read(tb testing.TB, s *Store, key, end []byte, ro RangeOptions) (*RangeResult, error) {
	tb.Helper()
	v, err := s.NewReadView()
	if err != nil {
		tb.Fatalf("NewReadView: %v", err)
	}
	defer func() {
		if err := v.Close(); err != nil {
			tb.Errorf("close view: %v", err)
		}
	}()
	return v.Range(context.Background(), key, end, ro)
}

func mustRead(tb testing.TB, s *Store, key, end []byte, ro RangeOptions) *RangeResult {
	tb.Helper()
	r, err := read(tb, s, key, end, ro)
	if err != nil {
		tb.Fatalf("range %q-%q %+v: %v", key, end, ro, err)
	}
	return r
}

// compact schedules a compaction at rev and runs it physically.
func compact(tb testing.TB, s *Store, rev int64) {
	tb.Helper()
	write(tb, s, func(w *Writer) {
		if err := w.Compact(rev); err != nil {
			tb.Fatalf("compact %d: %v", rev, err)
		}
	})
	if err := s.Compact(context.Background(), rev); err != nil {
		tb.Fatalf("physical compact %d: %v", rev, err)
	}
}

func kv(key, value string, create, mod, ver, lease int64) *mvccpb.KeyValue {
	k := &mvccpb.KeyValue{Key: []byte(key), CreateRevision: create, ModRevision: mod, Version: ver, Lease: lease}
	if value != "" {
		k.Value = []byte(value)
	}
	return k
}

func kvsEqual(a, b []*mvccpb.KeyValue) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !proto.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

func fmtKVs(kvs []*mvccpb.KeyValue) string {
	parts := make([]string, len(kvs))
	for i, kv := range kvs {
		parts[i] = fmtKV(kv)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func fmtKV(kv *mvccpb.KeyValue) string {
	if kv == nil {
		return "<nil>"
	}
	return fmt.Sprintf("{%q=%q c%d m%d v%d l%d}", kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease)
}

// rawVersions lists every version key in the DB as (user key, main, sub, kind).
type rawVersion struct {
	key       string
	main, sub int64
	kind      byte
}

func rawVersions(tb testing.TB, db *pebble.DB) []rawVersion {
	tb.Helper()
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: versionsStart, UpperBound: versionsEnd})
	if err != nil {
		tb.Fatal(err)
	}
	defer it.Close()
	var out []rawVersion
	for valid := it.First(); valid; valid = it.Next() {
		vk, err := parseVersionKey(it.Key())
		if err != nil {
			tb.Fatal(err)
		}
		uk, err := appendUnescaped(nil, escapedUserKey(vk.prefix))
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, rawVersion{key: string(uk), main: vk.main, sub: vk.sub, kind: vk.kind})
	}
	if err := it.Error(); err != nil {
		tb.Fatal(err)
	}
	return out
}

// rawHistory lists the main revisions of all history entries.
func rawHistory(tb testing.TB, db *pebble.DB) []int64 {
	tb.Helper()
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: historyStart, UpperBound: historyEnd})
	if err != nil {
		tb.Fatal(err)
	}
	defer it.Close()
	var out []int64
	for valid := it.First(); valid; valid = it.Next() {
		main, _, err := parseHistoryKey(it.Key())
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, main)
	}
	if err := it.Error(); err != nil {
		tb.Fatal(err)
	}
	return out
}

// checkCompacted verifies the physical state after compaction at rev: for every key at
// most one version <= rev, a put; no history below rev.
func checkCompacted(tb testing.TB, db *pebble.DB, rev int64) {
	tb.Helper()
	seen := map[string]bool{}
	for _, v := range rawVersions(tb, db) {
		if v.main > rev {
			continue
		}
		if v.kind != kindPut {
			tb.Fatalf("compacted at %d: tombstone of %q at %d/%d remains", rev, v.key, v.main, v.sub)
		}
		if seen[v.key] {
			tb.Fatalf("compacted at %d: superseded version of %q at %d/%d remains", rev, v.key, v.main, v.sub)
		}
		seen[v.key] = true
	}
	for _, main := range rawHistory(tb, db) {
		if main < rev {
			tb.Fatalf("compacted at %d: history at %d remains", rev, main)
		}
	}
}
