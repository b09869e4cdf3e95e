package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// fuzzPairs decodes fuzz bytes into sorted, distinct state key/value pairs: per pair one byte
// picks the key's first byte (each state prefix, and the highest one a state key may start
// with) and the key and value lengths, the next bytes are the key's remainder and the value.
func fuzzPairs(blob []byte) []kv {
	firsts := []byte{PrefixMeta, PrefixMVCC, PrefixLease, 0xfe}
	m := map[string]string{}
	for len(blob) > 0 && len(m) < 64 {
		h := blob[0]
		blob = blob[1:]
		kl, vl := int(h>>2&0x7), int(h>>5)*3
		kl, vl = min(kl, len(blob)), min(vl, max(len(blob)-kl, 0))
		k := append([]byte{firsts[h&3]}, blob[:kl]...)
		m[string(k)] = string(blob[kl : kl+vl])
		blob = blob[kl+vl:]
	}
	out := make([]kv, 0, len(m))
	for k, v := range m {
		out = append(out, kv{k, v})
	}
	slices.SortFunc(out, func(a, b kv) int { return bytes.Compare([]byte(a.k), []byte(b.k)) })
	return out
}

// contentSpans returns the offsets of the key and value bytes of a stream built by buildStream
// (the bytes no length field covers).
func contentSpans(pairs []kv) (offsets []int) {
	pos := len(snapMagic)
	for _, p := range pairs {
		for _, b := range []string{p.k, p.v} {
			pos += len(binary.AppendUvarint(nil, uint64(len(b))))
			for i := range len(b) {
				offsets = append(offsets, pos+i)
			}
			pos += len(b)
		}
	}
	return offsets
}

// FuzzSnapshotRestore builds well-formed snapshot streams from fuzzed pairs and checks the
// restore path end to end: the stream is accepted, and once installed the state-machine
// keyspace holds exactly the streamed pairs while the raft keys are untouched. The same stream
// with one key or value byte altered, or with two pairs out of order, is rejected and nothing is
// staged. FuzzReceiveSnapshot covers arbitrary bytes; this target reaches the accepting path,
// which random bytes almost never do (they would need a matching checksum).
func FuzzSnapshotRestore(f *testing.F) {
	f.Add([]byte{}, uint16(0), uint8(1))
	f.Add([]byte("\x05abc\x45k1\x22vvv\xe7zzzzzzvalue"), uint16(3), uint8(0x80))
	f.Add([]byte("\x00\x01\x02\x03\xff\xff\xff\xff\xff\xff\xff\xff"), uint16(7), uint8(0xff))
	f.Add([]byte("\x1f\xff\xff\xff\xff\xff\xff\xff\x60abcdef"), uint16(100), uint8(2))

	dst := newTestEngine(f)
	commit(f, dst.Engine, func(b *pebble.Batch) error { return b.Set([]byte{PrefixRaft, 'z'}, []byte("raft"), nil) })
	raftBefore := raftKVs(f, dst.Engine)
	ctx := context.Background()
	index := uint64(0)
	f.Fuzz(func(t *testing.T, blob []byte, at uint16, mask uint8) {
		pairs := fuzzPairs(blob)
		stream := buildStream(pairs)

		index++
		if err := receive(dst.Engine, ctx, index, bytes.NewReader(stream)); err != nil {
			t.Fatalf("well-formed stream of %s rejected: %v", kvsString(pairs), err)
		}
		if err := dst.InstallSnapshot(ctx, index); err != nil {
			t.Fatalf("install: %v", err)
		}
		if got := stateKVs(t, dst.Engine); !sameKVs(got, pairs) && !(len(got) == 0 && len(pairs) == 0) {
			t.Fatalf("installed state %s, streamed %s", kvsString(got), kvsString(pairs))
		}
		if got := raftKVs(t, dst.Engine); !sameKVs(got, raftBefore) {
			t.Fatalf("install changed the raft keys: %s", kvsString(got))
		}

		var bad [][]byte
		if spans := contentSpans(pairs); len(spans) > 0 {
			altered := slices.Clone(stream)
			altered[spans[int(at)%len(spans)]] ^= mask | 1
			bad = append(bad, altered)
		}
		if len(pairs) >= 2 {
			i := int(at) % (len(pairs) - 1)
			swapped := slices.Clone(pairs)
			swapped[i], swapped[i+1] = swapped[i+1], swapped[i]
			bad = append(bad, buildStream(swapped))
		}
		// A stream cut anywhere before its checksum ends.
		bad = append(bad, stream[:int(at)%len(stream)])
		for _, s := range bad {
			index++
			err := receive(dst.Engine, ctx, index, bytes.NewReader(s))
			if !errors.Is(err, ErrBadSnapshot) {
				t.Fatalf("damaged stream %x accepted or failed otherwise: %v", s, err)
			}
			if dst.HasStagedSnapshot(index) {
				t.Fatalf("damaged stream was staged")
			}
		}
		if files := snapDirFiles(t, dst.Engine); len(files) != 0 {
			t.Fatalf("staging dir holds %v", files)
		}
	})
}

