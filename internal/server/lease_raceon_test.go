//go:build race

package server_test

// raceEnabled reports whether the tests run under the race detector, which slows members down
// several times: the lease load tests then use fewer leases.
const raceEnabled = true
