package apply

import (
	"bytes"
	"context"
	"errors"
	"math"
	"sort"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/ordo-db/ordo/internal/mvcc"
)

// Reader is a view of the MVCC store that requests read from.
type Reader interface {
	Range(ctx context.Context, key, end []byte, ro mvcc.RangeOptions) (*mvcc.RangeResult, error)
	// Rev is the revision a response reports: the store's revision, including the changes of
	// the transaction in progress.
	Rev() int64
	// CompactRev is the revision below which history is gone.
	CompactRev() int64
}

// ReadWriter is a Reader that can also change the store, inside one transaction.
type ReadWriter interface {
	Reader
	Put(key, value []byte, lease int64) (*mvccpb.KeyValue, error)
	DeleteRange(key, end []byte) ([]*mvccpb.KeyValue, error)
}

// LeaseChecker tells whether a lease exists.
type LeaseChecker func(id int64) bool

// mvccErr maps MVCC errors to the errors clients see.
func mvccErr(err error) error {
	switch {
	case errors.Is(err, mvcc.ErrCompacted):
		return rpctypes.ErrGRPCCompacted
	case errors.Is(err, mvcc.ErrFutureRev):
		return rpctypes.ErrGRPCFutureRev
	}
	return err
}

// rangeEnd turns a request's range_end into the MVCC convention: nil for a single key, empty
// for "every key from key on".
func rangeEnd(end []byte) []byte {
	if len(end) == 0 {
		return nil
	}
	if len(end) == 1 && end[0] == 0 {
		return []byte{}
	}
	return end
}

// Range serves a RangeRequest from r with etcd's semantics: revision filters and sorting are
// applied to the whole range before limit; count is the number of keys in the range.
func Range(ctx context.Context, r Reader, req *pb.RangeRequest) (*pb.RangeResponse, error) {
	rev := req.Revision
	if rev < 0 {
		rev = 0 // etcd reads a negative revision as the current one
	}
	limit := req.Limit
	if !defaultOrdering(req.SortTarget, req.SortOrder) || hasRevFilters(req) {
		limit = 0
	}
	if limit > 0 && limit < math.MaxInt64 {
		limit++
	}
	rr, err := r.Range(ctx, req.Key, rangeEnd(req.RangeEnd), mvcc.RangeOptions{
		Limit:     limit,
		Rev:       rev,
		CountOnly: req.CountOnly,
		KeysOnly:  req.KeysOnly && req.SortTarget != pb.RangeRequest_VALUE,
	})
	if err != nil {
		return nil, mvccErr(err)
	}
	kvs := filterKVs(rr.KVs, req)
	sortKVs(kvs, req)
	resp := &pb.RangeResponse{Header: &pb.ResponseHeader{Revision: r.Rev()}, Count: rr.Count}
	if req.Limit > 0 && int64(len(kvs)) > req.Limit {
		kvs = kvs[:req.Limit]
		resp.More = true
	}
	stripKeysOnly(kvs, req)
	resp.Kvs = kvs
	return resp, nil
}

// RangeChunk serves one chunk of a streamed range: like Range with key order and no filters,
// but without counting the whole range.
func RangeChunk(ctx context.Context, r Reader, req *pb.RangeRequest) (*pb.RangeResponse, error) {
	if err := checkRangeRev(r, req); err != nil {
		return nil, err
	}
	rr, err := r.Range(ctx, req.Key, rangeEnd(req.RangeEnd), mvcc.RangeOptions{
		Limit:          req.Limit + 1,
		Rev:            req.Revision,
		KeysOnly:       req.KeysOnly && req.SortTarget != pb.RangeRequest_VALUE,
		SkipTotalCount: true,
	})
	if err != nil {
		return nil, mvccErr(err)
	}
	// etcd sorts each chunk on its own when a sort target other than the key comes without an
	// order; a streamed range reproduces that.
	sortKVs(rr.KVs, req)
	resp := &pb.RangeResponse{Header: &pb.ResponseHeader{Revision: r.Rev()}, Kvs: rr.KVs}
	if int64(len(rr.KVs)) > req.Limit {
		resp.Kvs = rr.KVs[:req.Limit]
		resp.More = true
	}
	stripKeysOnly(resp.Kvs, req)
	return resp, nil
}

// stripKeysOnly drops what a keys_only range does not return. etcd serves a keys_only range that
// is not sorted by value from its key index alone, so its key-values carry no lease either; sorted
// by value, it reads the values and only drops them.
func stripKeysOnly(kvs []*mvccpb.KeyValue, req *pb.RangeRequest) {
	if !req.KeysOnly {
		return
	}
	fromIndex := req.SortTarget != pb.RangeRequest_VALUE
	for _, kv := range kvs {
		kv.Value = nil
		if fromIndex {
			kv.Lease = 0
		}
	}
}

