package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/virtlease/virtlease/lease"
)

// probeEtcd tries each endpoint's socket (name lookup, connect, and for
// https the TLS handshake) until one answers, each try bounded by
// dialTimeout. gRPC hides why it cannot connect and waits for the whole
// call deadline; this tells an operator at once whether etcd refused, the
// name did not resolve, TLS failed or nothing answered.
//
// Outcomes: nil once an endpoint accepts a connection (etcd itself may
// still fail the call, which then says why); an error wrapping
// lease.ErrUnavailable naming each endpoint's cause otherwise; a TLS
// configuration error as is.
func probeEtcd(ctx context.Context, ec lease.EtcdConfig, dialTimeout time.Duration) error {
	tc, err := ec.TLSConfig()
	if err != nil {
		return err
	}
	var causes []string
	for _, ep := range ec.Endpoints {
		err := probeEndpoint(ctx, ep, tc, dialTimeout)
		if err == nil {
			return nil
		}
		causes = append(causes, ep+": "+err.Error())
	}
	return fmt.Errorf("connecting to etcd: %w (%s)", lease.ErrUnavailable, strings.Join(causes, "; "))
}

// probeEndpoint connects to one endpoint and says, in a few words, why not.
func probeEndpoint(ctx context.Context, ep string, tc *tls.Config, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	network, addr, host := "tcp", "", ""
	if path, ok := strings.CutPrefix(ep, "unix://"); ok {
		network, addr = "unix", path
	} else if path, ok := strings.CutPrefix(ep, "unixs://"); ok {
		network, addr = "unix", path
	} else {
		u, err := url.Parse(ep)
		if err != nil {
			return err
		}
		addr, host = u.Host, u.Hostname()
		if u.Scheme != "https" {
			tc = nil
		}
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return dialCause(err, timeout)
	}
	defer c.Close()
	if network == "unix" {
		return nil
	}
	if tc == nil {
		return notHTTP1(c, timeout)
	}
	cfg := tc.Clone()
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	tlsc := tls.Client(c, cfg)
	if err := tlsc.HandshakeContext(ctx); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("timeout: no TLS handshake within %v (etcd.dial_timeout)", timeout)
		}
		return fmt.Errorf("TLS: %v", err)
	}
	return nil
}

// notHTTP1 greets a plain http:// endpoint as gRPC does (the HTTP/2
// preface) and refuses one that answers in HTTP/1 (a web server or proxy
// on the port): gRPC would only retry it until the deadline. etcd answers
// with its HTTP/2 settings at once; no answer in time is let through.
func notHTTP1(c net.Conn, timeout time.Duration) error {
	c.SetDeadline(time.Now().Add(min(timeout, 500*time.Millisecond)))
	if _, err := io.WriteString(c, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"); err != nil {
		return nil
	}
	buf := make([]byte, 5)
	if n, _ := io.ReadFull(c, buf); n == 5 && string(buf) == "HTTP/" {
		return errors.New("answers HTTP/1, not etcd's gRPC: is it an etcd client URL, such as port 2379?")
	}
	return nil
}

// dialCause names why a connect failed: refused, DNS, timeout.
func dialCause(err error, timeout time.Duration) error {
	var dns *net.DNSError
	switch {
	case errors.As(err, &dns) && dns.IsNotFound:
		return fmt.Errorf("DNS: no such host %s", dns.Name)
	case errors.As(err, &dns) && dns.IsTimeout:
		return fmt.Errorf("DNS: no answer for %s within %v (etcd.dial_timeout)", dns.Name, timeout)
	case errors.As(err, &dns):
		return fmt.Errorf("DNS: %v", dns)
	case errors.Is(err, syscall.ECONNREFUSED):
		return errors.New("connection refused (is etcd listening there?)")
	case errors.Is(err, syscall.ENOENT):
		return errors.New("no such socket")
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return fmt.Errorf("timeout: no answer within %v (etcd.dial_timeout)", timeout)
	}
	return err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
