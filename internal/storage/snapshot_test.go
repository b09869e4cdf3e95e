package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"testing/iotest"

	"github.com/cockroachdb/pebble/v2"
)

type kv struct{ k, v string }

// scanRange returns every key/value pair in [lo, hi).
func scanRange(t testing.TB, e *Engine, lo, hi []byte) []kv {
	t.Helper()
	it, err := e.DB.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	var out []kv
	for it.First(); it.Valid(); it.Next() {
		out = append(out, kv{string(it.Key()), string(it.Value())})
	}
	if err := it.Error(); err != nil {
		t.Fatal(err)
	}
	return out
}

func stateKVs(t testing.TB, e *Engine) []kv { return scanRange(t, e, StateStart, StateEnd) }
func raftKVs(t testing.TB, e *Engine) []kv {
	return scanRange(t, e, []byte{PrefixRaft}, []byte{PrefixRaft + 1})
}

func sameKVs(a, b []kv) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func kvsString(kvs []kv) string {
	if len(kvs) > 12 {
		return fmt.Sprintf("%d pairs, first %q=%q, last %q=%q", len(kvs), kvs[0].k, kvs[0].v, kvs[len(kvs)-1].k, kvs[len(kvs)-1].v)
	}
	return fmt.Sprintf("%q", kvs)
}

// fillState writes state keys under every state prefix, the applied index, and (not state)
// raft-prefix keys tagged with who.
func fillState(t testing.TB, e *Engine, who string, applied uint64, n int) {
	t.Helper()
	commit(t, e, func(b *pebble.Batch) error {
		for i := 0; i < n; i++ {
			for _, p := range []byte{PrefixMeta, PrefixMVCC, PrefixLease} {
				if err := b.Set(fmt.Appendf([]byte{p}, "%s-key-%04d", who, i), fmt.Appendf(nil, "%s-val-%d", who, i), nil); err != nil {
					return err
				}
			}
			if err := b.Set(fmt.Appendf([]byte{PrefixRaft}, "%s-raft-%04d", who, i), []byte(who), nil); err != nil {
				return err
			}
		}
		// An empty value and a key that is just the prefix byte.
		if err := b.Set([]byte{PrefixMVCC}, nil, nil); err != nil {
			return err
		}
		if err := b.Set(fmt.Appendf([]byte{PrefixMVCC}, "%s-empty", who), nil, nil); err != nil {
			return err
		}
		if err := SetLocalID(b, uint64(who[0])); err != nil {
			return err
		}
		return SetApplied(b, applied, 3)
	})
}

// pipeSnapshot streams src's state into dst through an io.Pipe, as the peer transport does.
func pipeSnapshot(ctx context.Context, src, dst *Engine, index uint64) (applied uint64, writeErr, recvErr error) {
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		applied, writeErr = src.WriteSnapshot(ctx, pw)
		pw.CloseWithError(writeErr)
	}()
	recvErr = dst.ReceiveSnapshot(ctx, index, pr)
	pr.CloseWithError(errors.New("receiver finished"))
	<-done
	return applied, writeErr, recvErr
}

// recordSnapshot returns src's snapshot stream with the boundaries of its writes.
func recordSnapshot(t testing.TB, src *Engine) *chunkRecorder {
	t.Helper()
	w := &chunkRecorder{}
	if _, err := src.WriteSnapshot(context.Background(), w); err != nil {
		t.Fatalf("WriteSnapshot: %v", err)
	}
	return w
}

// snapDirFiles lists what is left in the staging dir.
func snapDirFiles(t testing.TB, e *Engine) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(e.Dir(), "snap"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ent := range ents {
		out = append(out, ent.Name())
	}
	return out
}

// receive calls ReceiveSnapshot and turns a panic into an error naming it, removing what the
// panicking call left in the staging dir, so one bad case does not end the whole test binary.
func receive(e *Engine, ctx context.Context, index uint64, r io.Reader) (err error) {
	defer func() {
		if p := recover(); p != nil {
			_ = os.Remove(e.stagedPath(index) + ".tmp")
			err = fmt.Errorf("ReceiveSnapshot panicked: %v", p)
		}
	}()
	return e.ReceiveSnapshot(ctx, index, r)
}

