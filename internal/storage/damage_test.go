package storage

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
)

// fillDamageFixture writes a small but complete member state to dir: raft log entries, hard
// state, meta records and state keys. Most of it is flushed to sstables; the last writes stay
// in the WAL only.
func fillDamageFixture(t *testing.T, dir string) {
	t.Helper()
	e, err := Open(dir, zap.NewNop())
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	l := mustOpenRaftLog(t, e)
	commit(t, e, func(b *pebble.Batch) error {
		if err := SetLocalID(b, 1); err != nil {
			return err
		}
		if err := SetClusterID(b, 7); err != nil {
			return err
		}
		return SetConfState(b, &raftpb.ConfState{Voters: []uint64{1}})
	})
	val := bytes.Repeat([]byte("0123456789abcdef"), 64)
	write := func(from, to uint64) {
		for i := from; i <= to; i++ {
			ent := &raftpb.Entry{Index: proto.Uint64(i), Term: proto.Uint64(1), Data: val}
			if err := l.Save(&raftpb.HardState{Term: proto.Uint64(1), Commit: proto.Uint64(i)}, []*raftpb.Entry{ent}); err != nil {
				t.Fatalf("save: %v", err)
			}
			commit(t, e, func(b *pebble.Batch) error {
				if err := b.Set([]byte(fmt.Sprintf("\x03k%06d", i)), val, nil); err != nil {
					return err
				}
				return SetApplied(b, i, 1)
			})
		}
	}
	write(1, 300)
	if err := e.DB.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	write(301, 400) // WAL only
	if err := e.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
}

// dbFiles returns the files in dir/db whose names match, largest first.
func dbFiles(t *testing.T, dir string, match func(name string) bool) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, "db"))
	if err != nil {
		t.Fatal(err)
	}
	type file struct {
		path string
		size int64
	}
	var fs []file
	for _, de := range ents {
		if !match(de.Name()) {
			continue
		}
		info, err := de.Info()
		if err != nil {
			t.Fatal(err)
		}
		fs = append(fs, file{filepath.Join(dir, "db", de.Name()), info.Size()})
	}
	sort.Slice(fs, func(i, j int) bool { return fs[i].size > fs[j].size })
	var out []string
	for _, f := range fs {
		out = append(out, f.path)
	}
	if len(out) == 0 {
		t.Fatalf("no matching file in %s", dir)
	}
	return out
}

func truncateFile(t *testing.T, path string) {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, info.Size()/2); err != nil {
		t.Fatal(err)
	}
}

