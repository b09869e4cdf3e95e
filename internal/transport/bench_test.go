package transport

import (
	"testing"

	"go.etcd.io/raft/v3/raftpb"
)

// BenchmarkStreamThroughput measures messages per second from one member to another over
// the message stream, with 128-byte entries, including decoding and Process on the receiver.
func BenchmarkStreamThroughput(b *testing.B) {
	const queue = 1 << 16
	a := newMember(b, 1, 7, withQueueSize(queue))
	r := newMember(b, 2, 7, withQueueSize(queue))
	a.tr.AddPeer(2, []string{r.url()})

	msg := app(1, 2, 1)
	msg.Entries[0].Data = make([]byte, 128)
	frameLen, err := appendFrame(nil, msg, DefaultMaxMessageSize)
	if err != nil {
		b.Fatal(err)
	}
	batch := make([]*raftpb.Message, 256)
	for i := range batch {
		batch[i] = msg
	}
	b.SetBytes(int64(len(frameLen)))
	b.ReportAllocs()
	b.ResetTimer()
	sent := 0
	for sent < b.N {
		n := min(len(batch), b.N-sent)
		// Keep at most half a queue in flight so nothing is dropped.
		r.raft.waitFor(b, "receiver to catch up", func() bool { return sent-r.raft.count() < queue/2 })
		a.tr.Send(batch[:n])
		sent += n
	}
	r.raft.waitFor(b, "all messages", func() bool { return r.raft.count() >= b.N })
	b.StopTimer()
	if d := a.tr.peers[2].dropped.Load(); d != 0 {
		b.Fatalf("dropped %d messages", d)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(b.N)/float64(a.tr.peers[2].batches.Load()), "msgs/batch")
}
