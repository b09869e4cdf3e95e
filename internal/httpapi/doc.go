// Package httpapi holds what a member serves over HTTP/1 next to gRPC on its client URLs: the
// JSON gateway under /v3/ (etcd's grpc-gateway mapping of the v3 API, served by forwarding to
// the member's own gRPC services) and the CORS headers etcd sets on every HTTP response.
package httpapi