// FuzzApplySnapshotMeta resets a raft log that holds entries to fuzzed snapshot metadata, the
// raft side of a restore, and checks what raft then reads from it, before and after a reopen:
// the log starts right after the snapshot, the snapshot's term is known and its entries are
// compacted, the metadata and
// configuration come back unchanged, and entries can be appended after it.
func FuzzApplySnapshotMeta(f *testing.F) {
	f.Add(uint64(10), uint64(2), []byte{1, 2, 3}, []byte{}, uint8(5))
	f.Add(uint64(3), uint64(1), []byte{1}, []byte{4}, uint8(0))
	f.Add(uint64(1000), uint64(7), []byte{}, []byte{1, 2}, uint8(9))
	f.Add(uint64(1), uint64(1), []byte{0xff, 0xfe}, []byte{}, uint8(20))
	f.Fuzz(func(t *testing.T, index, term uint64, voters, learners []byte, logLen uint8) {
		if index == 0 || index > 1<<62 || term == 0 {
			return // raft never sends such a snapshot
		}
		te := newTestEngine(t)
		l := mustOpenRaftLog(t, te.Engine)
		terms := make([]uint64, int(logLen%32))
		for i := range terms {
			terms[i] = 1
		}
		if len(terms) > 0 {
			mustSave(t, l, &raftpb.HardState{Term: proto.Uint64(1), Commit: proto.Uint64(0)}, ents(1, terms...))
		}
		cs := &raftpb.ConfState{}
		for _, v := range voters {
			cs.Voters = append(cs.Voters, uint64(v)+1)
		}
		for _, v := range learners {
			cs.Learners = append(cs.Learners, uint64(v)+1000)
		}
		meta := &raftpb.SnapshotMetadata{Index: proto.Uint64(index), Term: proto.Uint64(term), ConfState: cs}
		if err := l.ApplySnapshot(meta); err != nil {
			t.Fatalf("ApplySnapshot(%v): %v", meta, err)
		}
		check := func(what string, l *RaftLog) {
			t.Helper()
			first, err := l.FirstIndex()
			if err != nil || first != index+1 {
				t.Fatalf("%s: FirstIndex = %d, %v, want %d", what, first, err, index+1)
			}
			last, err := l.LastIndex()
			if err != nil || last != index {
				t.Fatalf("%s: LastIndex = %d, %v, want %d", what, last, err, index)
			}
			if got, err := l.Term(index); err != nil || got != term {
				t.Fatalf("%s: Term(%d) = %d, %v, want %d", what, index, got, err, term)
			}
			snap, err := l.Snapshot()
			if err != nil || !proto.Equal(snap.GetMetadata(), meta) {
				t.Fatalf("%s: Snapshot = %v, %v, want metadata %v", what, snap, err, meta)
			}
			if es, err := l.Entries(index, index+1, 1<<20); !errors.Is(err, raft.ErrCompacted) {
				t.Fatalf("%s: Entries(%d, %d) = %d entries, %v, want ErrCompacted", what, index, index+1, len(es), err)
			}
		}
		check("after ApplySnapshot", l)
		te.reopen()
		l = mustOpenRaftLog(t, te.Engine)
		check("after reopen", l)

		next := ents(index+1, term, term+1)
		mustSave(t, l, &raftpb.HardState{Term: proto.Uint64(term + 1), Commit: proto.Uint64(index)}, next)
		got, err := l.Entries(index+1, index+3, 1<<20)
		if err != nil || !entriesEqual(got, next) {
			t.Fatalf("entries appended after the snapshot: %s, %v", describe(got), err)
		}
	})
}
