package apply

import (
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// The checks below run on the member that receives a request, before it is proposed, and give
// the same errors etcd gives for the same malformed requests.

// CheckRange validates a RangeRequest.
func CheckRange(r *pb.RangeRequest) error {
	if len(r.Key) == 0 {
		return rpctypes.ErrGRPCEmptyKey
	}
	if _, ok := pb.RangeRequest_SortOrder_name[int32(r.SortOrder)]; !ok {
		return rpctypes.ErrGRPCInvalidSortOption
	}
	if _, ok := pb.RangeRequest_SortTarget_name[int32(r.SortTarget)]; !ok {
		return rpctypes.ErrGRPCInvalidSortOption
	}
	return nil
}

// StreamableRange reports whether a range can be served in chunks by key order.
func StreamableRange(r *pb.RangeRequest) bool {
	return defaultOrdering(r.SortTarget, r.SortOrder) && !hasRevFilters(r)
}

// CheckPut validates a PutRequest.
func CheckPut(r *pb.PutRequest) error {
	if len(r.Key) == 0 {
		return rpctypes.ErrGRPCEmptyKey
	}
	if r.IgnoreValue && len(r.Value) != 0 {
		return rpctypes.ErrGRPCValueProvided
	}
	if r.IgnoreLease && r.Lease != 0 {
		return rpctypes.ErrGRPCLeaseProvided
	}
	return nil
}

// CheckDelete validates a DeleteRangeRequest.
func CheckDelete(r *pb.DeleteRangeRequest) error {
	if len(r.Key) == 0 {
		return rpctypes.ErrGRPCEmptyKey
	}
	return nil
}

// CheckTxn validates a TxnRequest: operation counts, every nested request, and etcd's rule that
// no key is written twice on one execution path.
func CheckTxn(r *pb.TxnRequest, maxTxnOps int) error {
	if err := checkTxnOps(r, maxTxnOps); err != nil {
		return err
	}
	if _, _, err := writeSets(r.Success); err != nil {
		return err
	}
	_, _, err := writeSets(r.Failure)
	return err
}

func checkTxnOps(r *pb.TxnRequest, maxTxnOps int) error {
	opc := max(len(r.Compare), len(r.Success), len(r.Failure))
	if opc > maxTxnOps {
		return rpctypes.ErrGRPCTooManyOps
	}
	for _, c := range r.Compare {
		if len(c.Key) == 0 {
			return rpctypes.ErrGRPCEmptyKey
		}
	}
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, op := range ops {
			var err error
			switch tv := op.Request.(type) {
			case *pb.RequestOp_RequestRange:
				err = CheckRange(tv.RequestRange)
			case *pb.RequestOp_RequestPut:
				err = CheckPut(tv.RequestPut)
			case *pb.RequestOp_RequestDeleteRange:
				err = CheckDelete(tv.RequestDeleteRange)
			case *pb.RequestOp_RequestTxn:
				err = checkTxnOps(tv.RequestTxn, maxTxnOps-opc)
			default:
				err = rpctypes.ErrGRPCKeyNotFound
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// keyInterval is [start, end) over byte strings; end "" means unbounded.
type keyInterval struct{ start, end string }

func (iv keyInterval) contains(k string) bool {
	return iv.start <= k && (iv.end == "" || k < iv.end)
}

type intervals []keyInterval

func (s intervals) contains(k string) bool {
	for _, iv := range s {
		if iv.contains(k) {
			return true
		}
	}
	return false
}

// writeSets returns the keys put and the ranges deleted by ops (nested txns included) and fails
// with ErrGRPCDuplicateKey when a key is put twice, or put inside a deleted range, on a path that
// could execute both. The two branches of a nested txn never both run, so they may put the same
// key.
func writeSets(ops []*pb.RequestOp) (map[string]struct{}, intervals, error) {
	var dels intervals
	for _, op := range ops {
		tv, ok := op.Request.(*pb.RequestOp_RequestDeleteRange)
		if !ok || tv.RequestDeleteRange == nil {
			continue
		}
		d := tv.RequestDeleteRange
		if len(d.RangeEnd) != 0 {
			dels = append(dels, keyInterval{string(d.Key), string(d.RangeEnd)})
		} else {
			dels = append(dels, keyInterval{string(d.Key), string(d.Key) + "\x00"})
		}
	}
	puts := make(map[string]struct{})
	for _, op := range ops {
		tv, ok := op.Request.(*pb.RequestOp_RequestTxn)
		if !ok || tv.RequestTxn == nil {
			continue
		}
		putsThen, delsThen, err := writeSets(tv.RequestTxn.Success)
		if err != nil {
			return nil, nil, err
		}
		putsElse, delsElse, err := writeSets(tv.RequestTxn.Failure)
		if err != nil {
			return nil, nil, err
		}
		for k := range putsThen {
			if _, dup := puts[k]; dup || dels.contains(k) {
				return nil, nil, rpctypes.ErrGRPCDuplicateKey
			}
			puts[k] = struct{}{}
		}
		for k := range putsElse {
			if _, dup := puts[k]; dup {
				if _, fromThen := putsThen[k]; !fromThen {
					return nil, nil, rpctypes.ErrGRPCDuplicateKey
				}
			}
			if dels.contains(k) {
				return nil, nil, rpctypes.ErrGRPCDuplicateKey
			}
			puts[k] = struct{}{}
		}
		dels = append(dels, delsThen...)
		dels = append(dels, delsElse...)
	}
	for _, op := range ops {
		tv, ok := op.Request.(*pb.RequestOp_RequestPut)
		if !ok || tv.RequestPut == nil {
			continue
		}
		k := string(tv.RequestPut.Key)
		if _, dup := puts[k]; dup || dels.contains(k) {
			return nil, nil, rpctypes.ErrGRPCDuplicateKey
		}
		puts[k] = struct{}{}
	}
	return puts, dels, nil
}
