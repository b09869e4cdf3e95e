package testcluster

import (
	"testing"
	"time"
)

// WaitFor polls cond every 10 ms until it holds, failing the test after timeout with the last
// error cond returned. It waits on a ticker, never a bare sleep standing in for the condition.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		ok, err := cond()
		if ok {
			return
		}
		if err != nil {
			lastErr = err
		}
		select {
		case <-deadline.C:
			t.Fatalf("%s: condition not met after %v (last error: %v)", what, timeout, lastErr)
		case <-tick.C:
		}
	}
}