func checkRangeRev(r Reader, req *pb.RangeRequest) error {
	switch {
	case req.Revision <= 0:
		return nil
	case req.Revision > r.Rev():
		return rpctypes.ErrGRPCFutureRev
	case req.Revision < r.CompactRev():
		return rpctypes.ErrGRPCCompacted
	}
	return nil
}

// checkTxnRangeRev checks the revision of a range inside a txn. Unlike a plain range, where a
// negative revision reads the current one, etcd refuses it in a txn as compacted when it is
// below the compact revision (which is -1 before the first compaction, in both).
func checkTxnRangeRev(r Reader, req *pb.RangeRequest) error {
	if req.Revision < 0 && req.Revision < r.CompactRev() {
		return rpctypes.ErrGRPCCompacted
	}
	return checkRangeRev(r, req)
}

func defaultOrdering(target pb.RangeRequest_SortTarget, order pb.RangeRequest_SortOrder) bool {
	return order == pb.RangeRequest_NONE || (target == pb.RangeRequest_KEY && order == pb.RangeRequest_ASCEND)
}

func hasRevFilters(r *pb.RangeRequest) bool {
	return r.MinModRevision != 0 || r.MaxModRevision != 0 || r.MinCreateRevision != 0 || r.MaxCreateRevision != 0
}

func filterKVs(kvs []*mvccpb.KeyValue, r *pb.RangeRequest) []*mvccpb.KeyValue {
	if !hasRevFilters(r) {
		return kvs
	}
	out := kvs[:0]
	for _, kv := range kvs {
		switch {
		case r.MaxModRevision != 0 && kv.ModRevision > r.MaxModRevision,
			r.MinModRevision != 0 && kv.ModRevision < r.MinModRevision,
			r.MaxCreateRevision != 0 && kv.CreateRevision > r.MaxCreateRevision,
			r.MinCreateRevision != 0 && kv.CreateRevision < r.MinCreateRevision:
			continue
		}
		out = append(out, kv)
	}
	return out
}

// kvOrder sorts key-values by one target. It uses sort.Sort (not a stable sort) so that equal
// elements end up in the same order etcd returns them.
type kvOrder struct {
	kvs  []*mvccpb.KeyValue
	less func(a, b *mvccpb.KeyValue) bool
}

func (o kvOrder) Len() int           { return len(o.kvs) }
func (o kvOrder) Swap(i, j int)      { o.kvs[i], o.kvs[j] = o.kvs[j], o.kvs[i] }
func (o kvOrder) Less(i, j int) bool { return o.less(o.kvs[i], o.kvs[j]) }

func sortKVs(kvs []*mvccpb.KeyValue, r *pb.RangeRequest) {
	order := r.SortOrder
	if r.SortTarget != pb.RangeRequest_KEY && order == pb.RangeRequest_NONE {
		order = pb.RangeRequest_ASCEND
	}
	if defaultOrdering(r.SortTarget, order) {
		return
	}
	var less func(a, b *mvccpb.KeyValue) bool
	switch r.SortTarget {
	case pb.RangeRequest_KEY:
		less = func(a, b *mvccpb.KeyValue) bool { return bytes.Compare(a.Key, b.Key) < 0 }
	case pb.RangeRequest_VERSION:
		less = func(a, b *mvccpb.KeyValue) bool { return a.Version < b.Version }
	case pb.RangeRequest_CREATE:
		less = func(a, b *mvccpb.KeyValue) bool { return a.CreateRevision < b.CreateRevision }
	case pb.RangeRequest_MOD:
		less = func(a, b *mvccpb.KeyValue) bool { return a.ModRevision < b.ModRevision }
	case pb.RangeRequest_VALUE:
		less = func(a, b *mvccpb.KeyValue) bool { return bytes.Compare(a.Value, b.Value) < 0 }
	default:
		return // rejected by CheckRange before it gets here
	}
	var s sort.Interface = kvOrder{kvs, less}
	if order == pb.RangeRequest_DESCEND {
		s = sort.Reverse(s)
	}
	sort.Sort(s)
}

