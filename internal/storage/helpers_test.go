package storage

import (
	"bytes"
	"fmt"
	"io"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testEngine is an Engine in a test's temp dir that the test may close and reopen; whatever is
// open when the test ends is closed.
type testEngine struct {
	t   testing.TB
	dir string
	*Engine
}

func newTestEngine(t testing.TB) *testEngine {
	t.Helper()
	te := &testEngine{t: t, dir: t.TempDir()}
	te.open()
	t.Cleanup(func() {
		if te.Engine != nil {
			if err := te.Engine.Close(); err != nil {
				t.Errorf("close engine: %v", err)
			}
		}
	})
	return te
}

func (te *testEngine) open() {
	te.t.Helper()
	e, err := Open(te.dir, zap.NewNop())
	if err != nil {
		te.t.Fatalf("open engine: %v", err)
	}
	te.Engine = e
}

func (te *testEngine) close() {
	te.t.Helper()
	if err := te.Engine.Close(); err != nil {
		te.t.Fatalf("close engine: %v", err)
	}
	te.Engine = nil
}

// reopen closes the engine and opens it again on the same data dir.
func (te *testEngine) reopen() {
	te.t.Helper()
	te.close()
	te.open()
}

func mustOpenRaftLog(t testing.TB, e *Engine) *RaftLog {
	t.Helper()
	l, err := OpenRaftLog(e)
	if err != nil {
		t.Fatalf("OpenRaftLog: %v", err)
	}
	return l
}

// commit runs fill on a new batch and commits it.
func commit(t testing.TB, e *Engine, fill func(b *pebble.Batch) error) {
	t.Helper()
	b := e.DB.NewBatch()
	defer b.Close()
	if err := fill(b); err != nil {
		t.Fatalf("fill batch: %v", err)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatalf("commit batch: %v", err)
	}
}

// entry returns entry index with term and a payload of size bytes that names both.
func entry(index, term uint64, size int) *raftpb.Entry {
	data := []byte(fmt.Sprintf("i%d/t%d/", index, term))
	if len(data) < size {
		data = append(data, bytes.Repeat([]byte("abcdefghijklmnopqrstuvwxyz"), size/26+1)...)
	}
	e := &raftpb.Entry{
		Term:  proto.Uint64(term),
		Index: proto.Uint64(index),
		Type:  raftpb.EntryNormal.Enum(),
	}
	if size > 0 {
		e.Data = data[:size:size]
	}
	return e
}

// ents returns consecutive entries from first with the given terms and 8-byte payloads.
func ents(first uint64, terms ...uint64) []*raftpb.Entry {
	out := make([]*raftpb.Entry, len(terms))
	for i, term := range terms {
		out[i] = entry(first+uint64(i), term, 8)
	}
	return out
}

func mustSave(t testing.TB, l *RaftLog, hs *raftpb.HardState, es []*raftpb.Entry) {
	t.Helper()
	if err := l.Save(hs, es); err != nil {
		t.Fatalf("Save(%v, entries %s): %v", hs, span(es), err)
	}
}

func span(es []*raftpb.Entry) string {
	if len(es) == 0 {
		return "[]"
	}
	return fmt.Sprintf("[%d..%d]", es[0].GetIndex(), es[len(es)-1].GetIndex())
}

func entriesEqual(a, b []*raftpb.Entry) bool {
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

func describe(es []*raftpb.Entry) string {
	var buf bytes.Buffer
	buf.WriteByte('[')
	for i, e := range es {
		if i > 0 {
			buf.WriteByte(' ')
		}
		fmt.Fprintf(&buf, "%d/t%d(%dB)", e.GetIndex(), e.GetTerm(), len(e.GetData()))
	}
	buf.WriteByte(']')
	return buf.String()
}

// limitByProtoSize is raft's own size rule (raft.limitSize, as MemoryStorage applies it): the
// longest prefix whose total proto.Size is within maxSize, but at least one entry.
func limitByProtoSize(es []*raftpb.Entry, maxSize uint64) []*raftpb.Entry {
	if len(es) == 0 {
		return es
	}
	size := uint64(proto.Size(es[0]))
	for n := 1; n < len(es); n++ {
		size += uint64(proto.Size(es[n]))
		if size > maxSize {
			return es[:n]
		}
	}
	return es
}

// chunkReader hands out a byte stream in the pieces a writer produced it in, one piece per
// Read, the way an io.Pipe (and so the peer transport) does.
type chunkReader struct{ chunks [][]byte }

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.chunks) > 0 && len(r.chunks[0]) == 0 {
		r.chunks = r.chunks[1:]
	}
	if len(r.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.chunks[0])
	r.chunks[0] = r.chunks[0][n:]
	return n, nil
}

// chunkRecorder records each Write as one chunk.
type chunkRecorder struct{ chunks [][]byte }

func (w *chunkRecorder) Write(p []byte) (int, error) {
	w.chunks = append(w.chunks, append([]byte(nil), p...))
	return len(p), nil
}

func (w *chunkRecorder) bytes() []byte { return bytes.Join(w.chunks, nil) }

// reader replays the recorded stream with the original Write boundaries.
func (w *chunkRecorder) reader() io.Reader {
	cs := make([][]byte, len(w.chunks))
	for i, c := range w.chunks {
		cs[i] = append([]byte(nil), c...)
	}
	return &chunkReader{chunks: cs}
}
