// Command etcd runs etcd v3.7.3's server unchanged. It exists only so that
// compat/compare.sh can compare Ordo against the real etcd; it is a module of
// its own and is not part of Ordo's build.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
