package difftest

import (
	"fmt"
	"math/rand/v2"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
)

// keys is the small key space the generator draws from, so that operations collide. It holds
// prefixes of each other, a key with a NUL byte and the largest one-byte key.
var keys = []string{"a", "b", "c", "foo", "foo/1", "foo/10", "foo/2", "foo0", "k", "k\x00", "z", "\xff"}

// prefixes are used as prefix ranges; "\x00" with end "\x00" is every key.
var prefixes = []string{"foo", "foo/", "k", "\x00", "\xff", "fo"}

var values = []string{"", "v0", "v1", "v2", "v3", "vv"}

// kind names an operation.
type kind string

const (
	opPut        kind = "Put"
	opRange      kind = "Range"
	opDelete     kind = "DeleteRange"
	opTxn        kind = "Txn"
	opCompact    kind = "Compact"
	opGrant      kind = "LeaseGrant"
	opGrantShort kind = "LeaseGrant+Revoke" // a lease too short to outlive the run, revoked at once
	opRevoke     kind = "LeaseRevoke"
	opTTL        kind = "LeaseTimeToLive"
	opLeases     kind = "LeaseLeases"
	opWatch      kind = "Watch"
)

// op is one generated request, in etcd's terms: lease ids are etcd's, and are translated for
// Ordo when the op is sent.
type op struct {
	kind kind
	req  proto.Message
}

// gen generates operations. It follows the state of the etcd side (revision, compaction, leases)
// from the responses the runner feeds back, so that revisions and lease ids hit interesting
// values.
type gen struct {
	r          *rand.Rand
	rev        int64
	compactRev int64
	leases     []int64 // every lease id granted so far (etcd's), live or not
	live       map[int64]bool
	watches    int
	maxWatches int
}

func newGen(seed uint64, maxWatches int) *gen {
	return &gen{
		r:          rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		rev:        1,
		live:       make(map[int64]bool),
		maxWatches: maxWatches,
	}
}

func (g *gen) p(prob float64) bool { return g.r.Float64() < prob }

func (g *gen) pick(ss []string) string { return ss[g.r.IntN(len(ss))] }

func (g *gen) next() op {
	type weighted struct {
		w int
		k kind
	}
	table := []weighted{
		{25, opPut}, {20, opRange}, {8, opDelete}, {20, opTxn}, {2, opCompact},
		{4, opGrant}, {1, opGrantShort}, {2, opRevoke}, {4, opTTL}, {2, opLeases}, {3, opWatch},
	}
	total := 0
	for _, w := range table {
		total += w.w
	}
	n := g.r.IntN(total)
	var k kind
	for _, w := range table {
		if n < w.w {
			k = w.k
			break
		}
		n -= w.w
	}
	switch k {
	case opPut:
		return op{k, g.put()}
	case opRange:
		return op{k, g.rangeReq()}
	case opDelete:
		return op{k, g.deleteReq()}
	case opTxn:
		return op{k, g.txn(0)}
	case opCompact:
		return op{k, g.compact()}
	case opGrant:
		return op{k, g.grant(false)}
	case opGrantShort:
		return op{k, g.grant(true)}
	case opRevoke:
		return op{k, &pb.LeaseRevokeRequest{ID: g.leaseID(0.7)}}
	case opTTL:
		return op{k, &pb.LeaseTimeToLiveRequest{ID: g.leaseID(0.8), Keys: g.p(0.5)}}
	case opLeases:
		return op{k, &pb.LeaseLeasesRequest{}}
	case opWatch:
		if g.watches >= g.maxWatches {
			return op{opRange, g.rangeReq()}
		}
		g.watches++
		return op{k, g.watch()}
	}
	panic(fmt.Sprintf("unknown kind %q", k))
}

func (g *gen) key() []byte {
	if g.p(0.05) {
		return fmt.Appendf(nil, "r%d", g.r.IntN(1000))
	}
	return []byte(g.pick(keys))
}

// keyRange returns a key and a range end: a single key, a prefix, from-key, an arbitrary
// (possibly empty or inverted) interval, or key+"\x00".
func (g *gen) keyRange() (key, end []byte) {
	switch n := g.r.IntN(100); {
	case n < 45:
		return g.key(), nil
	case n < 62:
		p := g.pick(prefixes)
		if p == "\x00" {
			return []byte{0}, []byte{0}
		}
		return []byte(p), []byte(clientv3.GetPrefixRangeEnd(p))
	case n < 74:
		return g.key(), []byte{0}
	case n < 92:
		return g.key(), g.key()
	default:
		k := g.key()
		return k, append(append([]byte{}, k...), 0)
	}
}

