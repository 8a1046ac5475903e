package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/virtlease/virtlease/lease"
)

// testPKI is a CA and certificates signed by it, written as PEM files.
type testPKI struct {
	dir    string
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	CACert string
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	p := &testPKI{dir: t.TempDir()}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "virtlease test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p.ca, _ = x509.ParseCertificate(der)
	p.caKey = key
	p.CACert = p.write(t, "ca.pem", "CERTIFICATE", der)
	return p
}

func (p *testPKI) write(t *testing.T, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// issue writes a certificate for cn signed by the CA, and its key.
func (p *testPKI) issue(t *testing.T, cn string, serial int64, usage x509.ExtKeyUsage, ips ...net.IP) (cert, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &k.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return p.write(t, cn+".pem", "CERTIFICATE", der), p.write(t, cn+"-key.pem", "EC PRIVATE KEY", kder)
}

// freeAddr returns a TCP address nobody listens on (for a dead endpoint).
func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// startSecureEtcd starts a real etcd in-process that serves clients over
// TLS only and requires a client certificate signed by p's CA. It returns
// the client URL.
func startSecureEtcd(t *testing.T, p *testPKI) string {
	t.Helper()
	cert, key := p.issue(t, "etcd-server", 2, x509.ExtKeyUsageServerAuth, net.ParseIP("127.0.0.1"))
	cfg := embed.NewConfig()
	cfg.Dir = filepath.Join(t.TempDir(), "etcd")
	cfg.LogLevel = "error"
	client, _ := url.Parse("https://127.0.0.1:0")
	peer, _ := url.Parse("http://" + freeAddr(t))
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*client}, []url.URL{*client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
	cfg.InitialCluster = cfg.Name + "=" + peer.String()
	cfg.ClientTLSInfo = transport.TLSInfo{CertFile: cert, KeyFile: key, TrustedCAFile: p.CACert, ClientCertAuth: true}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		t.Fatal("etcd did not start")
	}
	return "https://" + e.Clients[0].Addr().String()
}

// setupRBAC enables auth: a root user, and a virtlease user whose role may
// read and write the /virtlease/ range only. It also writes a key outside
// that range.
func setupRBAC(t *testing.T, endpoint string, tlsInfo transport.TLSInfo, rootPW, userPW string) {
	t.Helper()
	tc, err := tlsInfo.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, TLS: tc, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	steps := []func() error{
		func() error { _, err := cli.Put(ctx, "/other/secret", "not for virtlease"); return err },
		func() error { _, err := cli.UserAdd(ctx, "root", rootPW); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := cli.RoleAdd(ctx, "virtlease"); return err },
		func() error {
			_, err := cli.RoleGrantPermission(ctx, "virtlease", "/virtlease/", clientv3.GetPrefixRangeEnd("/virtlease/"),
				clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := cli.UserAdd(ctx, "virtlease", userPW); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "virtlease", "virtlease"); return err },
		func() error { _, err := cli.AuthEnable(ctx); return err },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("RBAC setup step %d: %v", i, err)
		}
	}
}