// buildStream encodes pairs in the documented stream format with a correct checksum.
func buildStream(pairs []kv) []byte {
	out := []byte(snapMagic)
	for _, p := range pairs {
		out = binary.AppendUvarint(out, uint64(len(p.k)))
		out = append(out, p.k...)
		out = binary.AppendUvarint(out, uint64(len(p.v)))
		out = append(out, p.v...)
	}
	out = append(out, 0)
	return binary.BigEndian.AppendUint32(out, crc32.Checksum(out, crcTable))
}

func TestSnapshotStreamRoundTrip(t *testing.T) {
	ctx := context.Background()
	src, dst := newTestEngine(t), newTestEngine(t)
	fillState(t, src.Engine, "src", 42, 50)
	fillState(t, dst.Engine, "dst", 7, 30) // old state that must go, raft keys that must stay
	commit(t, src.Engine, func(b *pebble.Batch) error {
		// Outside the state range on both ends: never carried.
		return b.Set([]byte{0xff, 's'}, []byte("src"), nil)
	})
	wantState := stateKVs(t, src.Engine)
	dstState := stateKVs(t, dst.Engine)
	dstRaft := raftKVs(t, dst.Engine)

	applied, werr, rerr := pipeSnapshot(ctx, src.Engine, dst.Engine, 40)
	if werr != nil || rerr != nil {
		t.Fatalf("stream: write %v, receive %v", werr, rerr)
	}
	if applied != 42 {
		t.Errorf("WriteSnapshot returned applied index %d, want 42", applied)
	}
	if !dst.HasStagedSnapshot(40) {
		t.Fatalf("HasStagedSnapshot(40) = false after ReceiveSnapshot")
	}
	if dst.HasStagedSnapshot(41) {
		t.Errorf("HasStagedSnapshot(41) = true, only 40 was received")
	}
	// Staging alone changes nothing.
	if got := stateKVs(t, dst.Engine); !sameKVs(got, dstState) {
		t.Fatalf("state changed before InstallSnapshot: %s", kvsString(got))
	}
	if err := dst.InstallSnapshot(ctx, 40); err != nil {
		t.Fatalf("InstallSnapshot: %v", err)
	}
	check := func() {
		t.Helper()
		if got := stateKVs(t, dst.Engine); !sameKVs(got, wantState) {
			t.Errorf("state after install: %s\nwant %s", kvsString(got), kvsString(wantState))
		}
		if got := raftKVs(t, dst.Engine); !sameKVs(got, dstRaft) {
			t.Errorf("raft keys after install: %s\nwant the receiver's own %s", kvsString(got), kvsString(dstRaft))
		}
		if idx, term, err := Applied(dst.DB); err != nil || idx != 42 || term != 3 {
			t.Errorf("Applied after install = %d, %d, %v; want 42, 3", idx, term, err)
		}
		if id, err := LocalID(dst.DB); err != nil || id != 'd' {
			t.Errorf("LocalID after install = %d, %v; want the receiver's own %d", id, err, 'd')
		}
		if v, err := getValue(dst.DB, []byte{0xff, 's'}); err != nil || v != nil {
			t.Errorf("a key outside the state range was carried: %v", err)
		}
	}
	check()
	if dst.HasStagedSnapshot(40) || len(snapDirFiles(t, dst.Engine)) != 0 {
		t.Errorf("staging dir after install: %v, want empty", snapDirFiles(t, dst.Engine))
	}
	dst.reopen()
	check()
	if err := dst.InstallSnapshot(ctx, 40); err == nil {
		t.Errorf("installing the same snapshot twice succeeded, want an error (nothing staged)")
	}
}

