package mvcc

import (
	"context"
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

func benchKey(i int) []byte { return fmt.Appendf(nil, "/registry/pods/default/pod-%08d", i) }

// BenchmarkPut measures put throughput: one put per transaction, 100 transactions per
// committed batch, over 100k distinct keys (so most puts update an existing key).
func BenchmarkPut(b *testing.B) {
	for _, size := range []int{16, 256} {
		b.Run(fmt.Sprintf("value=%d", size), func(b *testing.B) {
			s, db, _ := newStore(b)
			value := make([]byte, size)
			const perBatch = 100
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; {
				batch := db.NewIndexedBatch()
				w := s.NewWriter(batch)
				for j := 0; j < perBatch && i < b.N; j++ {
					if _, err := w.Put(benchKey(i%100000), value, 0); err != nil {
						b.Fatal(err)
					}
					w.EndTxn()
					i++
				}
				if err := batch.Commit(pebble.NoSync); err != nil {
					b.Fatal(err)
				}
				s.Publish(w)
				if err := batch.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// benchStore loads n keys, each written versions times (the last write of all keys at
// the end), and optionally compacts.
func benchStore(b *testing.B, n, versions int, compactAll bool) *Store {
	return benchStoreTB(b, n, versions, compactAll)
}

func benchStoreT(t *testing.T, n, versions int) *Store { return benchStoreTB(t, n, versions, false) }

func benchStoreTB(b testing.TB, n, versions int, compactAll bool) *Store {
	s, db, _ := newStore(b)
	value := make([]byte, 100)
	for v := range versions {
		for start := 0; start < n; start += 1000 {
			batch := db.NewIndexedBatch()
			w := s.NewWriter(batch)
			for i := start; i < min(start+1000, n); i++ {
				value[0] = byte(v)
				if _, err := w.Put(benchKey(i), value, 0); err != nil {
					b.Fatal(err)
				}
				w.EndTxn()
			}
			if err := batch.Commit(pebble.NoSync); err != nil {
				b.Fatal(err)
			}
			s.Publish(w)
			batch.Close()
		}
	}
	if compactAll {
		compact(b, s, s.CurrentRev())
	}
	// Settle the LSM so that background compactions do not run during the measurement.
	if err := db.Compact(context.Background(), []byte{0}, []byte{0xff}, true); err != nil {
		b.Fatal(err)
	}
	return s
}

func BenchmarkRange(b *testing.B) {
	const n = 100000
	ctx := context.Background()
	prefix, end := []byte("/registry/pods/"), []byte("/registry/pods0")
	for _, cfg := range []struct {
		name     string
		versions int
		compact  bool
	}{
		{"1version", 1, false},
		{"4versions", 4, false},
		{"4versions-compacted", 4, true},
	} {
		s := benchStore(b, n, cfg.versions, cfg.compact)
		cur := s.CurrentRev()
		cases := []struct {
			name     string
			key, end []byte
			ro       RangeOptions
		}{
			{"get", benchKey(n / 2), nil, RangeOptions{}},
			{"get-old-rev", benchKey(n / 2), nil, RangeOptions{Rev: cur - int64(n/2)}},
			{"limit100", prefix, end, RangeOptions{Limit: 100, SkipTotalCount: true}},
			{"limit100-keysonly", prefix, end, RangeOptions{Limit: 100, SkipTotalCount: true, KeysOnly: true}},
			{"1000keys", benchKey(1000), benchKey(2000), RangeOptions{}},
			{"1000keys-old-rev", benchKey(1000), benchKey(2000), RangeOptions{Rev: cur - int64(n/2)}},
			{"count-all", prefix, end, RangeOptions{CountOnly: true}},
		}
		for _, tc := range cases {
			if cfg.compact && tc.ro.Rev != 0 {
				continue
			}
			b.Run(cfg.name+"/"+tc.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					v, err := s.NewReadView()
					if err != nil {
						b.Fatal(err)
					}
					if _, err := v.Range(ctx, tc.key, tc.end, tc.ro); err != nil {
						b.Fatal(err)
					}
					if err := v.Close(); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
