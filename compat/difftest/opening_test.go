package difftest

import (
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// openingOps are sent to the fresh servers before the random operations of every run: cases
// the random runs reach rarely or only at the start, each a former difference between etcd
// and Ordo.
//   - Compaction at revision 0: etcd's compact revision starts at -1, so the first one is
//     accepted and the next refused; a negative revision in a txn range is refused once it is
//     below the compact revision.
//   - prev_kv of the events of a txn that changes a key twice (a put and a from-key delete):
//     the key before the txn, none if the txn created it; seen by a watch opened before the
//     txn and one replaying it from the history.
//   - Watches whose range end is not above the key (refused with "mvcc: watcher range is
//     empty"), and the from-key and empty-key ranges that are valid.
func openingOps() []op {
	txnRange := func(rev int64) op {
		return op{opTxn, &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{
			RequestRange: &pb.RangeRequest{Key: []byte("a"), Revision: rev}}}}}}
	}
	watch := func(key, end string, start int64) op {
		return op{opWatch, &pb.WatchCreateRequest{Key: []byte(key), RangeEnd: []byte(end), StartRevision: start, PrevKv: true}}
	}
	put := func(k, v string) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(k), Value: []byte(v), PrevKv: true}}}
	}
	return []op{
		txnRange(-1),
		txnRange(-2),
		{opCompact, &pb.CompactionRequest{Revision: 0}},
		{opCompact, &pb.CompactionRequest{Revision: 0, Physical: true}},
		txnRange(-1),
		{opPut, &pb.PutRequest{Key: []byte("a"), Value: []byte("a1")}},
		{opPut, &pb.PutRequest{Key: []byte("c"), Value: []byte("c1")}},
		watch("a", "\x00", 0),
		{opTxn, &pb.TxnRequest{Success: []*pb.RequestOp{
			put("a", "a2"),
			put("b", "b1"),
			{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{
				Key: []byte("a"), RangeEnd: []byte{0}, PrevKv: true}}},
			put("c", "c2"),
		}}},
		watch("a", "\x00", 2),
		watch("b", "a", 0),
		watch("b", "b", 0),
		watch("", "\x00", 0),
		watch("", "\x01", 1),
		{opCompact, &pb.CompactionRequest{Revision: 1}},
	}
}
