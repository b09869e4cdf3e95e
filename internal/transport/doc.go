// Package transport carries raft messages between Ordo members over HTTP on the peer URLs.
//
// A Transport sends the messages of the local raft node to the other members (Send) and
// delivers the messages it receives to the node (Raft.Process). Its Handler serves the
// paths under /raft and is mounted by the server on every peer listener.
//
// # Protocol
//
// The transport speaks HTTP/1.1 only (no h2c): each message stream holds one TCP
// connection of its own, and short requests (snapshots) reuse keep-alive connections.
// Every request is a POST carrying the headers
//
//	X-Ordo-Cluster-ID  the sender's cluster id, hex
//	X-Ordo-From        the sender's member id, hex
//	X-Ordo-To          the receiver's member id, hex
//	Content-Type       application/vnd.ordo.raft-stream.v1 or application/vnd.ordo.raft-snapshot.v1
//
// The receiver answers 412 Precondition Failed if the cluster id or the addressed member id
// is not its own, 410 Gone if the sender was removed (RemovePeer), 400 for malformed headers,
// 415 for an unknown content type and 503 once it is closing.
//
// A frame is a 4-byte big-endian length n followed by n bytes: a raftpb.Message encoded with
// proto.Marshal. n is at most Config.MaxMessageSize (64 MiB by default); a larger frame ends
// the stream with an error.
//
// POST /raft/stream opens the message stream from the sender to the receiver. The receiver
// answers 200 at once, before reading (full duplex), and then reads the chunked request
// body: a sequence of frames, each passed to Raft.Process in order. The response carries no
// data and ends when the receiver stops reading; the sender watches it to notice a closed
// stream. Each member keeps one stream to each peer, opened by a goroutine that drains the
// peer's bounded queue: it writes whatever is queued as one batch (up to 1 MiB or 4096
// messages) and flushes it as one or a few HTTP chunks. When the stream breaks, queued
// messages are dropped, Raft.ReportUnreachable is called, and the goroutine reconnects with
// capped exponential backoff, trying the peer URLs in turn. A newer stream from a peer
// replaces its older one on the receiver.
//
// POST /raft/snapshot carries one MsgSnap: the body is the message as one frame followed by
// the state-machine data written by Snapshotter.WriteSnapshot, streamed through a pipe
// (never buffered whole). The end of the chunked body ends the data; a sender that fails
// midway aborts the request, so the receiver sees an unexpected EOF rather than a clean
// end. The receiver passes the rest of the body to Snapshotter.ReceiveSnapshot, then the
// message to Raft.Process, and answers 204. The sender reports raft.SnapshotFinish to raft
// on a 2xx answer and raft.SnapshotFailure on anything else. At most one snapshot per peer
// is in flight; a second MsgSnap meanwhile is dropped and reported as failed.
//
// The handlers lift the server's read and write deadlines for these long requests, so the
// peer server may set ReadHeaderTimeout and timeouts for other routes freely.
package transport