// TestSnapshotStreamFromMemory receives a stream held in memory, as bytes.Reader hands it out
// (everything in one Read). The checksum must not depend on how the reader splits the stream.
func TestSnapshotStreamFromMemory(t *testing.T) {
	ctx := context.Background()
	src, dst := newTestEngine(t), newTestEngine(t)
	fillState(t, src.Engine, "src", 42, 20)
	rec := recordSnapshot(t, src.Engine)
	stream := rec.bytes()
	for _, tc := range []struct {
		name string
		r    io.Reader
	}{
		{"as written", rec.reader()},
		{"one byte per read", iotest.OneByteReader(bytes.NewReader(stream))},
		{"half per read", iotest.HalfReader(bytes.NewReader(stream))},
		{"all at once", bytes.NewReader(stream)},
		{"all at once, checksum split", &chunkReader{chunks: [][]byte{append([]byte(nil), stream[:len(stream)-2]...), append([]byte(nil), stream[len(stream)-2:]...)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := dst.ReceiveSnapshot(ctx, 9, tc.r); err != nil {
				t.Errorf("ReceiveSnapshot of an undamaged %d-byte stream: %v", len(stream), err)
			}
		})
	}
}

func TestSnapshotStreamRejectsDamage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src, dst := newTestEngine(t), newTestEngine(t)
	fillState(t, src.Engine, "src", 42, 4)
	fillState(t, dst.Engine, "dst", 7, 4)
	before := stateKVs(t, dst.Engine)
	stream := recordSnapshot(t, src.Engine).bytes()

	// receive feeds one byte per Read: no read-ahead, so only the damage can fail it.
	receiveBytes := func(data []byte) error {
		return receive(dst.Engine, ctx, 5, iotest.OneByteReader(bytes.NewReader(data)))
	}
	if err := receiveBytes(stream); err != nil {
		t.Fatalf("undamaged stream: %v", err)
	}
	if err := os.Remove(dst.stagedPath(5)); err != nil {
		t.Fatal(err)
	}

	failures := 0
	defer func() {
		if failures > 8 {
			t.Errorf("... %d damaged streams not rejected cleanly in all", failures)
		}
	}()
	expectRejected := func(what string, data []byte) {
		t.Helper()
		err := receiveBytes(data)
		if !errors.Is(err, ErrBadSnapshot) {
			if failures++; failures <= 8 {
				t.Errorf("%s: ReceiveSnapshot = %v, want ErrBadSnapshot", what, err)
			}
		}
		if dst.HasStagedSnapshot(5) {
			t.Fatalf("%s: a snapshot was staged", what)
		}
		if files := snapDirFiles(t, dst.Engine); len(files) != 0 {
			t.Fatalf("%s: staging dir holds %v", what, files)
		}
	}
	for n := 0; n < len(stream); n++ {
		expectRejected(fmt.Sprintf("truncated to %d of %d bytes", n, len(stream)), stream[:n])
	}
	for i := range stream {
		for _, mask := range []byte{0x01, 0x80} {
			data := bytes.Clone(stream)
			data[i] ^= mask
			expectRejected(fmt.Sprintf("byte %d of %d xor %#x", i, len(stream), mask), data)
		}
	}
	for _, magic := range []string{"ORDOSNAP\x02", "ORDOSNAP\x00", "XRDOSNAP\x01", "ordosnap\x01"} {
		data := append([]byte(magic), stream[len(snapMagic):]...)
		expectRejected("magic "+fmt.Sprintf("%q", magic), data)
	}
	expectRejected("empty", nil)
	// Well-formed and correctly checksummed, but not state a snapshot can hold.
	expectRejected("raft-prefix key", buildStream([]kv{{"\x01h", "x"}, {"\x02a", "y"}}))
	expectRejected("keys out of order", buildStream([]kv{{"\x03b", "x"}, {"\x03a", "y"}}))
	expectRejected("duplicate key", buildStream([]kv{{"\x03a", "x"}, {"\x03a", "y"}}))
	expectRejected("key that is a prefix of the one before", buildStream([]kv{{"\x03ab", "x"}, {"\x03a", "y"}}))

	if got := stateKVs(t, dst.Engine); !sameKVs(got, before) {
		t.Errorf("receiver state changed: %s, want %s", kvsString(got), kvsString(before))
	}
	if err := dst.InstallSnapshot(ctx, 5); err == nil {
		t.Errorf("InstallSnapshot after only rejected streams succeeded")
	}
	if got := stateKVs(t, dst.Engine); !sameKVs(got, before) {
		t.Errorf("receiver state changed: %s, want %s", kvsString(got), kvsString(before))
	}
}

