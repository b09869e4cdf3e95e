package raftnode_test

import (
	"context"
	"testing"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// A proposal forwarded by a peer while no leader is known must not hold up the messages
// behind it on the same stream: the heartbeat of a new leader is how the member learns of
// it. (A member paused through an election once stayed leaderless for good this way.)
func TestForwardedProposalDoesNotBlockStream(t *testing.T) {
	m := newMember(t, 1, "", memberOptions{peers: []raft.Peer{{ID: 1}, {ID: 2}, {ID: 3}}})
	if lead := m.node.Leader(); lead != 0 {
		t.Fatalf("leader %d before any election", lead)
	}
	prop := &raftpb.Message{
		Type:    raftpb.MsgProp.Enum(),
		From:    proto.Uint64(2),
		To:      proto.Uint64(1),
		Entries: []*raftpb.Entry{{Data: []byte("x")}},
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	if err := m.node.Process(ctx, prop); err != nil {
		t.Fatalf("process forwarded proposal: %v", err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("a forwarded proposal blocked the stream for %v", d)
	}
	hb := &raftpb.Message{
		Type: raftpb.MsgHeartbeat.Enum(),
		From: proto.Uint64(3),
		To:   proto.Uint64(1),
		Term: proto.Uint64(5),
	}
	if err := m.node.Process(ctx, hb); err != nil {
		t.Fatalf("process heartbeat: %v", err)
	}
	waitFor(t, 5*time.Second, "leader 3 known", func() bool { return m.node.Leader() == 3 })
}
