package apply

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/membershippb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ordo-db/ordo/internal/lease"
	"github.com/ordo-db/ordo/internal/mvcc"
	"github.com/ordo-db/ordo/internal/storage"
)

// fuzzMaxTxnOps is the --max-txn-ops the fuzz targets check against (etcd's default).
const fuzzMaxTxnOps = 128

// fuzzLease is the lease the seeded state holds; "foo" is attached to it.
const fuzzLease = 7

// fuzzMember is an Applier over a fresh engine with a small seeded state:
//
//	rev 2 "a" put, rev 3 "b" put, rev 4 "foo" put with fuzzLease, rev 5 "a" put again,
//	rev 6 "b" deleted, rev 7 "\x00" and "c\x00" and "\xff" put in one txn, compacted at 3.
type fuzzMember struct {
	e      *storage.Engine
	kv     *mvcc.Store
	leases *lease.Store
	a      *Applier
	index  uint64 // last applied entry index
}

func newFuzzMember(t testing.TB) *fuzzMember {
	t.Helper()
	e, err := storage.Open(t.TempDir(), zap.NewNop())
	if err != nil {
		t.Fatalf("open engine: %v", err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("close engine: %v", err)
		}
	})
	kv, err := mvcc.Open(e.DB)
	if err != nil {
		t.Fatalf("open mvcc: %v", err)
	}
	ls, err := lease.Open(e.DB)
	if err != nil {
		t.Fatalf("open leases: %v", err)
	}
	a, err := New(Config{Engine: e, KV: kv, Leases: ls, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("new applier: %v", err)
	}
	m := &fuzzMember{e: e, kv: kv, leases: ls, a: a}
	put := func(k, v string, l int64) *pb.InternalRaftRequest {
		return &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte(k), Value: []byte(v), Lease: l}}
	}
	seed := []*pb.InternalRaftRequest{
		{LeaseGrant: &pb.LeaseGrantRequest{ID: fuzzLease, TTL: 60}},
		put("a", "1", 0),
		put("b", "2", 0),
		put("foo", "bar", fuzzLease),
		put("a", "11", 0),
		{DeleteRange: &pb.DeleteRangeRequest{Key: []byte("b")}},
		{Txn: &pb.TxnRequest{Success: []*pb.RequestOp{
			{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("\x00"), Value: []byte("zero")}}},
			{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("c\x00"), Value: []byte("c0")}}},
			{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("\xff"), Value: []byte("ff")}}},
		}}},
		{Compaction: &pb.CompactionRequest{Revision: 3}},
	}
	for _, r := range seed {
		data, err := proto.Marshal(r)
		if err != nil {
			t.Fatalf("marshal seed request: %v", err)
		}
		if res, err := m.apply(data); err != nil || res.Err != nil {
			t.Fatalf("apply seed %v: %v / %v", r, err, res.Err)
		}
	}
	if rev := kv.CurrentRev(); rev != 7 {
		t.Fatalf("seeded state at revision %d, want 7", rev)
	}
	return m
}

// apply applies data as the next normal entry and returns the result its proposer got.
func (m *fuzzMember) apply(data []byte) (Result, error) {
	req := &pb.InternalRaftRequest{}
	id := uint64(0)
	if proto.Unmarshal(data, req) == nil {
		id = requestID(req)
	}
	ch := m.a.Wait(id)
	defer m.a.Forget(id)
	ent := &raftpb.Entry{Type: raftpb.EntryNormal.Enum(), Index: proto.Uint64(m.index + 1), Term: proto.Uint64(1), Data: data}
	if err := m.a.Apply([]*raftpb.Entry{ent}, nil); err != nil {
		return Result{}, err
	}
	m.index++
	select {
	case res := <-ch:
		return res, nil
	default:
		return Result{}, errors.New("applied entry delivered no result to its proposer")
	}
}

// reapply applies data again as the last applied entry: it must be skipped, without a result.
func (m *fuzzMember) reapply(data []byte) error {
	req := &pb.InternalRaftRequest{}
	if err := proto.Unmarshal(data, req); err != nil {
		return err
	}
	id := requestID(req)
	ch := m.a.Wait(id)
	defer m.a.Forget(id)
	ent := &raftpb.Entry{Type: raftpb.EntryNormal.Enum(), Index: proto.Uint64(m.index), Term: proto.Uint64(1), Data: data}
	if err := m.a.Apply([]*raftpb.Entry{ent}, nil); err != nil {
		return err
	}
	select {
	case res := <-ch:
		return fmt.Errorf("skipped entry delivered a result: %v / %v", res.Resp, res.Err)
	default:
		return nil
	}
}

