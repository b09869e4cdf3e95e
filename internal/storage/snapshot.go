package storage

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/objstorage/objstorageprovider"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// A snapshot stream carries every state-machine key of a point-in-time view, in key order:
//
//	"ORDOSNAP" version(1 byte)
//	repeated: uvarint(len(key)) key uvarint(len(value)) value    (len(key) > 0)
//	uvarint(0) crc32c(4 bytes, big endian) over every byte before it
//
// The receiver writes the pairs into a Pebble sstable as they arrive, so neither side holds the
// state in memory, and installs it by ingesting that table in place of the old state.
const snapMagic = "ORDOSNAP\x01"

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// ErrBadSnapshot marks a snapshot stream that is truncated or altered.
var ErrBadSnapshot = errors.New("storage: bad snapshot stream")

// WriteSnapshot streams the current state-machine state to w. It returns the applied index the
// streamed state contains.
func (e *Engine) WriteSnapshot(ctx context.Context, w io.Writer) (uint64, error) {
	snap := e.DB.NewSnapshot()
	defer snap.Close()
	applied, _, err := Applied(snap)
	if err != nil {
		return 0, err
	}
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: StateStart, UpperBound: StateEnd})
	if err != nil {
		return 0, fmt.Errorf("iterate state: %w", err)
	}
	defer it.Close()
	crc := crc32.New(crcTable)
	bw := bufio.NewWriterSize(io.MultiWriter(w, crc), 256<<10)
	if _, err := bw.WriteString(snapMagic); err != nil {
		return 0, fmt.Errorf("write snapshot: %w", err)
	}
	var lenBuf [binary.MaxVarintLen64]byte
	n := 0
	for it.First(); it.Valid(); it.Next() {
		if n++; n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return 0, err
			}
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return 0, fmt.Errorf("read state: %w", err)
		}
		for _, b := range [][]byte{it.Key(), v} {
			if _, err := bw.Write(lenBuf[:binary.PutUvarint(lenBuf[:], uint64(len(b)))]); err != nil {
				return 0, fmt.Errorf("write snapshot: %w", err)
			}
			if _, err := bw.Write(b); err != nil {
				return 0, fmt.Errorf("write snapshot: %w", err)
			}
		}
	}
	if err := it.Error(); err != nil {
		return 0, fmt.Errorf("iterate state: %w", err)
	}
	if err := bw.WriteByte(0); err != nil {
		return 0, fmt.Errorf("write snapshot: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return 0, fmt.Errorf("write snapshot: %w", err)
	}
	if _, err := w.Write(binary.BigEndian.AppendUint32(nil, crc.Sum32())); err != nil {
		return 0, fmt.Errorf("write snapshot: %w", err)
	}
	return applied, nil
}

func (e *Engine) stagedPath(index uint64) string {
	return filepath.Join(e.dir, "snap", fmt.Sprintf("%016x.sst", index))
}

