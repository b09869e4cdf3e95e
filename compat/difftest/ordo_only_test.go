package difftest

import (
	"context"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/status"
)

// TestPutAfterFromKeyDelete checks Ordo alone on a txn that crashes etcd 3.7.3: a from-key
// delete followed by a put with ignore_value of a key the delete removed. The duplicate-key check
// lets it through (a range end of "\x00" counts as an empty interval), and etcd then dereferences
// the missing previous value while applying. Ordo refuses the txn before changing anything.
func TestPutAfterFromKeyDelete(t *testing.T) {
	ordoBin, _ := binaries(t)
	s := startServer(t, "ordo", ordoBin)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	put, err := s.kv.Put(ctx, &pb.PutRequest{Key: []byte("a"), Value: []byte("1")})
	if err != nil {
		t.Fatalf("put: %v", err)
	}
	for _, p := range []*pb.PutRequest{
		{Key: []byte("a"), IgnoreValue: true},
		{Key: []byte("a"), Value: []byte("2"), IgnoreLease: true},
	} {
		txn := &pb.TxnRequest{Success: []*pb.RequestOp{
			{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte{0}, RangeEnd: []byte{0}}}},
			{Request: &pb.RequestOp_RequestPut{RequestPut: p}},
		}}
		_, err = s.kv.Txn(ctx, txn)
		if want := status.Convert(rpctypes.ErrGRPCKeyNotFound); status.Code(err) != want.Code() || status.Convert(err).Message() != want.Message() {
			t.Fatalf("txn %v: got %v, want %v", txn, err, rpctypes.ErrGRPCKeyNotFound)
		}
	}
	got, err := s.kv.Range(ctx, &pb.RangeRequest{Key: []byte("a")})
	if err != nil {
		t.Fatalf("range after the refused txns: %v", err)
	}
	if got.Header.Revision != put.Header.Revision || len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "1" {
		t.Fatalf("refused txns changed the store: %v (put was at revision %d)", got, put.Header.Revision)
	}
}
