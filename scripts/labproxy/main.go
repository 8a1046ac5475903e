// Command labproxy is the lab's TCP proxy between one lab host and etcd.
//
// Each lab host reaches etcd only through its own labproxy process, so a
// single signal acts on that host's whole path to etcd: SIGSTOP freezes it
// (connections stay open, nothing moves: a partition as the host sees it),
// SIGCONT resumes it, SIGKILL cuts it (connections reset).
//
//	labproxy -listen 127.0.0.1:23792 -to 127.0.0.1:23790 [-delay 50ms]
//
// -delay adds latency before each chunk is forwarded, in both directions.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"time"
)

func main() {
	listen := flag.String("listen", "", "address to listen on, e.g. 127.0.0.1:23792")
	to := flag.String("to", "", "address to forward to, e.g. 127.0.0.1:23790")
	delay := flag.Duration("delay", 0, "latency added before forwarding each chunk")
	flag.Parse()
	if *listen == "" || *to == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: labproxy -listen HOST:PORT -to HOST:PORT [-delay DURATION]")
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("labproxy: %v", err)
	}
	log.Printf("labproxy: %s -> %s (delay %s)", ln.Addr(), *to, *delay)
	log.Fatalf("labproxy: %v", serve(ln, *to, *delay))
}

// serve accepts connections on ln until it is closed and forwards each one
// to the address to, in its own goroutines. It returns the Accept error.
func serve(ln net.Listener, to string, delay time.Duration) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		go forward(c, to, delay)
	}
}

// forward connects to the upstream and copies both ways until both
// directions are done; a half close is passed on.
func forward(down net.Conn, to string, delay time.Duration) {
	defer down.Close()
	up, err := net.DialTimeout("tcp", to, 5*time.Second)
	if err != nil {
		log.Printf("labproxy: dial %s: %v", to, err)
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	go pipe(up, down, delay, done)
	go pipe(down, up, delay, done)
	<-done
	<-done
}

// pipe copies src to dst, sleeping delay before each chunk. At src's end of
// stream it closes dst's write side (a half close); on any other error it
// closes both connections, so the other direction ends too.
func pipe(dst, src net.Conn, delay time.Duration, done chan<- struct{}) {
	defer func() { done <- struct{}{} }()
	buf := make([]byte, 32*1024)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if delay > 0 {
				time.Sleep(delay)
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err == io.EOF {
			if tc, ok := dst.(*net.TCPConn); ok {
				tc.CloseWrite()
				return
			}
		}
		if err != nil {
			dst.Close()
			src.Close()
			return
		}
	}
}
