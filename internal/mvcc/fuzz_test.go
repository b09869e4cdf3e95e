package mvcc

import (
	"bytes"
	"math"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// etcdInRange reports whether user key k lies in the etcd range given by a request's key and
// range_end: range_end empty is the single key, "\x00" every key >= key, otherwise
// [key, range_end).
func etcdInRange(k, key, rangeEnd []byte) bool {
	switch {
	case len(rangeEnd) == 0:
		return bytes.Equal(k, key)
	case len(rangeEnd) == 1 && rangeEnd[0] == 0:
		return bytes.Compare(k, key) >= 0
	}
	return bytes.Compare(k, key) >= 0 && bytes.Compare(k, rangeEnd) < 0
}

// mvccEnd converts a request's range_end to this package's convention (what apply passes).
func mvccEnd(rangeEnd []byte) []byte {
	switch {
	case len(rangeEnd) == 0:
		return nil
	case len(rangeEnd) == 1 && rangeEnd[0] == 0:
		return []byte{}
	}
	return rangeEnd
}

func nonNegative(x int64) int64 { return x & math.MaxInt64 }

// FuzzKeyEscaping checks the user-key escaping: it round-trips, preserves order, and with its
// terminator no key's version prefix is a prefix of another key's; decoding arbitrary bytes
// either fails or is the inverse of escaping (only canonical encodings decode).
func FuzzKeyEscaping(f *testing.F) {
	for _, p := range [][2]string{
		{"", ""}, {"a", "b"}, {"a", "a\x00"}, {"\x00", "\x00\x00"}, {"a\x00b", "a\x01"},
		{"\x00\xff", "\x00"}, {"\xff", "\xff\xff"}, {"a\x00\x01", "a"},
	} {
		f.Add([]byte(p[0]), []byte(p[1]))
	}
	f.Fuzz(func(t *testing.T, a, b []byte) {
		ea, eb := appendEscaped(nil, a), appendEscaped(nil, b)
		got, err := appendUnescaped(nil, ea)
		if err != nil || !bytes.Equal(got, a) {
			t.Fatalf("unescape(escape(%q)) = %q, %v", a, got, err)
		}
		if c, want := bytes.Compare(ea, eb), bytes.Compare(a, b); c != want {
			t.Fatalf("escaped order of %q vs %q is %d, want %d", a, b, c, want)
		}
		pa, pb := appendKeyPrefix(nil, a), appendKeyPrefix(nil, b)
		if !bytes.Equal(a, b) && (bytes.HasPrefix(pa, pb) || bytes.HasPrefix(pb, pa)) {
			t.Fatalf("key prefixes of %q and %q are not prefix-free: %x, %x", a, b, pa, pb)
		}
		if u, err := appendUnescaped(nil, a); err == nil {
			if re := appendEscaped(nil, u); !bytes.Equal(re, a) {
				t.Fatalf("%x decodes to %q, which encodes to %x", a, u, re)
			}
		}
	})
}

// FuzzVersionKeys checks version keys: decoding gives back what was encoded, arbitrary bytes
// decode or fail without panicking, and the encoded order of (key, revision) pairs is the
// logical order: user key ascending, then newest revision first.
func FuzzVersionKeys(f *testing.F) {
	f.Add([]byte("a"), int64(1), int64(0), []byte("a"), int64(2), int64(0), true)
	f.Add([]byte("a"), int64(5), int64(3), []byte("a\x00"), int64(5), int64(3), false)
	f.Add([]byte("a\x00"), int64(1), int64(0), []byte("a\x01"), int64(1), int64(1), true)
	f.Add([]byte(""), int64(math.MaxInt64), int64(math.MaxInt64), []byte("\x00"), int64(0), int64(0), false)
	f.Add([]byte("\xff\x00"), int64(7), int64(1), []byte("\xff"), int64(7), int64(2), true)
	f.Fuzz(func(t *testing.T, a []byte, am, as int64, b []byte, bm, bs int64, put bool) {
		am, as, bm, bs = nonNegative(am), nonNegative(as), nonNegative(bm), nonNegative(bs)
		kind := kindTombstone
		if put {
			kind = kindPut
		}
		ka := appendVersionKey(nil, a, am, as, kind)
		vk, err := parseVersionKey(ka)
		if err != nil {
			t.Fatalf("parse %x: %v", ka, err)
		}
		if vk.main != am || vk.sub != as || vk.kind != kind {
			t.Fatalf("parse %x = (%d, %d, %d), want (%d, %d, %d)", ka, vk.main, vk.sub, vk.kind, am, as, kind)
		}
		if uk, err := appendUnescaped(nil, escapedUserKey(vk.prefix)); err != nil || !bytes.Equal(uk, a) {
			t.Fatalf("user key of %x = %q, %v, want %q", ka, uk, err, a)
		}
		if !hasKeyPrefix(ka, appendKeyPrefix(nil, a)) {
			t.Fatalf("version key %x lacks its key prefix", ka)
		}

		kb := appendVersionKey(nil, b, bm, bs, kind)
		want := bytes.Compare(a, b)
		if want == 0 {
			want = -cmpInt(am, bm) // newer first
			if want == 0 {
				want = -cmpInt(as, bs)
			}
		}
		if got := bytes.Compare(ka, kb); got != want {
			t.Fatalf("order of (%q,%d,%d) vs (%q,%d,%d): %d, want %d", a, am, as, b, bm, bs, got, want)
		}
		if hasKeyPrefix(kb, appendKeyPrefix(nil, a)) != bytes.Equal(a, b) {
			t.Fatalf("hasKeyPrefix(version of %q, prefix of %q) wrong", b, a)
		}
		// A read of a at revision bm seeks to prefix(a) ^bm: it must land at or before a's
		// newest version with main revision <= bm, and after every newer one.
		seek := appendInvMain(appendKeyPrefix(nil, a), bm)
		if c := bytes.Compare(seek, ka); (am <= bm) != (c <= 0) {
			t.Fatalf("seek for %q at rev %d vs version %d: compare %d", a, bm, am, c)
		}

		// History keys sort by revision and round-trip.
		ha, hb := appendHistoryKey(nil, am, as), appendHistoryKey(nil, bm, bs)
		if m, s, err := parseHistoryKey(ha); err != nil || m != am || s != as {
			t.Fatalf("history key round trip (%d, %d) = (%d, %d), %v", am, as, m, s, err)
		}
		wantH := cmpInt(am, bm)
		if wantH == 0 {
			wantH = cmpInt(as, bs)
		}
		if got := bytes.Compare(ha, hb); got != wantH {
			t.Fatalf("history order (%d,%d) vs (%d,%d) = %d, want %d", am, as, bm, bs, got, wantH)
		}

		// Arbitrary bytes: decoders fail cleanly or describe a well-formed key.
		for _, raw := range [][]byte{a, b} {
			if vk, err := parseVersionKey(raw); err == nil {
				if re := append(appendInvRev(append([]byte(nil), vk.prefix...), vk.main, vk.sub), vk.kind); !bytes.Equal(re, raw) {
					t.Fatalf("parseVersionKey(%x) = %+v, which encodes to %x", raw, vk, re)
				}
			}
			if m, s, err := parseHistoryKey(raw); err == nil && !bytes.Equal(appendHistoryKey(nil, m, s), raw) {
				t.Fatalf("parseHistoryKey(%x) = (%d, %d), which encodes differently", raw, m, s)
			}
		}
	})
}

// FuzzValueEncoding round-trips put values and meta revisions, and decodes arbitrary bytes
// without panicking.
func FuzzValueEncoding(f *testing.F) {
	f.Add(int64(1), int64(1), int64(0), []byte("v"))
	f.Add(int64(math.MaxInt64), int64(1<<40), int64(-1), []byte{})
	f.Add(int64(0), int64(0), int64(math.MinInt64), []byte{0x01, 0x80})
	f.Fuzz(func(t *testing.T, create, version, lease int64, value []byte) {
		enc := appendPutValue(nil, create, version, lease, value)
		pv, err := parsePutValue(enc)
		if err != nil || pv.create != create || pv.version != version || pv.lease != lease || !bytes.Equal(pv.value, value) {
			t.Fatalf("put value round trip (%d, %d, %d, %q) = %+v, %v", create, version, lease, value, pv, err)
		}
		if rev, err := parseMetaRev(appendMetaRev(nil, create)); err != nil || rev != create {
			t.Fatalf("meta revision round trip %d = %d, %v", create, rev, err)
		}
		if pv, err := parsePutValue(value); err == nil {
			if re := appendPutValue(nil, pv.create, pv.version, pv.lease, pv.value); len(re) > len(value) {
				t.Fatalf("parsePutValue(%x) = %+v, which encodes longer", value, pv)
			}
		}
		_, _ = parseMetaRev(value)
	})
}

// FuzzRangeBounds checks that the iterator bounds of an etcd range contain exactly the
// version keys of the user keys in it, for single keys, [key, end), prefixes and from-key
// ranges ("\x00").
func FuzzRangeBounds(f *testing.F) {
	f.Add([]byte("a"), []byte(""), []byte("a"), int64(3))
	f.Add([]byte("a"), []byte("b"), []byte("a\x00"), int64(1))
	f.Add([]byte("a"), []byte("\x00"), []byte("zz"), int64(9))
	f.Add([]byte("\x00"), []byte("\x00"), []byte(""), int64(1))
	f.Add([]byte("b"), []byte("a"), []byte("b"), int64(1))
	f.Add([]byte("a\x00"), []byte("a\x00\x00"), []byte("a\x00"), int64(2))
	f.Add([]byte("a\xff"), []byte("b"), []byte("a\xff\xff"), int64(2))
	f.Add([]byte("pre"), []byte("prf"), []byte("pre\x00x"), int64(4))
	f.Fuzz(func(t *testing.T, key, rangeEnd, probe []byte, rev int64) {
		rev = nonNegative(rev)
		lower, upper, ok := rangeBounds(nil, nil, key, mvccEnd(rangeEnd))
		if !ok {
			if len(rangeEnd) > 1 || (len(rangeEnd) == 1 && rangeEnd[0] != 0) {
				if bytes.Compare(key, rangeEnd) < 0 {
					t.Fatalf("range [%q, %q) reported empty", key, rangeEnd)
				}
			} else {
				t.Fatalf("range %q/%q reported empty", key, rangeEnd)
			}
			if etcdInRange(probe, key, rangeEnd) {
				t.Fatalf("%q is in [%q, %q), which was reported empty", probe, key, rangeEnd)
			}
			return
		}
		want := etcdInRange(probe, key, rangeEnd)
		for _, kind := range []byte{kindTombstone, kindPut} {
			for _, r := range []int64{rev, 0, math.MaxInt64} {
				vk := appendVersionKey(nil, probe, r, 0, kind)
				in := bytes.Compare(vk, lower) >= 0 && bytes.Compare(vk, upper) < 0
				if in != want {
					t.Fatalf("version (%q, %d) in bounds of %q/%q: %v, want %v (bounds %x - %x)", probe, r, key, rangeEnd, in, want, lower, upper)
				}
			}
		}
		// Every bound lies within the version table.
		if bytes.Compare(lower, versionsStart) < 0 || bytes.Compare(upper, versionsEnd) > 0 || bytes.Compare(lower, upper) > 0 {
			t.Fatalf("bounds %x - %x of %q/%q outside the version table", lower, upper, key, rangeEnd)
		}
	})
}

// FuzzStoreRange writes a few keys decoded from fuzz bytes into a fresh in-memory store, deletes
// a fuzzed range, and checks Range and Count against a map for single keys, ranges, prefixes
// and from-key ranges, at the current and at the previous revision.
func FuzzStoreRange(f *testing.F) {
	f.Add([]byte("a\x00b\x00c\x00a\x00"), []byte("a"), []byte("\x00"), []byte("b"), []byte(""))
	f.Add([]byte("a\x00\x00\x00a\x00\x01"), []byte("a"), []byte("b"), []byte("a\x00"), []byte("a\x01"))
	f.Add([]byte("x\x00xa\x00xb\x00y"), []byte("x"), []byte("y"), []byte("xa"), []byte("\x00"))
	f.Add([]byte("\xff\x00\xff\xff\x00\x00"), []byte("\x00"), []byte("\x00"), []byte("\xff"), []byte("\xff\xff"))
	f.Fuzz(func(t *testing.T, keysBlob, key, rangeEnd, delKey, delEnd []byte) {
		// Keys are separated by 0x00 in keysBlob; an escaped separator would make the encoding
		// ambiguous, and 0x00 inside keys is covered by the range and delete bounds.
		keys := bytes.Split(keysBlob, []byte{0})
		if len(keys) > 64 {
			keys = keys[:64]
		}
		db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem(), Logger: quietLogger{t}})
		if err != nil {
			t.Fatalf("open pebble: %v", err)
		}
		defer func() {
			if err := db.Close(); err != nil {
				t.Errorf("close pebble: %v", err)
			}
		}()
		s, err := Open(db)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		live := map[string]int64{} // key -> mod revision
		write(t, s, func(w *Writer) {
			for _, k := range keys {
				if len(k) == 0 {
					continue
				}
				if _, err := w.Put(k, k, 0); err != nil {
					t.Fatalf("put %q: %v", k, err)
				}
				live[string(k)] = 2
			}
			w.EndTxn()
		})
		before := map[string]int64{}
		for k, v := range live {
			before[k] = v
		}
		wantDeleted := 0
		for k := range live {
			if etcdInRange([]byte(k), delKey, delEnd) {
				delete(live, k)
				wantDeleted++
			}
		}
		var deleted int
		write(t, s, func(w *Writer) {
			kvs, err := w.DeleteRange(delKey, mvccEnd(delEnd))
			if err != nil {
				t.Fatalf("delete %q/%q: %v", delKey, delEnd, err)
			}
			deleted = len(kvs)
			w.EndTxn()
		})
		if deleted != wantDeleted {
			t.Fatalf("delete %q/%q removed %d keys, want %d", delKey, delEnd, deleted, wantDeleted)
		}
		for _, c := range []struct {
			state map[string]int64
			rev   int64
		}{{live, 0}, {before, 2}} {
			if c.rev > s.CurrentRev() {
				continue
			}
			res := mustRead(t, s, key, mvccEnd(rangeEnd), RangeOptions{Rev: c.rev})
			var want [][]byte
			for k := range c.state {
				if etcdInRange([]byte(k), key, rangeEnd) {
					want = append(want, []byte(k))
				}
			}
			if int(res.Count) != len(want) || len(res.KVs) != len(want) {
				t.Fatalf("range %q/%q at %d: %d keys (count %d), want %d", key, rangeEnd, c.rev, len(res.KVs), res.Count, len(want))
			}
			for i, kv := range res.KVs {
				if i > 0 && bytes.Compare(res.KVs[i-1].Key, kv.Key) >= 0 {
					t.Fatalf("range %q/%q at %d: keys out of order: %q, %q", key, rangeEnd, c.rev, res.KVs[i-1].Key, kv.Key)
				}
				if mod, ok := c.state[string(kv.Key)]; !ok || mod != kv.ModRevision || !bytes.Equal(kv.Value, kv.Key) {
					t.Fatalf("range %q/%q at %d returned %q (mod %d)", key, rangeEnd, c.rev, kv.Key, kv.ModRevision)
				}
			}
		}
	})
}