// virtlease talks to an etcd that requires TLS client certificates and
// RBAC, configured as etcdctl would be: cacert, cert, key, a user and a
// password file, and several endpoints (one of them dead).
func TestEtcdTLSAndRBAC(t *testing.T) {
	p := newTestPKI(t)
	endpoint := startSecureEtcd(t, p)
	clientCert, clientKey := p.issue(t, "virtlease-client", 3, x509.ExtKeyUsageClientAuth)
	setupRBAC(t, endpoint, transport.TLSInfo{CertFile: clientCert, KeyFile: clientKey, TrustedCAFile: p.CACert}, "root-pw", "s3cret pass")

	dir := t.TempDir()
	pwFile := filepath.Join(dir, "etcd-password")
	os.WriteFile(pwFile, []byte("s3cret pass\n"), 0o600)
	writeConfig := func(name, etcd string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte("host: host-a\netcd:\n"+etcd), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	good := writeConfig("good.yaml", `  endpoints: [https://`+freeAddr(t)+`, `+endpoint+`]
  cacert: `+p.CACert+`
  cert: `+clientCert+`
  key: `+clientKey+`
  username: virtlease
  password_file: `+pwFile+`
  dial_timeout: 5s
`)

	cfg, err := LoadConfig(good, nil)
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		t.Fatal(err)
	}
	ec, err := cfg.etcdConfig()
	if err != nil {
		t.Fatal(err)
	}
	cli, err := lease.Dial(ec)
	if err != nil {
		t.Fatalf("dial with TLS and a user: %v", err)
	}
	defer cli.Close()
	s := lease.NewStore(cli, cfg.Prefix)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// The whole protocol works inside the prefix: session, claim, release.
	id, _, err := s.Grant(ctx, 10*time.Second)
	if err != nil {
		t.Fatalf("grant: %v", err)
	}
	if err := s.Register(ctx, lease.HostRecord{Host: "host-a", Lease: id, Started: time.Now()}); err != nil {
		t.Fatalf("register: %v", err)
	}
	h := lease.Holder{Host: "host-a", Lease: id}
	claim := lease.Claim{UUID: uuidWeb1, Name: "web1", Disks: []string{"rbd/pool/web1", "rbd/pool/shared"}, Start: true}
	r, err := s.Claim(ctx, h, claim)
	if err != nil || r.Written != 3 {
		t.Fatalf("claim: %+v %v", r, err)
	}
	t.Logf("claim as user virtlease over TLS wrote %d keys at revision %d", r.Written, r.Revision)

	// Status through the CLI, with the same config file.
	var out, errw bytes.Buffer
	if code := runCLI([]string{"virtlease", "status", "--json", "--config", good}, strings.NewReader(""), &out, &errw, mapEnv(nil)); code != 0 {
		t.Fatalf("status: exit %d %s", code, errw.String())
	}
	var st statusJSON
	if err := json.Unmarshal(out.Bytes(), &st); err != nil || len(st.Hosts) != 1 || st.Hosts[0].TTLSeconds <= 0 ||
		len(st.Domains) != 1 || st.Domains[0].Name != "web1" || len(st.Domains[0].Disks) != 2 || !st.Domains[0].HolderLive {
		t.Fatalf("status: %v\n%s", err, out.String())
	}
	t.Logf("status as user virtlease: %d host (ttl %ds), %d domain with %d disks", len(st.Hosts), st.Hosts[0].TTLSeconds, len(st.Domains), len(st.Domains[0].Disks))

	n, err := s.Release(ctx, h, claim.UUID, claim.Disks, nil)
	if err != nil || n != 3 {
		t.Fatalf("release: %d %v", n, err)
	}
	if err := s.Revoke(ctx, id); err != nil {
		t.Fatalf("revoke: %v", err)
	}

	// Outside the prefix the role grants nothing.
	_, err = cli.Get(ctx, "/other/secret")
	if !errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Fatalf("read outside the prefix: %v, want permission denied", err)
	}
	t.Logf("read of /other/secret as user virtlease: %v", err)
	if _, err := cli.Put(ctx, "/other/x", "y"); !errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Fatalf("write outside the prefix: %v, want permission denied", err)
	}
	// A prefix the role does not cover fails the same way, through the CLI.
	other := filepath.Join(dir, "other-prefix.yaml")
	os.WriteFile(other, append([]byte("prefix: /other\n"), mustRead(t, good)...), 0o600)
	out.Reset()
	errw.Reset()
	if code := runCLI([]string{"virtlease", "status", "--config", other}, strings.NewReader(""), &out, &errw, mapEnv(nil)); code != 2 ||
		!strings.Contains(errw.String(), "permission denied (etcd user virtlease needs readwrite permission on the key range /other/)") {
		t.Errorf("status under /other: exit %d, %q", code, errw.String())
	}

	// Failures say what is wrong, with the right exit code.
	wrongPW := filepath.Join(dir, "wrong-password")
	os.WriteFile(wrongPW, []byte("guess\n"), 0o600)
	cases := []struct {
		name, etcd string
		code       int
		want       string
	}{
		{"wrong password", "  endpoints: [" + endpoint + "]\n  cacert: " + p.CACert + "\n  cert: " + clientCert + "\n  key: " + clientKey +
			// etcd checks the password with bcrypt: slow under -race on a
			// loaded machine, so give the login time to be refused.
			"\n  username: virtlease\n  password_file: " + wrongPW + "\n  dial_timeout: 15s\n", 2, `refused user "virtlease": wrong user name or password`},
		{"no client certificate", "  endpoints: [" + endpoint + "]\n  cacert: " + p.CACert +
			"\n  username: virtlease\n  password_file: " + pwFile + "\n  dial_timeout: 1s\n", 3, "etcd unavailable"},
		{"missing cacert file", "  endpoints: [" + endpoint + "]\n  cacert: " + filepath.Join(dir, "nope.pem") + "\n", 2, "nope.pem"},
		{"missing password file", "  endpoints: [" + endpoint + "]\n  username: virtlease\n  password_file: " + filepath.Join(dir, "nope") + "\n", 2, "cannot read"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(strings.ReplaceAll(tc.name, " ", "-")+".yaml", tc.etcd)
			var out, errw bytes.Buffer
			code := runCLI([]string{"virtlease", "status", "--config", path}, strings.NewReader(""), &out, &errw, mapEnv(nil))
			if code != tc.code || !strings.Contains(errw.String(), tc.want) || strings.Count(errw.String(), "\n") != 1 {
				t.Errorf("exit %d (want %d), stderr %q (want one line with %q)", code, tc.code, errw.String(), tc.want)
			}
			t.Logf("exit %d: %s", code, errw.String())
		})
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
