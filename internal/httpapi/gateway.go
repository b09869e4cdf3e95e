package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"go.etcd.io/etcd/api/v3/etcdserverpb/gw"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
)

// Gateway returns etcd's JSON gateway: every v3 RPC at its /v3/ path (POST, a JSON request
// body, a JSON response), watch and lease keep-alive as newline-delimited JSON streams. It
// forwards to the gRPC services on conn, so a JSON request takes exactly the path of a gRPC
// one. As in etcd, fields carry their proto names, 64-bit integers are strings, bytes are
// base64, zero values are left out, unknown request fields are ignored, and errors are
// {"code": <gRPC code>, "message": ...} with the matching HTTP status.
//
// A unary request body larger than maxBody bytes is refused (ResourceExhausted, HTTP 429, when
// its length is announced; InvalidArgument once that many bytes were read otherwise) before it
// is read whole. The streaming endpoints decode their bodies one request at a time.
func Gateway(ctx context.Context, conn *grpc.ClientConn, maxBody int64) (http.Handler, error) {
	marshaler := &runtime.HTTPBodyMarshaler{
		Marshaler: &runtime.JSONPb{
			MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true},
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: true},
		},
	}
	mux := runtime.NewServeMux(runtime.WithMarshalerOption(runtime.MIMEWildcard, marshaler))
	for name, register := range map[string]func(context.Context, *runtime.ServeMux, *grpc.ClientConn) error{
		"KV":          gw.RegisterKVHandler,
		"Watch":       gw.RegisterWatchHandler,
		"Lease":       gw.RegisterLeaseHandler,
		"Cluster":     gw.RegisterClusterHandler,
		"Maintenance": gw.RegisterMaintenanceHandler,
		"Auth":        gw.RegisterAuthHandler,
	} {
		if err := register(ctx, mux, conn); err != nil {
			return nil, fmt.Errorf("register the %s gateway: %w", name, err)
		}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !streaming(r.URL.Path) {
			if r.ContentLength > maxBody {
				err := status.Errorf(codes.ResourceExhausted, "request body of %d bytes is larger than the JSON gateway's limit of %d bytes", r.ContentLength, maxBody)
				runtime.DefaultHTTPErrorHandler(r.Context(), mux, marshaler, w, r, err)
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		}
		mux.ServeHTTP(w, r)
	}), nil
}

// streaming reports whether path is one of the gateway's client-streaming endpoints, whose
// body is a sequence of requests.
func streaming(path string) bool {
	path = strings.TrimSuffix(path, "/")
	return path == "/v3/watch" || path == "/v3/lease/keepalive"
}

// CORS sets the headers etcd sends with its default --cors=* on every HTTP response, and
// answers preflight (OPTIONS) requests itself.
func CORS(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Access-Control-Allow-Origin", "*")
		hd.Set("Access-Control-Allow-Methods", "POST, GET, OPTIONS, PUT, DELETE")
		hd.Set("Access-Control-Allow-Headers", "accept, content-type, authorization")
		if r.Method == http.MethodOptions {
			return
		}
		h.ServeHTTP(w, r)
	})
}
