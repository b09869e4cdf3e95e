// Package abuse holds tests that run real Ordo members as separate processes and abuse them the
// way a misbehaving or overloaded fleet of clients would: floods of large values and large
// transactions, hundreds of connections carrying thousands of watchers, watch streams that are
// never read, lease-grant and keep-alive storms, oversized requests and responses, and garbage
// bytes on the client port. Each test checks what the clients see (success or one of etcd's clear
// errors, never a hang or a crash) and the member's memory: its peak resident set size must
// stay below 1 GiB, and when the tests run as root with a writable memory cgroup the member runs
// under a 1 GiB memory limit and must survive it.
//
// The default run is short; ORDO_LONG_TESTS=1 selects the large sizes.
package abuse
