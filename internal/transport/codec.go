package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// frameHeaderLen is the size of the big-endian uint32 length prefix in front of every
// marshaled message on the wire.
const frameHeaderLen = 4

// smallFrame is the largest frame the decoder reads into its reusable buffer. Larger frames
// get a buffer of their own that grows only as bytes actually arrive, so a forged length
// prefix cannot make the receiver allocate the whole limit up front.
const smallFrame = 64 << 10

// ErrMessageTooLarge is returned (wrapped) when a frame announces or would produce a message
// larger than the configured per-message limit.
var ErrMessageTooLarge = errors.New("raft message exceeds size limit")

// appendFrame appends m to dst as one frame: a 4-byte big-endian length followed by the
// protobuf encoding of m. It returns dst unchanged and an error if m cannot be marshaled
// or its encoding is larger than limit bytes.
func appendFrame(dst []byte, m *raftpb.Message, limit int) ([]byte, error) {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	out, err := proto.MarshalOptions{}.MarshalAppend(dst, m)
	if err != nil {
		return dst[:start], fmt.Errorf("marshal %s to %x: %w", m.GetType(), m.GetTo(), err)
	}
	n := len(out) - start - frameHeaderLen
	if n > limit {
		return out[:start], fmt.Errorf("marshal %s to %x: %d bytes, limit %d: %w",
			m.GetType(), m.GetTo(), n, limit, ErrMessageTooLarge)
	}
	binary.BigEndian.PutUint32(out[start:], uint32(n))
	return out, nil
}

// decoder reads frames written by appendFrame from a byte stream. It never reads past the
// end of the frame it returns, so whatever follows a frame (the snapshot data) can be read
// from the underlying reader afterwards.
type decoder struct {
	r     io.Reader
	limit uint32
	hdr   [frameHeaderLen]byte
	buf   []byte
}

func newDecoder(r io.Reader, limit int) *decoder {
	if limit < 0 {
		limit = 0
	}
	if uint64(limit) > uint64(^uint32(0)) {
		limit = int(^uint32(0))
	}
	return &decoder{r: r, limit: uint32(limit)}
}

// next returns the next message. It returns io.EOF, unwrapped, if the stream ends cleanly
// between two frames; any other end of stream or malformed input is a wrapped error.
func (d *decoder) next() (*raftpb.Message, error) {
	if _, err := io.ReadFull(d.r, d.hdr[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, fmt.Errorf("read frame header: %w", err)
	}
	n := binary.BigEndian.Uint32(d.hdr[:])
	if n > d.limit {
		return nil, fmt.Errorf("frame of %d bytes, limit %d: %w", n, d.limit, ErrMessageTooLarge)
	}
	var payload []byte
	if n <= smallFrame {
		if cap(d.buf) < int(n) {
			d.buf = make([]byte, smallFrame)
		}
		payload = d.buf[:n]
		if _, err := io.ReadFull(d.r, payload); err != nil {
			return nil, fmt.Errorf("read frame of %d bytes: %w", n, noEOF(err))
		}
	} else {
		var b bytes.Buffer
		b.Grow(smallFrame)
		got, err := io.CopyN(&b, d.r, int64(n))
		if err != nil {
			return nil, fmt.Errorf("read frame of %d bytes (got %d): %w", n, got, noEOF(err))
		}
		payload = b.Bytes()
	}
	m := new(raftpb.Message)
	// proto.Unmarshal copies bytes fields, so reusing d.buf for the next frame is safe.
	if err := proto.Unmarshal(payload, m); err != nil {
		return nil, fmt.Errorf("unmarshal frame of %d bytes: %w", n, err)
	}
	return m, nil
}

// noEOF turns a clean EOF inside a frame into io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
