// Command empty is the floor of a Go program's start-up on this machine:
// scripts/bench.sh times it as a hook beside virtlease and /bin/true.
package main

func main() {}