// put applies a PutRequest whose checks passed.
func put(rw ReadWriter, req *pb.PutRequest) (*pb.PutResponse, error) {
	val, lease := req.Value, req.Lease
	var prev *mvccpb.KeyValue
	if req.IgnoreValue || req.IgnoreLease || req.PrevKv {
		rr, err := rw.Range(context.Background(), req.Key, nil, mvcc.RangeOptions{})
		if err != nil {
			return nil, mvccErr(err)
		}
		if len(rr.KVs) > 0 {
			prev = rr.KVs[0]
		}
	}
	if (req.IgnoreValue || req.IgnoreLease) && prev == nil {
		// checkPut and the txn checks rule this out before anything is written.
		return nil, rpctypes.ErrGRPCKeyNotFound
	}
	if req.IgnoreValue {
		val = prev.Value
	}
	if req.IgnoreLease {
		lease = prev.Lease
	}
	if _, err := rw.Put(req.Key, val, lease); err != nil {
		return nil, err
	}
	resp := &pb.PutResponse{Header: &pb.ResponseHeader{Revision: rw.Rev()}}
	if req.PrevKv {
		resp.PrevKv = prev
	}
	return resp, nil
}

// checkPut verifies what a put needs from the current state: its lease exists, and the key
// exists when the value or lease is to be kept.
func checkPut(r Reader, leases LeaseChecker, req *pb.PutRequest) error {
	if req.Lease != 0 && !leases(req.Lease) {
		return rpctypes.ErrGRPCLeaseNotFound
	}
	if req.IgnoreValue || req.IgnoreLease {
		rr, err := r.Range(context.Background(), req.Key, nil, mvcc.RangeOptions{CountOnly: true})
		if err != nil {
			return mvccErr(err)
		}
		if rr.Count == 0 {
			return rpctypes.ErrGRPCKeyNotFound
		}
	}
	return nil
}

func deleteRange(rw ReadWriter, req *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	deleted, err := rw.DeleteRange(req.Key, rangeEnd(req.RangeEnd))
	if err != nil {
		return nil, err
	}
	resp := &pb.DeleteRangeResponse{Header: &pb.ResponseHeader{Revision: rw.Rev()}, Deleted: int64(len(deleted))}
	if req.PrevKv {
		resp.PrevKvs = deleted
	}
	return resp, nil
}

// IsTxnReadOnly reports whether a txn has no write on either branch, at any depth.
func IsTxnReadOnly(r *pb.TxnRequest) bool {
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, op := range ops {
			switch tv := op.Request.(type) {
			case *pb.RequestOp_RequestPut, *pb.RequestOp_RequestDeleteRange:
				return false
			case *pb.RequestOp_RequestTxn:
				if !IsTxnReadOnly(tv.RequestTxn) {
					return false
				}
			}
		}
	}
	return true
}

// Txn evaluates and executes a transaction against rw. For a read-only txn rw may be a view
// whose write methods are never called. All checks run before the first operation, so a txn
// that fails changes nothing.
func Txn(ctx context.Context, rw ReadWriter, leases LeaseChecker, req *pb.TxnRequest) (*pb.TxnResponse, error) {
	p := &txnPlan{}
	p.decide(rw, req)
	if err := p.check(rw, leases, req); err != nil {
		return nil, err
	}
	p.pos = 0
	resp, err := p.exec(ctx, rw, req)
	if err != nil {
		return nil, err
	}
	resp.Header.Revision = rw.Rev()
	return resp, nil
}

// txnPlan is the branch every (nested) txn takes, in pre-order, decided before any op runs.
type txnPlan struct {
	path []bool
	pos  int
	// deleted holds the ranges deleted by the operations checked so far, in execution order.
	deleted intervals
}

func (p *txnPlan) decide(r Reader, req *pb.TxnRequest) {
	ok := compares(r, req.Compare)
	p.path = append(p.path, ok)
	for _, op := range branch(req, ok) {
		if tv, isTxn := op.Request.(*pb.RequestOp_RequestTxn); isTxn && tv.RequestTxn != nil {
			p.decide(r, tv.RequestTxn)
		}
	}
}

func branch(req *pb.TxnRequest, ok bool) []*pb.RequestOp {
	if ok {
		return req.Success
	}
	return req.Failure
}

func (p *txnPlan) next() bool {
	ok := p.path[p.pos]
	p.pos++
	return ok
}

