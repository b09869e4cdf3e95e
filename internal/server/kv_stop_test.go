package server_test

import (
	"testing"
	"time"

	"github.com/ordo-db/ordo/internal/testcluster"
)

// TestStopWithIdleClientConnections checks that connections to the client port that never
// send a complete protocol preface (idle TCP clients, port scanners, load-balancer probes) do
// not hold up a member's shutdown.
func TestStopWithIdleClientConnections(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{})
	m := c.Members[0]
	checkAlive(t, m.Client(), prefix(t)+"k")

	dialRaw(t, m) // sends nothing
	partial := dialRaw(t, m)
	if _, err := partial.Write([]byte("PRI * HTTP/2")); err != nil { // a prefix of the HTTP/2 preface
		t.Fatalf("write: %v", err)
	}
	// Make sure both connections were accepted before stopping.
	checkAlive(t, m.Client(), prefix(t)+"k2")

	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		m.Stop()
	}()
	select {
	case <-done:
		t.Logf("member stopped in %v", time.Since(start))
	case <-time.After(5 * time.Second):
		t.Errorf("member still stopping after 5s with two idle client connections open")
		<-done
		t.Logf("member stopped after %v", time.Since(start))
	}
}