// flipByte flips one bit at offset (negative: from the end) of path.
func flipByte(t *testing.T, path string, offset int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if offset < 0 {
		offset += int64(len(b))
	}
	b[offset] ^= 0x10
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// liveWAL is the newest WAL, the one Pebble replays at open (older ones are kept for reuse).
func liveWAL(t *testing.T, dir string) string {
	ws := dbFiles(t, dir, isWAL)
	sort.Strings(ws)
	return ws[len(ws)-1]
}

func isSST(n string) bool      { return strings.HasSuffix(n, ".sst") }
func isWAL(n string) bool      { return strings.HasSuffix(n, ".log") }
func isManifest(n string) bool { return strings.HasPrefix(n, "MANIFEST-") }
func isOptions(n string) bool  { return strings.HasPrefix(n, "OPTIONS-") }

// TestStartupDetectsDamage damages one file of a closed data dir in each way and checks that
// opening it fails with ErrCorrupt and an error naming the data dir, instead of serving from it.
func TestStartupDetectsDamage(t *testing.T) {
	cases := []struct {
		name   string
		damage func(t *testing.T, dir string)
		// tail marks damage that can look exactly like a crash before the last write (a torn
		// tail): Pebble then opens the older, consistent state, as etcd's WAL repair does. It
		// must be detected or leave a data dir that passes every check.
		tail bool
	}{
		{"sstable truncated", func(t *testing.T, dir string) { truncateFile(t, dbFiles(t, dir, isSST)[0]) }, false},
		{"sstable bit flip in a data block", func(t *testing.T, dir string) { flipByte(t, dbFiles(t, dir, isSST)[0], 100) }, false},
		{"sstable bit flip in the footer", func(t *testing.T, dir string) { flipByte(t, dbFiles(t, dir, isSST)[0], -10) }, false},
		{"sstable removed", func(t *testing.T, dir string) {
			if err := os.Remove(dbFiles(t, dir, isSST)[0]); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"MANIFEST truncated", func(t *testing.T, dir string) { truncateFile(t, dbFiles(t, dir, isManifest)[0]) }, true},
		{"MANIFEST bit flip", func(t *testing.T, dir string) { flipByte(t, dbFiles(t, dir, isManifest)[0], 20) }, false},
		{"MANIFEST removed", func(t *testing.T, dir string) {
			if err := os.Remove(dbFiles(t, dir, isManifest)[0]); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"WAL bit flip", func(t *testing.T, dir string) { flipByte(t, liveWAL(t, dir), 1000) }, false},
		{"WAL removed", func(t *testing.T, dir string) {
			if err := os.Remove(liveWAL(t, dir)); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"WAL truncated", func(t *testing.T, dir string) { truncateFile(t, liveWAL(t, dir)) }, true},
		{"OPTIONS truncated", func(t *testing.T, dir string) { truncateFile(t, dbFiles(t, dir, isOptions)[0]) }, false},
		{"OPTIONS altered", func(t *testing.T, dir string) {
			p := dbFiles(t, dir, isOptions)[0]
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			b = bytes.Replace(b, []byte("[Options]"), []byte("[Opti0ns]"), 1)
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			fillDamageFixture(t, dir)
			tc.damage(t, dir)
			e, err := Open(dir, zap.NewNop())
			if err == nil {
				// Opening must not succeed; if Pebble cannot tell, Ordo's own checks must.
				err = e.CheckInvariants()
				if err == nil {
					_, err = OpenRaftLog(e)
				}
				_ = e.Close()
			}
			if err == nil && tc.tail {
				t.Logf("%s: not detectable, opened a consistent older state", tc.name)
				return
			}
			if err == nil {
				t.Fatal("damaged data dir opened without an error")
			}
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), dir) {
				t.Fatalf("error = %v; want ErrCorrupt naming the data dir", err)
			}
			t.Logf("%s: %v", tc.name, err)
		})
	}
}

// TestStartupChecksInvariants breaks Ordo's invariants between records one at a time.
func TestStartupChecksInvariants(t *testing.T) {
	cases := []struct {
		name string
		fill func(b *pebble.Batch) error
	}{
		{"member id without cluster id", func(b *pebble.Batch) error { return b.Delete(keyCluster, nil) }},
		{"applied beyond commit", func(b *pebble.Batch) error {
			return writeHardState(b, &raftpb.HardState{Term: proto.Uint64(1), Commit: proto.Uint64(5)})
		}},
		{"commit beyond the log", func(b *pebble.Batch) error {
			if err := b.DeleteRange(entryKey(350), entryKey(3000), nil); err != nil {
				return err
			}
			return SetApplied(b, 300, 1)
		}},
		{"gap in the log", func(b *pebble.Batch) error { return b.Delete(entryKey(150), nil) }},
		{"no raft configuration", func(b *pebble.Batch) error { return b.Delete(keyConfState, nil) }},
		{"applied below the truncation point", func(b *pebble.Batch) error {
			if err := b.DeleteRange(entryKey(1), entryKey(351), nil); err != nil {
				return err
			}
			if err := b.Set(keyTruncated, truncValue(350, 1), nil); err != nil {
				return err
			}
			return SetApplied(b, 300, 1)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			fillDamageFixture(t, dir)
			te := &testEngine{t: t, dir: dir}
			te.open()
			if err := te.CheckInvariants(); err != nil {
				t.Fatalf("intact data dir: %v", err)
			}
			commit(t, te.Engine, tc.fill)
			err := te.CheckInvariants()
			te.close()
			if err == nil || !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), dir) {
				t.Fatalf("CheckInvariants = %v; want ErrCorrupt naming the data dir", err)
			}
			t.Logf("%s: %v", tc.name, err)
		})
	}
}
