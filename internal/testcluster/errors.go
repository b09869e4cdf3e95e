package testcluster

import (
	"errors"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// IsErr reports whether err is want as a client sees it: the same error, or an etcd error with
// the same description and gRPC code (clientv3 turns server errors into rpctypes errors).
func IsErr(err, want error) bool {
	if err == nil || want == nil {
		return err == want
	}
	if errors.Is(err, want) {
		return true
	}
	return rpctypes.ErrorDesc(err) == rpctypes.ErrorDesc(want) && ErrCode(err) == ErrCode(want)
}

// ErrCode is the gRPC code of a client error.
func ErrCode(err error) codes.Code {
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code()
	}
	return status.Code(err)
}
