package main

import (
	"os"

	"go.etcd.io/etcd/etcdctl/v3/ctlv3"
)

// runCtl runs etcd's own etcdctl with the arguments after "ctl", so that "ordo ctl put foo bar"
// behaves exactly like "etcdctl put foo bar" (including ETCDCTL_* environment variables).
// etcdctl parses os.Args itself and exits non-zero on failure.
func runCtl() {
	os.Args = append([]string{os.Args[0]}, os.Args[2:]...)
	ctlv3.MustStart()
}
