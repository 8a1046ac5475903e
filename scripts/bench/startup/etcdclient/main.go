// Command etcdclient links the etcd client and nothing else: scripts/bench.sh
// times it as a hook, to tell the start-up cost of the etcd client's package
// tree (gRPC, protobuf) from the rest of virtlease's.
package main

import clientv3 "go.etcd.io/etcd/client/v3"

func main() { _ = clientv3.Config{} }
