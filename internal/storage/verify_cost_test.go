package storage

import (
	"crypto/rand"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"go.uber.org/zap"
)

// TestVerifyCost measures the startup verification of a store of ORDO_VERIFY_COST_MB
// megabytes (skipped unless set): go test -run TestVerifyCost -v with ORDO_VERIFY_COST_MB=1024.
func TestVerifyCost(t *testing.T) {
	mb, _ := strconv.Atoi(os.Getenv("ORDO_VERIFY_COST_MB"))
	if mb <= 0 {
		t.Skip("set ORDO_VERIFY_COST_MB to measure the startup verification")
	}
	dir := t.TempDir()
	e, err := OpenWithOptions(dir, zap.NewNop(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	val := make([]byte, 1024)
	for i := 0; i < mb*1024; {
		b := e.DB.NewBatch()
		for j := 0; j < 1024; j, i = j+1, i+1 {
			_, _ = rand.Read(val)
			if err := b.Set([]byte(fmt.Sprintf("\x03k%012d", i)), val, nil); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.Commit(pebble.NoSync); err != nil {
			t.Fatal(err)
		}
		b.Close()
	}
	if err := e.DB.Flush(); err != nil {
		t.Fatal(err)
	}
	size := e.Size()
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	e, err = OpenWithOptions(dir, zap.NewNop(), Options{SkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	openOnly := time.Since(start)
	start = time.Now()
	if err := e.Verify(); err != nil {
		t.Fatal(err)
	}
	t.Logf("store %d MiB: open %v, verify %v", size>>20, openOnly, time.Since(start))
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
}
