// Package disk holds Ordo's disk fault tests: members whose data dir fills up (on a small
// tmpfs, which needs root to mount; the tests skip otherwise) and members started on a damaged
// data dir. They run real ordo processes through internal/testcluster.
package disk