// TestSnapshotStreamHandBuilt checks the documented wire format: a stream built by hand is
// accepted and installs exactly its pairs.
func TestSnapshotStreamHandBuilt(t *testing.T) {
	ctx := context.Background()
	dst := newTestEngine(t)
	fillState(t, dst.Engine, "dst", 7, 3)
	pairs := []kv{{"\x02a", "\x00\x00\x00\x00\x00\x00\x00\x09\x00\x00\x00\x00\x00\x00\x00\x02"}, {"\x03k", ""}, {"\x04z", "lease"}}
	if err := dst.ReceiveSnapshot(ctx, 9, iotest.OneByteReader(bytes.NewReader(buildStream(pairs)))); err != nil {
		t.Fatalf("ReceiveSnapshot: %v", err)
	}
	if err := dst.InstallSnapshot(ctx, 9); err != nil {
		t.Fatalf("InstallSnapshot: %v", err)
	}
	if got := stateKVs(t, dst.Engine); !sameKVs(got, pairs) {
		t.Errorf("state = %s, want %s", kvsString(got), kvsString(pairs))
	}
	if idx, term, err := Applied(dst.DB); idx != 9 || term != 2 || err != nil {
		t.Errorf("Applied = %d, %d, %v; want 9, 2", idx, term, err)
	}
}

// TestSnapshotStreamKeyBeyondStateEnd: a key at or above StateEnd is outside what InstallSnapshot
// replaces, so the receiver must not stage it as state.
func TestSnapshotStreamKeyBeyondStateEnd(t *testing.T) {
	ctx := context.Background()
	dst := newTestEngine(t)
	err := dst.ReceiveSnapshot(ctx, 9, iotest.OneByteReader(bytes.NewReader(buildStream([]kv{{"\x03a", "x"}, {"\xffz", "y"}}))))
	if err == nil {
		err = dst.InstallSnapshot(ctx, 9)
		if v, _ := getValue(dst.DB, []byte("\xffz")); v != nil {
			t.Errorf("a stream key above StateEnd was installed (ReceiveSnapshot accepted it, InstallSnapshot = %v)", err)
		}
		return
	}
	if !errors.Is(err, ErrBadSnapshot) {
		t.Errorf("ReceiveSnapshot = %v, want ErrBadSnapshot", err)
	}
}

func TestSnapshotStreamEmptyState(t *testing.T) {
	ctx := context.Background()
	src, dst := newTestEngine(t), newTestEngine(t)
	commit(t, src.Engine, func(b *pebble.Batch) error { return b.Set([]byte{PrefixRaft, 'x'}, nil, nil) })
	fillState(t, dst.Engine, "dst", 7, 3)
	dstRaft := raftKVs(t, dst.Engine)
	applied, werr, rerr := pipeSnapshot(ctx, src.Engine, dst.Engine, 3)
	if werr != nil || rerr != nil || applied != 0 {
		t.Fatalf("stream: applied %d, write %v, receive %v", applied, werr, rerr)
	}
	if err := dst.InstallSnapshot(ctx, 3); err != nil {
		t.Fatalf("InstallSnapshot: %v", err)
	}
	if got := stateKVs(t, dst.Engine); len(got) != 0 {
		t.Errorf("state after installing an empty snapshot: %s, want none", kvsString(got))
	}
	if got := raftKVs(t, dst.Engine); !sameKVs(got, dstRaft) {
		t.Errorf("raft keys changed: %s", kvsString(got))
	}
}

