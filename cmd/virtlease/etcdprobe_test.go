package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// listen returns a TCP listener's address whose connections serve does
// what the case needs (nil: close the listener, so connects are refused).
func listen(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if serve == nil {
		ln.Close()
		return addr
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			go serve(c)
		}
	}()
	return addr
}

// An etcd that cannot be reached is reported with its cause (refused,
// DNS, TLS, timeout) and exit 3, connecting bounded by etcd.dial_timeout
// instead of the whole call deadline.
func TestOperatorEtcdCause(t *testing.T) {
	silent := func(net.Conn) {}                                                                   // accepts, never answers
	notTLS := func(c net.Conn) { c.Write([]byte("HTTP/1.0 400 Bad Request\r\n\r\n")); c.Close() } // not a TLS server
	cases := []struct {
		name     string
		endpoint string
		want     string
	}{
		{"refused", "http://" + listen(t, nil), "connection refused"},
		{"dns", "http://nosuch.invalid:2379", "DNS: "},
		{"tls", "https://" + listen(t, notTLS), "TLS: "},
		{"timeout", "https://" + listen(t, silent), "timeout: no TLS handshake within 300ms (etcd.dial_timeout)"},
		{"no socket", "unix://" + filepath.Join(t.TempDir(), "etcd.sock"), "no such socket"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			config := filepath.Join(t.TempDir(), "config.yaml")
			if err := os.WriteFile(config, []byte("host: host-a\netcd:\n  dial_timeout: 300ms\n  endpoints: ["+tc.endpoint+"]\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			var out, errw bytes.Buffer
			code := runCLI([]string{"virtlease", "status", "--config", config}, strings.NewReader(""), &out, &errw, mapEnv(nil))
			if code != 3 || !strings.Contains(errw.String(), tc.endpoint+": "+tc.want) {
				t.Errorf("exit %d, stderr %q; want exit 3 and %q", code, errw.String(), tc.endpoint+": "+tc.want)
			}
		})
	}
}

// An endpoint that accepts connections passes the probe: etcd itself then
// answers (or not) within the call's deadline.
func TestProbeEtcdAnswers(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Host = "host-a"
	cfg.Etcd.Endpoints = []string{"http://" + listen(t, nil), "http://" + listen(t, func(net.Conn) {})}
	ec, err := cfg.etcdConfig()
	if err != nil {
		t.Fatal(err)
	}
	if err := probeEtcd(context.Background(), ec, time.Second); err != nil {
		t.Errorf("probe with one endpoint up: %v", err)
	}
}

// --timeout must be a positive duration.
func TestTimeoutFlag(t *testing.T) {
	var out, errw bytes.Buffer
	config := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(config, []byte("host: host-a\netcd:\n  endpoints: [http://127.0.0.1:2379]\n"), 0o644)
	code := runCLI([]string{"virtlease", "status", "--timeout", "-1s", "--config", config}, strings.NewReader(""), &out, &errw, mapEnv(nil))
	if code != 2 || !strings.Contains(errw.String(), "--timeout -1s must be positive") {
		t.Errorf("exit %d, stderr %q", code, errw.String())
	}
}

// An endpoint that answers, but not as etcd (a web server on the port, an
// HTTP proxy), is "etcd unavailable" with a hint, not a refusal (exit 1)
// as if etcd had decided something.
func TestOperatorNotEtcd(t *testing.T) {
	for _, tc := range []struct {
		name string
		h2c  bool // the server speaks HTTP/2 without TLS (a proxy): gRPC gets its 404
	}{{"http/1 server", false}, {"http/2 proxy", true}} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewUnstartedServer(http.NotFoundHandler())
			if tc.h2c {
				srv.Config.Protocols = new(http.Protocols)
				srv.Config.Protocols.SetHTTP1(true)
				srv.Config.Protocols.SetUnencryptedHTTP2(true)
			}
			srv.Start()
			defer srv.Close()
			config := filepath.Join(t.TempDir(), "config.yaml")
			if err := os.WriteFile(config, []byte("host: host-a\netcd:\n  endpoints: ["+srv.URL+"]\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			for _, args := range [][]string{{"status"}, {"drain"}, {"ha", "reset", "web1"}} {
				var out, errw bytes.Buffer
				code := runCLI(append([]string{"virtlease", "--config", config}, args...), strings.NewReader(""), &out, &errw, mapEnv(nil))
				if code != 3 || !strings.Contains(errw.String(), "is it an etcd client URL") {
					t.Errorf("%v: exit %d, stderr %q; want exit 3 and a hint", args, code, errw.String())
				}
			}
		})
	}
}
