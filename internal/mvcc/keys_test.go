package mvcc

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

func randKey(r *rand.Rand) []byte {
	alphabet := []byte{0x00, 0x01, 0x02, 'a', 'b', 0xfe, 0xff}
	k := make([]byte, r.IntN(5))
	for i := range k {
		k[i] = alphabet[r.IntN(len(alphabet))]
	}
	return k
}

func TestEscapeRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		k := randKey(r)
		esc := appendEscaped(nil, k)
		got, err := appendUnescaped(nil, esc)
		if err != nil || !bytes.Equal(got, k) {
			t.Fatalf("unescape(escape(%q)) = %q, %v", k, got, err)
		}
	}
	if _, err := appendUnescaped(nil, []byte{'a', 0x00}); err == nil {
		t.Fatal("dangling escape accepted")
	}
}

// TestVersionKeyOrder checks that version keys sort by user key first, then newest
// revision first, and that range bounds contain exactly the keys of the range.
func TestVersionKeyOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 20000 {
		a, b := randKey(r), randKey(r)
		am, bm := r.Int64N(5)+1, r.Int64N(5)+1
		as, bs := r.Int64N(3), r.Int64N(3)
		ka := appendVersionKey(nil, a, am, as, byte(r.IntN(2)))
		kb := appendVersionKey(nil, b, bm, bs, byte(r.IntN(2)))
		want := bytes.Compare(a, b)
		if want == 0 {
			// Newer first.
			switch {
			case am != bm:
				want = -cmpInt(am, bm)
			default:
				want = -cmpInt(as, bs)
			}
		}
		if want != 0 {
			if got := bytes.Compare(ka, kb); got != want {
				t.Fatalf("order of (%q,%d,%d) vs (%q,%d,%d): got %d want %d", a, am, as, b, bm, bs, got, want)
			}
		}

		// Range bounds.
		end := randKey(r)
		switch r.IntN(4) {
		case 0:
			end = nil
		case 1:
			end = []byte{0}
		}
		lo, hi, ok := rangeBounds(nil, nil, a, end)
		var in bool
		switch {
		case end == nil:
			in = bytes.Equal(b, a)
		case len(end) == 0 || (len(end) == 1 && end[0] == 0):
			in = bytes.Compare(b, a) >= 0
		default:
			in = bytes.Compare(b, a) >= 0 && bytes.Compare(b, end) < 0
		}
		gotIn := ok && bytes.Compare(kb, lo) >= 0 && bytes.Compare(kb, hi) < 0
		if in != gotIn {
			t.Fatalf("key %q in range [%q, %q): got %v want %v", b, a, end, gotIn, in)
		}

		// Seeking to prefix + ^main lands on the newest version <= main.
		seek := appendInvMain(appendKeyPrefix(nil, b), bm)
		if got := bytes.Compare(seek, kb); got > 0 {
			t.Fatalf("seek key for rev %d above version %d/%d", bm, bm, bs)
		}
		if older := appendVersionKey(nil, b, bm+1, 0, kindPut); bytes.Compare(seek, older) <= 0 {
			t.Fatalf("seek key for rev %d not above version %d", bm, bm+1)
		}
	}
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func TestParseKeys(t *testing.T) {
	k := appendVersionKey(nil, []byte("a\x00b"), 7, 3, kindTombstone)
	vk, err := parseVersionKey(k)
	if err != nil {
		t.Fatal(err)
	}
	if vk.main != 7 || vk.sub != 3 || vk.kind != kindTombstone || !bytes.Equal(vk.prefix, appendKeyPrefix(nil, []byte("a\x00b"))) {
		t.Fatalf("parsed %+v", vk)
	}
	if _, err := parseVersionKey([]byte{0x03, 'k', 1, 2}); err == nil {
		t.Fatal("short version key accepted")
	}
	main, sub, err := parseHistoryKey(appendHistoryKey(nil, 9, 2))
	if err != nil || main != 9 || sub != 2 {
		t.Fatalf("history key: %d %d %v", main, sub, err)
	}
	pv, err := parsePutValue(appendPutValue(nil, 3, 4, 5, []byte("val")))
	if err != nil || pv.create != 3 || pv.version != 4 || pv.lease != 5 || string(pv.value) != "val" {
		t.Fatalf("put value: %+v %v", pv, err)
	}
	if _, err := parsePutValue(nil); err == nil {
		t.Fatal("empty put value accepted")
	}
}
