package server

import (
	"bytes"
	"context"
	"errors"
	"math"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ordo-db/ordo/internal/apply"
	"github.com/ordo-db/ordo/internal/auth"
	"github.com/ordo-db/ordo/internal/mvcc"
)

// kvServer is etcd's KV service.
type kvServer struct {
	pb.UnimplementedKVServer
	m *Member
}

// viewRW serves reads from a point-in-time MVCC view; it never writes (read-only txns only).
type viewRW struct{ v *mvcc.ReadView }

func (r viewRW) Range(ctx context.Context, key, end []byte, ro mvcc.RangeOptions) (*mvcc.RangeResult, error) {
	return r.v.Range(ctx, key, end, ro)
}
func (r viewRW) Rev() int64        { return r.v.Rev() }
func (r viewRW) CompactRev() int64 { return r.v.CompactRev() }
func (r viewRW) Put([]byte, []byte, int64) (*mvccpb.KeyValue, error) {
	return nil, errors.New("write in a read-only view")
}
func (r viewRW) DeleteRange([]byte, []byte) ([]*mvccpb.KeyValue, error) {
	return nil, errors.New("write in a read-only view")
}

// read runs fn on a fresh view, after a linearizable barrier unless serializable.
func (m *Member) read(ctx context.Context, serializable bool, fn func(viewRW) error) error {
	if !serializable {
		if err := m.linearize(ctx); err != nil {
			return err
		}
	}
	v, err := m.kv.NewReadView()
	if err != nil {
		return err
	}
	defer v.Close()
	return fn(viewRW{v})
}