func (g *gen) value() []byte {
	if g.p(0.1) {
		return fmt.Appendf(nil, "val-%d", g.r.IntN(100))
	}
	return []byte(g.pick(values))
}

// revision returns a revision to read or watch at: recent, old, compacted, current or future.
func (g *gen) revision() int64 {
	switch g.r.IntN(9) {
	case 0:
		return g.rev
	case 1:
		return g.rev + 1
	case 2:
		return g.rev + 1 + int64(g.r.IntN(5))
	case 3:
		return g.compactRev
	case 4:
		return max(g.compactRev-1, 1)
	case 5:
		return -1
	default:
		return 1 + g.r.Int64N(g.rev)
	}
}

// leaseID returns a granted lease, live with probability pLive when there is one, else a
// revoked lease, an unknown id or no lease.
func (g *gen) leaseID(pLive float64) int64 {
	var live []int64
	for _, id := range g.leases {
		if g.live[id] {
			live = append(live, id)
		}
	}
	if len(live) > 0 && g.p(pLive) {
		return live[g.r.IntN(len(live))]
	}
	if len(g.leases) > 0 && g.p(0.5) {
		return g.leases[g.r.IntN(len(g.leases))]
	}
	if g.p(0.3) {
		return 0
	}
	return 424242
}

func (g *gen) put() *pb.PutRequest {
	req := &pb.PutRequest{Key: g.key(), Value: g.value(), PrevKv: g.p(0.3)}
	if g.p(0.02) {
		req.Key = nil
	}
	if g.p(0.1) {
		req.IgnoreValue = true
		if g.p(0.85) {
			req.Value = nil
		}
	}
	if g.p(0.25) {
		req.Lease = g.leaseID(0.85)
	}
	if g.p(0.1) {
		req.IgnoreLease = true
		if g.p(0.8) {
			req.Lease = 0
		}
	}
	return req
}

func (g *gen) rangeReq() *pb.RangeRequest {
	key, end := g.keyRange()
	req := &pb.RangeRequest{Key: key, RangeEnd: end}
	if g.p(0.01) {
		req.Key = nil
	}
	if g.p(0.3) {
		req.Limit = []int64{1, 2, 3, 5, -1}[g.r.IntN(5)]
	}
	if g.p(0.3) {
		req.Revision = g.revision()
	}
	if g.p(0.35) {
		req.SortOrder = pb.RangeRequest_SortOrder(g.r.IntN(3))
		req.SortTarget = pb.RangeRequest_SortTarget(g.r.IntN(5))
		if g.p(0.03) {
			req.SortOrder = 7
		}
	}
	req.Serializable = g.p(0.2)
	req.KeysOnly = g.p(0.15)
	req.CountOnly = g.p(0.1)
	if g.p(0.1) {
		req.MinModRevision = 1 + g.r.Int64N(g.rev)
	}
	if g.p(0.1) {
		req.MaxModRevision = 1 + g.r.Int64N(g.rev)
	}
	if g.p(0.1) {
		req.MinCreateRevision = 1 + g.r.Int64N(g.rev)
	}
	if g.p(0.1) {
		req.MaxCreateRevision = 1 + g.r.Int64N(g.rev)
	}
	return req
}

func (g *gen) deleteReq() *pb.DeleteRangeRequest {
	key, end := g.keyRange()
	if g.p(0.01) {
		key = nil
	}
	return &pb.DeleteRangeRequest{Key: key, RangeEnd: end, PrevKv: g.p(0.4)}
}

func (g *gen) compare() *pb.Compare {
	c := &pb.Compare{Key: g.key(), Result: pb.Compare_CompareResult(g.r.IntN(4))}
	if g.p(0.15) {
		_, c.RangeEnd = g.keyRange()
		if c.RangeEnd == nil {
			c.RangeEnd = []byte{0}
		}
	}
	switch g.r.IntN(5) {
	case 0:
		c.Target = pb.Compare_VERSION
		c.TargetUnion = &pb.Compare_Version{Version: g.r.Int64N(4)}
	case 1:
		c.Target = pb.Compare_CREATE
		c.TargetUnion = &pb.Compare_CreateRevision{CreateRevision: g.r.Int64N(g.rev + 2)}
	case 2:
		c.Target = pb.Compare_MOD
		c.TargetUnion = &pb.Compare_ModRevision{ModRevision: g.r.Int64N(g.rev + 2)}
	case 3:
		c.Target = pb.Compare_VALUE
		c.TargetUnion = &pb.Compare_Value{Value: g.value()}
	case 4:
		c.Target = pb.Compare_LEASE
		c.TargetUnion = &pb.Compare_Lease{Lease: g.leaseID(0.7)}
	}
	return c
}