// serverCheck runs the checks the gRPC server (internal/server) does before it proposes req,
// and reports whether the server would propose it at all. Requests only members propose
// (lease checkpoints, member attributes) pass unchecked.
func serverCheck(req *pb.InternalRaftRequest) (proposed bool, err error) {
	switch {
	case req.Put != nil:
		return true, CheckPut(req.Put)
	case req.DeleteRange != nil:
		return true, CheckDelete(req.DeleteRange)
	case req.Txn != nil:
		return true, CheckTxn(req.Txn, fuzzMaxTxnOps)
	case req.Compaction != nil:
		return true, nil
	case req.LeaseGrant != nil:
		// The lease service picks an id for 0 and raises the TTL to the minimum.
		if req.LeaseGrant.TTL > lease.MaxTTL {
			return true, rpctypes.ErrGRPCLeaseTTLTooLarge
		}
		return req.LeaseGrant.ID != 0 && req.LeaseGrant.TTL > 0, nil
	case req.LeaseRevoke != nil, req.LeaseCheckpoint != nil, req.ClusterMemberAttrSet != nil:
		return true, nil
	}
	return false, nil
}

// isRPCError reports whether err is one of the etcd gRPC errors of rpctypes, as a client
// receives them.
func isRPCError(err error) bool {
	st, ok := status.FromError(err)
	if !ok {
		return false
	}
	return st.Code() != codes.OK && st.Code() != codes.Unknown && st.Message() != ""
}

func mustMarshal(f *testing.F, m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		f.Fatalf("marshal %v: %v", m, err)
	}
	return b
}

func opPut(k, v string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(k), Value: []byte(v)}}}
}

func opDel(k, end string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte(k), RangeEnd: []byte(end)}}}
}

func opRange(k, end string, rev int64) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte(k), RangeEnd: []byte(end), Revision: rev}}}
}

func opTxn(t *pb.TxnRequest) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: t}}
}

// seedTxns are transactions for both targets' corpora.
func seedTxns() []*pb.TxnRequest {
	return []*pb.TxnRequest{
		{},
		{
			Compare: []*pb.Compare{{Key: []byte("a"), Target: pb.Compare_VERSION, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_Version{Version: 2}}},
			Success: []*pb.RequestOp{opPut("x", "1"), opRange("a", "\x00", 0)},
			Failure: []*pb.RequestOp{opDel("a", "z")},
		},
		{
			Compare: []*pb.Compare{{Key: []byte("a"), RangeEnd: []byte("\x00"), Target: pb.Compare_VALUE, Result: pb.Compare_GREATER, TargetUnion: &pb.Compare_Value{Value: []byte("0")}}},
			Success: []*pb.RequestOp{opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("k", "then")}, Failure: []*pb.RequestOp{opPut("k", "else")}}), opDel("a", "")},
		},
		{Success: []*pb.RequestOp{opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("k", "1")}}), opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opDel("k", "")}})}},
		{Success: []*pb.RequestOp{opPut("k", "1"), opPut("k", "2")}},
		{Success: []*pb.RequestOp{opDel("a", "c"), opPut("b", "x")}},
		{Success: []*pb.RequestOp{opRange("a", "", 2)}},
		{Success: []*pb.RequestOp{opRange("a", "", 100)}},
		{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("foo"), IgnoreValue: true, IgnoreLease: true, PrevKv: true}}}}},
		{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("a"), Lease: 99}}}}},
		{Success: []*pb.RequestOp{{}}},
	}
}