// ReceiveSnapshot reads a snapshot stream from r and stages it durably for the raft snapshot at
// index, to be installed by InstallSnapshot.
func (e *Engine) ReceiveSnapshot(ctx context.Context, index uint64, r io.Reader) (err error) {
	path := e.stagedPath(index)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create snapshot dir: %w", err)
	}
	tmp := path + ".tmp"
	f, err := vfs.Default.Create(tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("create staged snapshot: %w", err)
	}
	sw := sstable.NewWriter(objstorageprovider.NewFileWritable(f), e.opts.MakeWriterOptions(0, e.DB.TableFormat()))
	closed := false
	defer func() {
		if !closed {
			_ = sw.Close()
		}
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	br := bufio.NewReaderSize(r, 256<<10)
	hr := &hashingReader{r: br, h: crc32.New(crcTable)}
	magic := make([]byte, len(snapMagic))
	if _, err := io.ReadFull(hr, magic); err != nil || string(magic) != snapMagic {
		return fmt.Errorf("%w: missing header", ErrBadSnapshot)
	}
	var key, prev, val []byte
	n := 0
	for {
		if n++; n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		kl, err := binary.ReadUvarint(hr)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrBadSnapshot, err)
		}
		if kl == 0 {
			break
		}
		if key, err = readChunk(hr, key, kl); err != nil {
			return err
		}
		vl, err := binary.ReadUvarint(hr)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrBadSnapshot, err)
		}
		if val, err = readChunk(hr, val, vl); err != nil {
			return err
		}
		if bytes.Compare(key, StateStart) < 0 || bytes.Compare(key, StateEnd) >= 0 {
			return fmt.Errorf("%w: key %x outside the state keyspace", ErrBadSnapshot, key)
		}
		if prev != nil && bytes.Compare(key, prev) <= 0 {
			return fmt.Errorf("%w: key %x out of order", ErrBadSnapshot, key)
		}
		prev = append(prev[:0], key...)
		if err := sw.Set(key, val); err != nil {
			return fmt.Errorf("%w: %v", ErrBadSnapshot, err)
		}
	}
	want := hr.h.Sum32()
	var sum [4]byte
	if _, err := io.ReadFull(br, sum[:]); err != nil {
		return fmt.Errorf("%w: missing checksum", ErrBadSnapshot)
	}
	if binary.BigEndian.Uint32(sum[:]) != want {
		return fmt.Errorf("%w: checksum mismatch", ErrBadSnapshot)
	}
	closed = true
	if err := sw.Close(); err != nil {
		return fmt.Errorf("finish staged snapshot: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("stage snapshot: %w", err)
	}
	return nil
}

func readChunk(r io.Reader, buf []byte, n uint64) ([]byte, error) {
	const maxChunk = 256 << 20
	if n > maxChunk {
		return nil, fmt.Errorf("%w: %d-byte field", ErrBadSnapshot, n)
	}
	// Grow with what actually arrives, so a forged length cannot make us allocate it up front.
	buf = buf[:0]
	for uint64(len(buf)) < n {
		step := min(n-uint64(len(buf)), 1<<20)
		if uint64(cap(buf)-len(buf)) < step {
			buf = append(buf, make([]byte, step)...)[:len(buf)]
		}
		part := buf[len(buf) : len(buf)+int(step)]
		if _, err := io.ReadFull(r, part); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadSnapshot, err)
		}
		buf = buf[:len(buf)+int(step)]
	}
	return buf, nil
}

// hashingReader hashes exactly the bytes the parser consumes from a buffered reader.
type hashingReader struct {
	r   *bufio.Reader
	h   hash.Hash32
	one [1]byte
}

func (hr *hashingReader) Read(p []byte) (int, error) {
	n, err := hr.r.Read(p)
	hr.h.Write(p[:n])
	return n, err
}

func (hr *hashingReader) ReadByte() (byte, error) {
	b, err := hr.r.ReadByte()
	if err == nil {
		hr.one[0] = b
		hr.h.Write(hr.one[:])
	}
	return b, err
}

// HasStagedSnapshot reports whether a snapshot for index has been received.
func (e *Engine) HasStagedSnapshot(index uint64) bool {
	_, err := os.Stat(e.stagedPath(index))
	return err == nil
}

// InstallSnapshot atomically replaces the state machine with the staged snapshot for index.
func (e *Engine) InstallSnapshot(ctx context.Context, index uint64) error {
	path := e.stagedPath(index)
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("install snapshot %d: %w", index, err)
	}
	if _, err := e.DB.IngestAndExcise(ctx, []string{path}, nil, nil, pebble.KeyRange{Start: StateStart, End: StateEnd}); err != nil {
		return fmt.Errorf("install snapshot %d: %w", index, err)
	}
	// Ingest moves the file into the DB; remove what may be left (older staged snapshots too).
	dir := filepath.Dir(path)
	ents, err := os.ReadDir(dir)
	if err == nil {
		for _, ent := range ents {
			_ = os.Remove(filepath.Join(dir, ent.Name()))
		}
	}
	return nil
}