func TestSnapshotStagingReplacesOlder(t *testing.T) {
	ctx := context.Background()
	src, dst := newTestEngine(t), newTestEngine(t)
	fillState(t, src.Engine, "src", 42, 3)
	for _, idx := range []uint64{5, 6} {
		if _, werr, rerr := pipeSnapshot(ctx, src.Engine, dst.Engine, idx); werr != nil || rerr != nil {
			t.Fatalf("stream %d: %v, %v", idx, werr, rerr)
		}
	}
	// Receiving the same index again replaces the staged file.
	if _, werr, rerr := pipeSnapshot(ctx, src.Engine, dst.Engine, 6); werr != nil || rerr != nil {
		t.Fatalf("stream 6 again: %v, %v", werr, rerr)
	}
	if err := dst.InstallSnapshot(ctx, 6); err != nil {
		t.Fatal(err)
	}
	if dst.HasStagedSnapshot(5) || dst.HasStagedSnapshot(6) {
		t.Errorf("staged snapshots left after install: %v", snapDirFiles(t, dst.Engine))
	}
	if err := dst.InstallSnapshot(ctx, 99); err == nil {
		t.Errorf("InstallSnapshot of a snapshot never received succeeded")
	}
}

func TestSnapshotStreamCanceled(t *testing.T) {
	src, dst := newTestEngine(t), newTestEngine(t)
	fillState(t, src.Engine, "src", 42, 2000)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := src.WriteSnapshot(ctx, io.Discard); !errors.Is(err, context.Canceled) {
		t.Errorf("WriteSnapshot with a canceled context = %v, want context.Canceled", err)
	}
	stream := recordSnapshot(t, src.Engine).bytes()
	if err := dst.ReceiveSnapshot(ctx, 3, bytes.NewReader(stream)); !errors.Is(err, context.Canceled) {
		t.Errorf("ReceiveSnapshot with a canceled context = %v, want context.Canceled", err)
	}
	if dst.HasStagedSnapshot(3) || len(snapDirFiles(t, dst.Engine)) != 0 {
		t.Errorf("staging dir after a canceled receive: %v", snapDirFiles(t, dst.Engine))
	}
}

func TestSnapshotStreamLarge(t *testing.T) {
	t.Parallel()
	n := 200_000
	if testing.Short() {
		n = 20_000
	}
	ctx := context.Background()
	src, dst := newTestEngine(t), newTestEngine(t)
	value := bytes.Repeat([]byte("v"), 24)
	b := src.DB.NewBatch()
	for i := 0; i < n; i++ {
		if err := b.Set(binary.BigEndian.AppendUint64([]byte{PrefixMVCC}, uint64(i)), value, nil); err != nil {
			t.Fatal(err)
		}
		if b.Len() > 4<<20 {
			if err := b.Commit(pebble.NoSync); err != nil {
				t.Fatal(err)
			}
			b = src.DB.NewBatch()
		}
	}
	if err := SetApplied(b, 1000, 5); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	fillState(t, dst.Engine, "dst", 7, 100)

	applied, werr, rerr := pipeSnapshot(ctx, src.Engine, dst.Engine, 1000)
	if werr != nil || rerr != nil || applied != 1000 {
		t.Fatalf("stream: applied %d, write %v, receive %v", applied, werr, rerr)
	}
	if err := dst.InstallSnapshot(ctx, 1000); err != nil {
		t.Fatalf("InstallSnapshot: %v", err)
	}
	it, err := dst.DB.NewIter(&pebble.IterOptions{LowerBound: StateStart, UpperBound: StateEnd})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	count := 0
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if k[0] == PrefixMVCC {
			if len(k) != 9 || binary.BigEndian.Uint64(k[1:]) != uint64(count) || !bytes.Equal(it.Value(), value) {
				t.Fatalf("key %d: %x = %q", count, k, it.Value())
			}
			count++
		} else if !bytes.Equal(k, keyApplied) {
			t.Fatalf("unexpected state key %q after install", k)
		}
	}
	if count != n {
		t.Errorf("installed %d MVCC keys, want %d", count, n)
	}
}

