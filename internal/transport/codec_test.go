package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

func TestFrameRoundTrip(t *testing.T) {
	big := app(1, 2, 9)
	big.Entries[0].Data = bytes.Repeat([]byte("x"), 3*smallFrame) // exercises the large-frame path
	msgs := []*raftpb.Message{app(1, 2, 1), snapMsg(1, 2, 7), big, {}, app(1, 2, 2)}
	var buf []byte
	for _, m := range msgs {
		var err error
		if buf, err = appendFrame(buf, m, DefaultMaxMessageSize); err != nil {
			t.Fatal(err)
		}
	}
	d := newDecoder(bytes.NewReader(buf), DefaultMaxMessageSize)
	for i, want := range msgs {
		got, err := d.next()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !proto.Equal(got, want) {
			t.Fatalf("message %d: got %v, want %v", i, got, want)
		}
	}
	if _, err := d.next(); err != io.EOF {
		t.Fatalf("after last frame: %v, want io.EOF", err)
	}
}

func TestFrameLimits(t *testing.T) {
	m := app(1, 2, 1)
	m.Entries[0].Data = make([]byte, 100)
	if _, err := appendFrame([]byte("keep"), m, 50); !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("encode over limit: %v", err)
	}
	b, err := appendFrame(nil, m, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newDecoder(bytes.NewReader(b), 50).next(); !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("decode over limit: %v", err)
	}
	// A huge announced length fails on the short body without allocating it.
	huge := binary.BigEndian.AppendUint32(nil, 1<<30)
	if _, err := newDecoder(bytes.NewReader(append(huge, 1, 2, 3)), 1<<31).next(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated huge frame: %v", err)
	}
	for n := 1; n < len(b); n++ {
		if _, err := newDecoder(bytes.NewReader(b[:n]), 1000).next(); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("frame cut at %d: %v, want unexpected EOF", n, err)
		}
	}
}

// FuzzDecode feeds arbitrary bytes to the decoder: it must never panic, and whatever it
// decodes must re-encode and decode to the same message.
func FuzzDecode(f *testing.F) {
	var seed []byte
	for _, m := range []*raftpb.Message{app(1, 2, 1), snapMsg(1, 2, 3), {}} {
		seed, _ = appendFrame(seed, m, DefaultMaxMessageSize)
	}
	f.Add(seed)
	f.Add([]byte{0, 0, 0, 5, 1, 2, 3, 4, 5})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		d := newDecoder(bytes.NewReader(data), 1<<20)
		for {
			m, err := d.next()
			if err != nil {
				return
			}
			b, err := appendFrame(nil, m, 1<<21)
			if err != nil {
				t.Fatalf("re-encode %v: %v", m, err)
			}
			again, err := newDecoder(bytes.NewReader(b), 1<<21).next()
			if err != nil || !proto.Equal(m, again) {
				t.Fatalf("round trip of %v: %v %v", m, again, err)
			}
		}
	})
}