func (s *kvServer) Range(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	if err := apply.CheckRange(r); err != nil {
		return nil, err
	}
	var resp *pb.RangeResponse
	err := s.m.readChecked(ctx, r.Serializable, s.checkRange(r), func(v viewRW) (err error) {
		resp, err = apply.Range(ctx, v, r)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.m.header(resp.Header)
	return resp, nil
}

// checkRange checks that the user may read the range of r.
func (s *kvServer) checkRange(r *pb.RangeRequest) func(*auth.Info) error {
	return func(ai *auth.Info) error { return s.m.auth.CheckRange(ai, r.Key, r.RangeEnd) }
}

// firstStreamChunk is how many keys the first RangeStream response carries; later chunks grow
// or shrink to stay near --max-request-bytes.
const firstStreamChunk = 10

// RangeStream serves a range in bounded chunks, all read from one point-in-time view, so a
// large range is never held in memory whole. As in etcd, only the final chunk carries the
// header, the total count and the more flag.
func (s *kvServer) RangeStream(r *pb.RangeRequest, stream grpc.ServerStreamingServer[pb.RangeStreamResponse]) error {
	ctx := stream.Context()
	if err := apply.CheckRange(r); err != nil {
		return err
	}
	if !apply.StreamableRange(r) {
		if r.SortOrder != pb.RangeRequest_NONE && !(r.SortTarget == pb.RangeRequest_KEY && r.SortOrder == pb.RangeRequest_ASCEND) {
			return status.Errorf(codes.Unimplemented, "RangeStream does not support custom sort orders")
		}
		return status.Errorf(codes.Unimplemented, "RangeStream does not support revision filters")
	}
	return s.m.readChecked(ctx, r.Serializable, s.checkRange(r), func(v viewRW) error {
		if r.CountOnly {
			resp, err := apply.Range(ctx, v, r)
			if err != nil {
				return err
			}
			return stream.Send(&pb.RangeStreamResponse{RangeResponse: &pb.RangeResponse{Header: s.m.header(resp.Header), Count: resp.Count}})
		}
		total := r.Limit
		if total <= 0 {
			total = math.MaxInt64
		}
		req := proto.Clone(r).(*pb.RangeRequest)
		headerRev := v.Rev()
		if req.Revision == 0 {
			req.Revision = headerRev
		}
		req.Limit = min(firstStreamChunk, total)
		sent := int64(0)
		target := int(s.m.cfg.MaxRequestBytes)
		for {
			resp, err := apply.RangeChunk(ctx, v, req)
			if err != nil {
				return err
			}
			sent += int64(len(resp.Kvs))
			out := &pb.RangeResponse{Kvs: resp.Kvs}
			done := !resp.More || sent == total
			var next []byte
			if resp.More {
				next = append(bytes.Clone(resp.Kvs[len(resp.Kvs)-1].Key), 0)
			}
			if done {
				out.Header = s.m.header(&pb.ResponseHeader{Revision: headerRev})
				out.More = resp.More
				out.Count = sent
				if resp.More {
					rest, err := apply.Range(ctx, v, &pb.RangeRequest{Key: next, RangeEnd: r.RangeEnd, Revision: req.Revision, CountOnly: true})
					if err != nil {
						return err
					}
					out.Count += rest.Count
				}
			}
			if err := stream.Send(&pb.RangeStreamResponse{RangeResponse: out}); err != nil {
				return err
			}
			if done {
				return nil
			}
			req.Key = next
			size := proto.Size(resp)
			switch {
			case size < target/2:
				req.Limit *= 2
			case size > target*2:
				req.Limit /= 2
			}
			req.Limit = max(1, min(req.Limit, total-sent))
		}
	})
}

func (s *kvServer) Put(ctx context.Context, r *pb.PutRequest) (*pb.PutResponse, error) {
	if err := apply.CheckPut(r); err != nil {
		return nil, err
	}
	res, err := s.m.propose(ctx, &pb.InternalRaftRequest{Put: r})
	if err != nil {
		return nil, err
	}
	resp := res.Resp.(*pb.PutResponse)
	s.m.header(resp.Header)
	return resp, nil
}

func (s *kvServer) DeleteRange(ctx context.Context, r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	if err := apply.CheckDelete(r); err != nil {
		return nil, err
	}
	res, err := s.m.propose(ctx, &pb.InternalRaftRequest{DeleteRange: r})
	if err != nil {
		return nil, err
	}
	resp := res.Resp.(*pb.DeleteRangeResponse)
	s.m.header(resp.Header)
	return resp, nil
}

func (s *kvServer) Txn(ctx context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error) {
	if err := apply.CheckTxn(r, int(s.m.cfg.MaxTxnOps)); err != nil {
		return nil, err
	}
	if apply.IsTxnReadOnly(r) {
		var resp *pb.TxnResponse
		err := s.m.readChecked(ctx, txnSerializable(r), s.m.checkTxnRead(r), func(v viewRW) (err error) {
			resp, err = apply.Txn(ctx, v, func(int64) bool { return false }, r)
			return err
		})
		if err != nil {
			return nil, err
		}
		s.m.header(resp.Header)
		return resp, nil
	}
	res, err := s.m.propose(ctx, &pb.InternalRaftRequest{Txn: r})
	if err != nil {
		return nil, err
	}
	resp := res.Resp.(*pb.TxnResponse)
	s.m.header(resp.Header)
	return resp, nil
}

// txnSerializable reports whether every range in a read-only txn asked for a serializable read.
func txnSerializable(r *pb.TxnRequest) bool {
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, op := range ops {
			switch tv := op.Request.(type) {
			case *pb.RequestOp_RequestRange:
				if !tv.RequestRange.Serializable {
					return false
				}
			case *pb.RequestOp_RequestTxn:
				if !txnSerializable(tv.RequestTxn) {
					return false
				}
			}
		}
	}
	return true
}

func (s *kvServer) Compact(ctx context.Context, r *pb.CompactionRequest) (*pb.CompactionResponse, error) {
	if err := s.m.auth.RequireAdmin(ctx); err != nil {
		return nil, err
	}
	res, err := s.m.propose(ctx, &pb.InternalRaftRequest{Compaction: r})
	if err != nil {
		return nil, err
	}
	if res.Physical != nil {
		select {
		case <-res.Physical:
		case <-ctx.Done():
			return nil, toGRPCError(ctx.Err())
		}
	}
	resp := res.Resp.(*pb.CompactionResponse)
	s.m.header(resp.Header)
	return resp, nil
}
