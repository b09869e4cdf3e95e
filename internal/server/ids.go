package server

import (
	"crypto/sha256"
	"encoding/binary"
	"sort"
	"strings"
	"sync/atomic"
	"time"
)

// memberID derives a member's id from its peer URLs and the cluster token, so every member
// computes the same ids from the same --initial-cluster.
func memberID(peerURLs []string, token string) uint64 {
	urls := append([]string(nil), peerURLs...)
	sort.Strings(urls)
	sum := sha256.Sum256([]byte("ordo-member\n" + token + "\n" + strings.Join(urls, ",")))
	return binary.BigEndian.Uint64(sum[:8])
}

// clusterID derives the cluster id from its initial member ids.
func clusterID(ids []uint64, token string) uint64 {
	sorted := append([]uint64(nil), ids...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	buf := []byte("ordo-cluster\n" + token + "\n")
	for _, id := range sorted {
		buf = binary.BigEndian.AppendUint64(buf, id)
	}
	sum := sha256.Sum256(buf)
	return binary.BigEndian.Uint64(sum[:8])
}

// idGen issues request ids unique across members and restarts: the member id's low 16 bits,
// then a counter that starts from the clock.
type idGen struct {
	prefix uint64
	next   atomic.Uint64
}

func newIDGen(member uint64, now time.Time) *idGen {
	g := &idGen{prefix: member << 48}
	g.next.Store(uint64(now.UnixMilli()) << 8 & (1<<48 - 1))
	return g
}

func (g *idGen) id() uint64 {
	return g.prefix | (g.next.Add(1) & (1<<48 - 1))
}