func FuzzReceiveSnapshot(f *testing.F) {
	src := newTestEngine(f)
	fillState(f, src.Engine, "src", 42, 3)
	valid := recordSnapshot(f, src.Engine).bytes()
	f.Add(valid)
	f.Add(valid[:len(valid)-1])
	f.Add(valid[:len(snapMagic)])
	f.Add([]byte{})
	f.Add(buildStream(nil))
	f.Add(buildStream([]kv{{"\x02a", "b"}, {"\x03c", ""}}))
	f.Add(buildStream([]kv{{"\x03b", "x"}, {"\x03a", "y"}}))
	f.Add(buildStream([]kv{{"\x01b", "x"}}))
	f.Add(buildStream([]kv{{"\xff", "x"}}))
	// A length field claiming the largest chunk the reader accepts, and one beyond it.
	f.Add(binary.AppendUvarint([]byte(snapMagic), 256<<20))
	f.Add(binary.AppendUvarint([]byte(snapMagic), 1<<40))
	f.Add(append([]byte(snapMagic), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01))

	dst := newTestEngine(f)
	ctx := context.Background()
	index := uint64(0)
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, r := range []io.Reader{bytes.NewReader(data), iotest.OneByteReader(bytes.NewReader(data))} {
			index++
			err := receive(dst.Engine, ctx, index, r)
			if err != nil {
				if !errors.Is(err, ErrBadSnapshot) {
					t.Fatalf("ReceiveSnapshot = %v, want nil or ErrBadSnapshot", err)
				}
				if dst.HasStagedSnapshot(index) {
					t.Fatalf("rejected stream was staged")
				}
				continue
			}
			if err := dst.InstallSnapshot(ctx, index); err != nil {
				t.Fatalf("InstallSnapshot of an accepted stream: %v", err)
			}
		}
		if files := snapDirFiles(t, dst.Engine); len(files) != 0 {
			t.Fatalf("staging dir holds %v", files)
		}
	})
}

// TestSnapshotStreamOverHTTP sends the stream the way the peer transport does: WriteSnapshot
// into an io.Pipe that is the body of a chunked HTTP request, and ReceiveSnapshot reading the
// request body on the server.
func TestSnapshotStreamOverHTTP(t *testing.T) {
	t.Parallel()
	for _, n := range []int{1, 100, 3000} {
		t.Run(fmt.Sprintf("%dkeys", n), func(t *testing.T) {
			src, dst := newTestEngine(t), newTestEngine(t)
			fillState(t, src.Engine, "src", 42, n)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if err := dst.ReceiveSnapshot(r.Context(), 42, r.Body); err != nil {
					http.Error(w, err.Error(), http.StatusInternalServerError)
					return
				}
				w.WriteHeader(http.StatusNoContent)
			}))
			defer srv.Close()
			defer srv.Client().CloseIdleConnections()
			for attempt := 0; attempt < 3; attempt++ {
				pr, pw := io.Pipe()
				done := make(chan error, 1)
				go func() {
					_, err := src.WriteSnapshot(context.Background(), pw)
					pw.CloseWithError(err)
					done <- err
				}()
				req, err := http.NewRequest(http.MethodPost, srv.URL, pr)
				if err != nil {
					t.Fatal(err)
				}
				req.ContentLength = -1
				resp, err := srv.Client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				pr.CloseWithError(errors.New("response received"))
				if werr := <-done; werr != nil && resp.StatusCode == http.StatusNoContent {
					t.Fatalf("WriteSnapshot: %v", werr)
				}
				if resp.StatusCode != http.StatusNoContent {
					t.Fatalf("attempt %d: receiver answered %s: %s", attempt, resp.Status, bytes.TrimSpace(body))
				}
			}
		})
	}
}