func (p *txnPlan) check(r Reader, leases LeaseChecker, req *pb.TxnRequest) error {
	for _, op := range branch(req, p.next()) {
		var err error
		switch tv := op.Request.(type) {
		case *pb.RequestOp_RequestRange:
			err = checkTxnRangeRev(r, tv.RequestRange)
		case *pb.RequestOp_RequestPut:
			err = checkPut(r, leases, tv.RequestPut)
			if err == nil && p.keepsDeleted(tv.RequestPut) {
				err = rpctypes.ErrGRPCKeyNotFound
			}
		case *pb.RequestOp_RequestDeleteRange:
			p.deleted = append(p.deleted, deletedInterval(tv.RequestDeleteRange))
		case *pb.RequestOp_RequestTxn:
			err = p.check(r, leases, tv.RequestTxn)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// keepsDeleted reports whether a put keeps the value or lease of a key that an earlier operation
// of the txn deletes. The duplicate-key check lets that through only for a from-key delete (it
// treats range end "\x00" as an empty interval, as etcd does); the key is gone by the time the
// put runs, so the txn is refused as if the key were missing. etcd 3.7.3 crashes on such a txn.
func (p *txnPlan) keepsDeleted(req *pb.PutRequest) bool {
	return (req.IgnoreValue || req.IgnoreLease) && p.deleted.contains(string(req.Key))
}

// deletedInterval is the key interval a DeleteRangeRequest removes.
func deletedInterval(d *pb.DeleteRangeRequest) keyInterval {
	switch end := rangeEnd(d.RangeEnd); {
	case end == nil:
		return keyInterval{string(d.Key), string(d.Key) + "\x00"}
	case len(end) == 0:
		return keyInterval{start: string(d.Key)}
	default:
		return keyInterval{string(d.Key), string(end)}
	}
}

func (p *txnPlan) exec(ctx context.Context, rw ReadWriter, req *pb.TxnRequest) (*pb.TxnResponse, error) {
	ok := p.next()
	ops := branch(req, ok)
	resp := &pb.TxnResponse{Header: &pb.ResponseHeader{}, Succeeded: ok, Responses: make([]*pb.ResponseOp, len(ops))}
	for i, op := range ops {
		out := &pb.ResponseOp{}
		switch tv := op.Request.(type) {
		case *pb.RequestOp_RequestRange:
			r, err := Range(ctx, rw, tv.RequestRange)
			if err != nil {
				return nil, err
			}
			out.Response = &pb.ResponseOp_ResponseRange{ResponseRange: r}
		case *pb.RequestOp_RequestPut:
			r, err := put(rw, tv.RequestPut)
			if err != nil {
				return nil, err
			}
			out.Response = &pb.ResponseOp_ResponsePut{ResponsePut: r}
		case *pb.RequestOp_RequestDeleteRange:
			r, err := deleteRange(rw, tv.RequestDeleteRange)
			if err != nil {
				return nil, err
			}
			out.Response = &pb.ResponseOp_ResponseDeleteRange{ResponseDeleteRange: r}
		case *pb.RequestOp_RequestTxn:
			r, err := p.exec(ctx, rw, tv.RequestTxn)
			if err != nil {
				return nil, err
			}
			r.Header = &pb.ResponseHeader{}
			out.Response = &pb.ResponseOp_ResponseTxn{ResponseTxn: r}
		}
		resp.Responses[i] = out
	}
	return resp, nil
}

func compares(r Reader, cmps []*pb.Compare) bool {
	for _, c := range cmps {
		if !compare(r, c) {
			return false
		}
	}
	return true
}

// compare evaluates one Compare over its key or range: every key must satisfy it; a missing key
// compares as zero revisions, versions and lease, and never satisfies a value compare.
func compare(r Reader, c *pb.Compare) bool {
	rr, err := r.Range(context.Background(), c.Key, rangeEnd(c.RangeEnd), mvcc.RangeOptions{})
	if err != nil {
		return false
	}
	if len(rr.KVs) == 0 {
		if c.Target == pb.Compare_VALUE {
			return false
		}
		return compareKV(c, &mvccpb.KeyValue{})
	}
	for _, kv := range rr.KVs {
		if !compareKV(c, kv) {
			return false
		}
	}
	return true
}

func compareKV(c *pb.Compare, kv *mvccpb.KeyValue) bool {
	var res int
	switch c.Target {
	case pb.Compare_VALUE:
		res = bytes.Compare(kv.Value, c.GetValue())
	case pb.Compare_CREATE:
		res = cmpInt(kv.CreateRevision, c.GetCreateRevision())
	case pb.Compare_MOD:
		res = cmpInt(kv.ModRevision, c.GetModRevision())
	case pb.Compare_VERSION:
		res = cmpInt(kv.Version, c.GetVersion())
	case pb.Compare_LEASE:
		res = cmpInt(kv.Lease, c.GetLease())
	}
	switch c.Result {
	case pb.Compare_EQUAL:
		return res == 0
	case pb.Compare_NOT_EQUAL:
		return res != 0
	case pb.Compare_GREATER:
		return res > 0
	case pb.Compare_LESS:
		return res < 0
	}
	return false
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
