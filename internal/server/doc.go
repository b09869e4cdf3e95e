// Package server runs one Ordo member: it opens storage, starts the raft node and the peer
// transport, and serves etcd's v3 gRPC API and the HTTP endpoints on the client URLs.
package server