// FuzzApplyEntry decodes fuzz bytes as the payload of a committed raft entry, the way the
// apply loop does, runs the checks the server runs before proposing such a request, and applies
// what would have been proposed to a member with a small seeded state. Properties:
//   - a payload that does not decode fails the apply with storage.ErrCorrupt;
//   - a check failure is an etcd gRPC error;
//   - applying a checked request never panics and never fails the member: the proposer gets
//     a response or an etcd gRPC error;
//   - a request that fails changes nothing; one that succeeds advances the revision by at most
//     one and reports the new revision;
//   - the entry applied again at the same index is skipped, and reloading the state from disk
//     gives the same revisions.
func FuzzApplyEntry(f *testing.F) {
	put := func(p *pb.PutRequest) *pb.InternalRaftRequest { return &pb.InternalRaftRequest{Put: p} }
	seeds := []*pb.InternalRaftRequest{
		put(&pb.PutRequest{Key: []byte("a"), Value: []byte("v")}),
		put(&pb.PutRequest{Key: []byte("a"), IgnoreValue: true, PrevKv: true}),
		put(&pb.PutRequest{Key: []byte("foo"), Value: []byte("v"), IgnoreLease: true}),
		put(&pb.PutRequest{Key: []byte("missing"), IgnoreValue: true}),
		put(&pb.PutRequest{Key: []byte("a"), Lease: fuzzLease}),
		put(&pb.PutRequest{Key: []byte("a"), Lease: 8}),
		put(&pb.PutRequest{Key: []byte{}, Value: []byte("v")}),
		{Header: &pb.RequestHeader{ID: 42}, DeleteRange: &pb.DeleteRangeRequest{Key: []byte("a"), RangeEnd: []byte("\x00"), PrevKv: true}},
		{DeleteRange: &pb.DeleteRangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00")}},
		{DeleteRange: &pb.DeleteRangeRequest{Key: []byte("c"), RangeEnd: []byte("a")}},
		{Compaction: &pb.CompactionRequest{Revision: 5, Physical: true}},
		{Compaction: &pb.CompactionRequest{Revision: 2}},
		{Compaction: &pb.CompactionRequest{Revision: 8}},
		{Compaction: &pb.CompactionRequest{Revision: -1}},
		{LeaseGrant: &pb.LeaseGrantRequest{ID: fuzzLease, TTL: 5}},
		{LeaseGrant: &pb.LeaseGrantRequest{ID: 100, TTL: 5}},
		{LeaseRevoke: &pb.LeaseRevokeRequest{ID: fuzzLease}},
		{LeaseRevoke: &pb.LeaseRevokeRequest{ID: 100}},
		{LeaseCheckpoint: &pb.LeaseCheckpointRequest{Checkpoints: []*pb.LeaseCheckpoint{{ID: 0, Remaining_TTL: 1000}, {ID: fuzzLease, Remaining_TTL: 1}}}},
		{ClusterMemberAttrSet: &membershippb.ClusterMemberAttrSetRequest{Member_ID: 1, MemberAttributes: &membershippb.Attributes{Name: "m1", ClientUrls: []string{"http://127.0.0.1:2379"}}}},
		{},
	}
	for _, txn := range seedTxns() {
		seeds = append(seeds, &pb.InternalRaftRequest{ID: 9, Txn: txn})
	}
	for _, s := range seeds {
		f.Add(mustMarshal(f, s))
	}
	f.Add([]byte{0xff})
	f.Add([]byte{0x0a, 0x05, 0x01})

	f.Fuzz(func(t *testing.T, data []byte) {
		req := &pb.InternalRaftRequest{}
		decodeErr := proto.Unmarshal(data, req)
		m := newFuzzMember(t)
		if decodeErr != nil {
			_, err := m.apply(data)
			if !errors.Is(err, storage.ErrCorrupt) {
				t.Fatalf("undecodable entry applied with %v, want storage.ErrCorrupt", err)
			}
			return
		}
		proposed, err := serverCheck(req)
		if err != nil {
			if !isRPCError(err) {
				t.Fatalf("check of %v = %v, not an etcd gRPC error", req, err)
			}
			return
		}
		if !proposed || len(data) == 0 {
			return // the server never proposes it; an empty entry is raft's own
		}

		revBefore, compactBefore := m.kv.CurrentRev(), m.kv.CompactRev()
		res, err := m.apply(data)
		if err != nil {
			t.Fatalf("apply of checked request %v failed the member: %v", req, err)
		}
		rev := m.kv.CurrentRev()
		if res.Err != nil {
			if !isRPCError(res.Err) {
				t.Fatalf("apply of %v = %v, not an etcd gRPC error", req, res.Err)
			}
			if rev != revBefore || m.kv.CompactRev() != compactBefore {
				t.Fatalf("failed request %v (%v) moved revisions %d/%d to %d/%d", req, res.Err, revBefore, compactBefore, rev, m.kv.CompactRev())
			}
		} else {
			if rev != revBefore && rev != revBefore+1 {
				t.Fatalf("request %v moved the revision from %d to %d", req, revBefore, rev)
			}
			if h := responseRevision(req, res.Resp); h != -1 && h != rev {
				t.Fatalf("response to %v reports revision %d, store is at %d", req, h, rev)
			}
		}

		// Applying the same entry again (raft hands a restarted member the entries above its
		// last snapshot, some of them already applied) is a no-op.
		if err := m.reapply(data); err != nil {
			t.Fatalf("re-apply of %v: %v", req, err)
		}
		if got := m.kv.CurrentRev(); got != rev {
			t.Fatalf("re-applied entry moved the revision from %d to %d", rev, got)
		}
		compactRev := m.kv.CompactRev()
		if err := m.a.Restore(); err != nil {
			t.Fatalf("reload after %v: %v", req, err)
		}
		if m.kv.CurrentRev() != rev || m.kv.CompactRev() != compactRev {
			t.Fatalf("reload after %v: revisions %d/%d, want %d/%d", req, m.kv.CurrentRev(), m.kv.CompactRev(), rev, compactRev)
		}
	})
}

// responseRevision is the header revision of the response to a KV request, or -1 if the
// response has none to check.
func responseRevision(req *pb.InternalRaftRequest, resp proto.Message) int64 {
	var h *pb.ResponseHeader
	switch r := resp.(type) {
	case *pb.PutResponse:
		h = r.Header
	case *pb.DeleteRangeResponse:
		h = r.Header
	case *pb.TxnResponse:
		h = r.Header
	case *pb.CompactionResponse:
		h = r.Header
	default:
		return -1
	}
	if h == nil {
		return -2 // never equal to a revision: a KV response must carry a header
	}
	return h.Revision
}

// txnWrite is one write on an execution path of a txn: a put of key, or a delete of the etcd
// range [key, end).
type txnWrite struct {
	put      bool
	key, end []byte
}

// covers reports whether a delete covers key k as the duplicate-key rule sees it: range_end
// empty is the single key, any other range_end is the interval [key, range_end). Like etcd, the
// rule does not read "\x00" as "every key from key on", so a from-key delete covers nothing
// there; the apply path refuses a put that keeps the value or lease of a key such a delete
// removed (FuzzApplyEntry checks that a failing txn changes nothing).
func (w txnWrite) covers(k []byte) bool {
	if len(w.end) == 0 {
		return bytes.Equal(k, w.key)
	}
	return bytes.Compare(k, w.key) >= 0 && bytes.Compare(k, w.end) < 0
}

// maxTxnPaths bounds the execution paths txnPaths enumerates.
const maxTxnPaths = 256

// txnPaths returns the writes of every execution path of ops, in execution order (each nested
// txn takes one of its branches), or false if there are more than maxTxnPaths paths.
func txnPaths(ops []*pb.RequestOp) ([][]txnWrite, bool) {
	paths := [][]txnWrite{nil}
	for _, op := range ops {
		switch tv := op.Request.(type) {
		case *pb.RequestOp_RequestPut:
			for i := range paths {
				paths[i] = append(paths[i][:len(paths[i]):len(paths[i])], txnWrite{put: true, key: tv.RequestPut.Key})
			}
		case *pb.RequestOp_RequestDeleteRange:
			for i := range paths {
				paths[i] = append(paths[i][:len(paths[i]):len(paths[i])], txnWrite{key: tv.RequestDeleteRange.Key, end: tv.RequestDeleteRange.RangeEnd})
			}
		case *pb.RequestOp_RequestTxn:
			sub, ok := txnBranches(tv.RequestTxn)
			if !ok || len(paths)*len(sub) > maxTxnPaths {
				return nil, false
			}
			var next [][]txnWrite
			for _, p := range paths {
				for _, s := range sub {
					next = append(next, append(p[:len(p):len(p)], s...))
				}
			}
			paths = next
		}
	}
	return paths, true
}

// txnBranches returns the paths through either branch of r.
func txnBranches(r *pb.TxnRequest) ([][]txnWrite, bool) {
	then, ok := txnPaths(r.Success)
	if !ok {
		return nil, false
	}
	els, ok := txnPaths(r.Failure)
	if !ok || len(then)+len(els) > maxTxnPaths {
		return nil, false
	}
	return append(then, els...), true
}

// pathConflicts classifies the conflicts on one path: a key put twice, a put of a key an
// earlier delete on the path covers (its ignore_value/ignore_lease would find no key), and any
// put overlapping any delete.
func pathConflicts(p []txnWrite) (dupPut, putAfterDelete, overlap bool) {
	for j, w := range p {
		if !w.put {
			continue
		}
		for i, o := range p {
			switch {
			case i == j:
			case o.put && bytes.Equal(o.key, w.key):
				dupPut = true
			case !o.put && o.covers(w.key):
				overlap = true
				if i < j {
					putAfterDelete = true
				}
			}
		}
	}
	return dupPut, putAfterDelete, overlap
}

// FuzzCheckRequest fuzzes the validation the server runs on Range, Put, DeleteRange and Txn
// requests before proposing them, with requests decoded from fuzz bytes as gRPC would. Every
// error is an etcd gRPC error and the checks are deterministic. For a Txn the duplicate-key
// rule is compared with the execution paths it guards: an accepted txn never puts a key twice
// on one path nor puts a key after deleting it (the apply path relies on that), and a txn
// rejected as a duplicate really writes a key twice on some path.
func FuzzCheckRequest(f *testing.F) {
	for _, txn := range seedTxns() {
		f.Add(uint8(3), mustMarshal(f, txn))
	}
	f.Add(uint8(0), mustMarshal(f, &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("\x00"), SortOrder: pb.RangeRequest_DESCEND, SortTarget: pb.RangeRequest_MOD}))
	f.Add(uint8(0), mustMarshal(f, &pb.RangeRequest{Key: []byte("a"), SortOrder: 7}))
	f.Add(uint8(0), mustMarshal(f, &pb.RangeRequest{Key: []byte("a"), MinModRevision: 3}))
	f.Add(uint8(1), mustMarshal(f, &pb.PutRequest{Key: []byte("a"), Value: []byte("v"), IgnoreValue: true}))
	f.Add(uint8(1), mustMarshal(f, &pb.PutRequest{Key: []byte("a"), Lease: 5, IgnoreLease: true}))
	f.Add(uint8(2), mustMarshal(f, &pb.DeleteRangeRequest{Key: []byte("a"), RangeEnd: []byte("b")}))
	f.Add(uint8(2), []byte{})
	many := &pb.TxnRequest{}
	for range fuzzMaxTxnOps + 1 {
		many.Success = append(many.Success, opRange("a", "", 0))
	}
	f.Add(uint8(3), mustMarshal(f, many))

	f.Fuzz(func(t *testing.T, kind uint8, data []byte) {
		var (
			msg   proto.Message
			check func() error
		)
		switch kind % 4 {
		case 0:
			r := &pb.RangeRequest{}
			msg, check = r, func() error { _ = StreamableRange(r); return CheckRange(r) }
		case 1:
			r := &pb.PutRequest{}
			msg, check = r, func() error { return CheckPut(r) }
		case 2:
			r := &pb.DeleteRangeRequest{}
			msg, check = r, func() error { return CheckDelete(r) }
		case 3:
			r := &pb.TxnRequest{}
			msg, check = r, func() error { return CheckTxn(r, fuzzMaxTxnOps) }
		}
		if err := proto.Unmarshal(data, msg); err != nil {
			return // gRPC refuses the request before any handler runs
		}
		err := check()
		if err2 := check(); (err == nil) != (err2 == nil) || (err != nil && err.Error() != err2.Error()) {
			t.Fatalf("check of %v is not deterministic: %v, then %v", msg, err, err2)
		}
		if err != nil && !isRPCError(err) {
			t.Fatalf("check of %v = %v, not an etcd gRPC error", msg, err)
		}
		txn, ok := msg.(*pb.TxnRequest)
		if !ok || (err != nil && !errors.Is(err, rpctypes.ErrGRPCDuplicateKey)) {
			return
		}
		paths, ok := txnBranches(txn)
		if !ok {
			return
		}
		var anyDup bool
		for _, p := range paths {
			dupPut, putAfterDelete, overlap := pathConflicts(p)
			if err == nil && (dupPut || putAfterDelete) {
				t.Fatalf("CheckTxn accepted %v, but one execution path writes a key twice: %v", txn, describePath(p))
			}
			anyDup = anyDup || dupPut || overlap
		}
		if err != nil && !anyDup {
			t.Fatalf("CheckTxn rejected %v as a duplicate, but no execution path writes a key twice", txn)
		}
	})
}

func describePath(p []txnWrite) string {
	var b strings.Builder
	for i, w := range p {
		if i > 0 {
			b.WriteString(", ")
		}
		if w.put {
			fmt.Fprintf(&b, "put %q", w.key)
		} else {
			fmt.Fprintf(&b, "delete [%q, %q)", w.key, w.end)
		}
	}
	return b.String()
}
