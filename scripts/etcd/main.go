// Command etcd is a real etcd server (the version pinned in go.mod), built
// from the module proxy for the lab and the end-to-end tests. It takes the
// same flags as the upstream etcd binary.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