func (g *gen) txn(depth int) *pb.TxnRequest {
	req := &pb.TxnRequest{}
	if depth == 0 && g.p(0.02) {
		// More operations than --max-txn-ops (128) allows.
		for range 129 {
			req.Success = append(req.Success, &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: g.key()}}})
		}
		return req
	}
	for range g.r.IntN(4) {
		req.Compare = append(req.Compare, g.compare())
	}
	req.Success = g.txnOps(depth)
	req.Failure = g.txnOps(depth)
	if depth == 0 {
		avoidEtcdCrash(req)
	}
	return req
}

// avoidEtcdCrash drops ignore_value and ignore_lease from the puts of a txn that also deletes a
// from-key range: etcd 3.7.3 crashes (nil dereference while applying, so again on every restart)
// when such a put follows a from-key delete that removed its key. Ordo refuses that txn instead,
// which TestPutAfterFromKeyDelete checks.
func avoidEtcdCrash(req *pb.TxnRequest) {
	var fromKey bool
	var puts []*pb.PutRequest
	var walk func(*pb.TxnRequest)
	walk = func(t *pb.TxnRequest) {
		for _, op := range append(append([]*pb.RequestOp{}, t.Success...), t.Failure...) {
			switch tv := op.Request.(type) {
			case *pb.RequestOp_RequestDeleteRange:
				fromKey = fromKey || string(tv.RequestDeleteRange.RangeEnd) == "\x00"
			case *pb.RequestOp_RequestPut:
				puts = append(puts, tv.RequestPut)
			case *pb.RequestOp_RequestTxn:
				walk(tv.RequestTxn)
			}
		}
	}
	walk(req)
	if !fromKey {
		return
	}
	for _, p := range puts {
		p.IgnoreValue, p.IgnoreLease = false, false
	}
}

func (g *gen) txnOps(depth int) []*pb.RequestOp {
	var ops []*pb.RequestOp
	for range g.r.IntN(5) {
		var o *pb.RequestOp
		switch n := g.r.IntN(100); {
		case n < 35:
			r := g.rangeReq()
			r.Serializable = false
			o = &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: r}}
		case n < 70:
			o = &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: g.put()}}
		case n < 88 || depth >= 2:
			o = &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: g.deleteReq()}}
		default:
			o = &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: g.txn(depth + 1)}}
		}
		ops = append(ops, o)
	}
	return ops
}

func (g *gen) compact() *pb.CompactionRequest {
	req := &pb.CompactionRequest{Physical: g.p(0.5)}
	switch n := g.r.IntN(100); {
	case n < 60 && g.rev > g.compactRev:
		req.Revision = g.compactRev + 1 + g.r.Int64N(g.rev-g.compactRev)
	case n < 75:
		req.Revision = g.rev + 1
	case n < 90:
		// The compact revision itself: refused, except revision 0 before the first
		// compaction, which etcd (and Ordo) accept.
		req.Revision = g.compactRev
	default:
		req.Revision = g.rev
	}
	return req
}

// grant returns a LeaseGrantRequest with a fixed id from a small pool (so grants collide) or an
// automatic id. Leases that are kept have TTLs far longer than any run, so that no lease expires
// at a point in the sequence that differs between the servers; short ones are revoked at once.
func (g *gen) grant(short bool) *pb.LeaseGrantRequest {
	req := &pb.LeaseGrantRequest{}
	if g.p(0.5) {
		req.ID = 1 + g.r.Int64N(20)
	}
	if short {
		req.TTL = []int64{-1, 0, 1, 2, 3}[g.r.IntN(5)]
		return req
	}
	req.TTL = []int64{3600, 7200, 86400}[g.r.IntN(3)]
	if g.p(0.03) {
		req.TTL = 9_000_000_001 // above etcd's maximum lease TTL
	}
	return req
}

func (g *gen) watch() *pb.WatchCreateRequest {
	key, end := g.keyRange()
	req := &pb.WatchCreateRequest{Key: key, RangeEnd: end, PrevKv: g.p(0.3)}
	if g.p(0.6) {
		req.StartRevision = g.revision()
	}
	switch n := g.r.IntN(100); {
	case n < 15:
		req.Filters = []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_NOPUT}
	case n < 30:
		req.Filters = []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_NODELETE}
	case n < 33:
		req.Filters = []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_NOPUT, pb.WatchCreateRequest_NODELETE}
	}
	return req
}
