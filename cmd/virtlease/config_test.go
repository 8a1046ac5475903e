package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

const configFixtures = "../../testdata/config"

func configFixture(name string) string { return filepath.Join(configFixtures, name) }

// env returns a getenv backed by m.
func mapEnv(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func thisHost(t *testing.T) string {
	t.Helper()
	h, err := os.Hostname()
	if err != nil {
		t.Skipf("no hostname: %v", err)
	}
	return h
}

func secs(n float64) Duration { return Duration(n * float64(time.Second)) }

// withDefaultHost is DefaultConfig as LoadConfig returns it when no file sets
// host, with edit applied.
func defaultsWithHost(t *testing.T, edit func(*Config)) Config {
	c := DefaultConfig()
	c.Host = thisHost(t)
	if edit != nil {
		edit(&c)
	}
	return c
}

func TestDefaultConfig(t *testing.T) {
	c := DefaultConfig()
	want := Config{
		Prefix: "/virtlease",
		Etcd: EtcdConfig{
			Endpoints:   []string{"http://127.0.0.1:2379"},
			DialTimeout: secs(2),
		},
		Session: SessionConfig{TTL: secs(10), RenewInterval: secs(1)},
		Fence:   FenceConfig{Margin: secs(3)},
		Libvirt: LibvirtConfig{URI: "qemu:///system"},
		Hook:    HookConfig{Timeout: secs(5)},
		HA:      HAConfig{MaxRestarts: 3, OnShutdown: "migrate", MigrateURI: "qemu+ssh://{host}/system"},
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("DefaultConfig() = %+v\nwant %+v", c, want)
	}
	c.Host = "host-a"
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults with a host do not validate: %v", err)
	}
	// Each call returns its own slice.
	c.Etcd.Endpoints[0] = "changed"
	if DefaultConfig().Etcd.Endpoints[0] != "http://127.0.0.1:2379" {
		t.Fatal("DefaultConfig shares its endpoints slice")
	}
}

func TestLoadConfigFiles(t *testing.T) {
	tests := []struct {
		file string
		want Config
	}{
		{"good.yaml", Config{
			Host:   "host-a.example.com",
			Prefix: "/prod/virtlease",
			Etcd: EtcdConfig{
				Endpoints: []string{
					"https://etcd-1.example.com:2379",
					"https://etcd-2.example.com:2379",
					"https://10.0.0.3:2379",
				},
				CACert:       "/etc/virtlease/ca.pem",
				Cert:         "/etc/virtlease/client.pem",
				Key:          "/etc/virtlease/client-key.pem",
				Username:     "virtlease",
				PasswordFile: "/etc/virtlease/etcd-password",
				DialTimeout:  secs(1.5),
			},
			Session: SessionConfig{TTL: secs(15), RenewInterval: secs(2)},
			Fence:   FenceConfig{Margin: secs(5), HardwareWatchdog: "/dev/watchdog"},
			Libvirt: LibvirtConfig{URI: "qemu+ssh://localhost/system"},
			Hook:    HookConfig{Timeout: secs(10)},
			Metrics: MetricsConfig{Listen: "127.0.0.1:9479"},
			HA:      HAConfig{MaxRestarts: 5, DefineMissing: true, OnShutdown: "failover", MigrateURI: "qemu+ssh://{host}/system"},
		}},
		{"minimal.yaml", defaultsWithHost(t, func(c *Config) {
			c.Etcd.Endpoints = []string{"http://192.0.2.10:2379"}
		})},
		{"empty.yaml", defaultsWithHost(t, nil)},
		{"comments-only.yaml", defaultsWithHost(t, nil)},
		{"anchors.yaml", defaultsWithHost(t, func(c *Config) {
			c.Session.TTL = secs(12)
			c.Hook.Timeout = secs(12)
		})},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := LoadConfig(configFixture(tt.file), mapEnv(nil))
			if err != nil {
				t.Fatalf("LoadConfig: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tt.want)
			}
			if err := got.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
		})
	}
}

func TestLoadConfigErrors(t *testing.T) {
	tests := []struct {
		file string
		want []string // substrings of the message
	}{
		{"unknown-key.yaml", []string{"line 4", `unknown key "tmeout" in hook`, `did you mean "timeout"`}},
		{"unknown-top-key.yaml", []string{"line 1", `unknown key "hots" at top level`, `did you mean "host"`}},
		{"bad-duration.yaml", []string{"line 2", `session.ttl: "10" is not a duration (write e.g. 10s)`}},
		{"garbage-duration.yaml", []string{"line 2", `fence.margin: "three seconds" is not a duration`}},
		{"bad-int.yaml", []string{"line 2", `ha.max_restarts: "many" is not a whole number`}},
		{"bad-list.yaml", []string{"line 2", "etcd.endpoints: expected a list such as [http://127.0.0.1:2379]"}},
		{"not-a-mapping.yaml", []string{"line 1", `session: expected keys (ttl, renew_interval), found "10s"`}},
		{"top-list.yaml", []string{"line 1", "top level: expected keys (host, prefix,", "found a list"}},
		{"duplicate-key.yaml", []string{"line 4", `key "ttl" repeated in session (first on line 2)`}},
		{"syntax-error.yaml", []string{"line 2: did not find expected key"}},
		{"two-documents.yaml", []string{"line 3: a second YAML document"}},
		{"does-not-exist.yaml", []string{"cannot read: no such file or directory"}},
		{".", []string{"cannot read"}}, // a directory
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := configFixture(tt.file)
			_, err := LoadConfig(path, mapEnv(nil))
			if err == nil {
				t.Fatal("LoadConfig succeeded, want an error")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "config "+path+": ") {
				t.Errorf("message %q does not start with %q", msg, "config "+path+": ")
			}
			if strings.ContainsAny(msg, "\n\r") {
				t.Errorf("message is not one line: %q", msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q does not contain %q", msg, w)
				}
			}
		})
	}
}

func TestParseConfigInline(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       func(*Config) // nil: an error is wanted
		wantErr    string
	}{
		{name: "merge key", yaml: "session:\n  <<: {ttl: 20s, renew_interval: 2s}\n  ttl: 30s\n",
			want: func(c *Config) { c.Session.TTL, c.Session.RenewInterval = secs(30), secs(2) }},
		{name: "null value keeps default", yaml: "session:\n  ttl:\n",
			want: func(c *Config) {}},
		{name: "null section keeps defaults", yaml: "session:\nha: ~\n",
			want: func(c *Config) {}},
		{name: "quoted duration", yaml: "hook:\n  timeout: \"500ms\"\n",
			want: func(c *Config) { c.Hook.Timeout = secs(0.5) }},
		{name: "yes is true", yaml: "ha:\n  define_missing: yes\n",
			want: func(c *Config) { c.HA.DefineMissing = true }},
		{name: "empty endpoint list", yaml: "etcd:\n  endpoints: []\n",
			want: func(c *Config) { c.Etcd.Endpoints = []string{} }},
		{name: "bare zero duration", yaml: "etcd:\n  dial_timeout: 0\n",
			wantErr: `line 2: etcd.dial_timeout: "0" is not a duration (write e.g. 0s)`},
		{name: "duration as list", yaml: "session:\n  ttl: [10s]\n",
			wantErr: "line 2: session.ttl: expected a duration such as 10s, found a list"},
		{name: "endpoint as mapping", yaml: "etcd:\n  endpoints:\n    - {host: a}\n",
			wantErr: "line 3: etcd.endpoints[0]: expected a string, found a mapping"},
		{name: "string as mapping", yaml: "host: {a: b}\n",
			wantErr: "line 1: host: expected a string, found a mapping"},
		{name: "bool garbage", yaml: "ha:\n  define_missing: maybe\n",
			wantErr: `line 2: ha.define_missing: "maybe" is not true or false`},
		{name: "key far from any", yaml: "fence:\n  zzzzzzzz: 1\n",
			wantErr: `line 2: unknown key "zzzzzzzz" in fence (known: margin, hardware_watchdog)`},
		{name: "key in wrong case", yaml: "session:\n  TTL: 10s\n",
			wantErr: `unknown key "TTL" in session (did you mean "ttl"?)`},
		{name: "complex key", yaml: "? [a]\n: b\n",
			wantErr: "line 1: top level: a key must be a name, found a list"},
		{name: "bad merge", yaml: "session:\n  <<: {tll: 1s}\n",
			wantErr: `unknown key "tll" in session`},
		{name: "undefined alias", yaml: "host: *nope\n",
			wantErr: "config test.yaml: unknown anchor 'nope' referenced"},
		{name: "tab indent", yaml: "session:\n\tttl: 10s\n",
			wantErr: "config test.yaml: line 2: found character that cannot start any token (indent with spaces: YAML does not allow tabs)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseConfig("test.yaml", []byte(tt.yaml))
			if tt.want == nil {
				if err == nil {
					t.Fatalf("parsed to %+v, want an error containing %q", got, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("error %q, want one line containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseConfig: %v", err)
			}
			want := DefaultConfig()
			tt.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestLoadConfigPath(t *testing.T) {
	good := configFixture("good.yaml")
	minimal := configFixture("minimal.yaml")
	missing := filepath.Join(t.TempDir(), "config.yaml")

	t.Run("explicit path beats the environment", func(t *testing.T) {
		c, err := LoadConfig(good, mapEnv(map[string]string{ConfigEnv: minimal}))
		if err != nil || c.Host != "host-a.example.com" {
			t.Fatalf("got host %q, err %v; want good.yaml", c.Host, err)
		}
	})
	t.Run("environment overrides the default path", func(t *testing.T) {
		c, err := LoadConfig("", mapEnv(map[string]string{ConfigEnv: good}))
		if err != nil || c.Host != "host-a.example.com" {
			t.Fatalf("got host %q, err %v; want good.yaml", c.Host, err)
		}
	})
	t.Run("explicit missing file is an error", func(t *testing.T) {
		_, err := LoadConfig(missing, mapEnv(nil))
		if err == nil || !strings.Contains(err.Error(), "config "+missing+": cannot read") {
			t.Fatalf("err %v, want one naming %s", err, missing)
		}
	})
	t.Run("missing file named by the environment is an error", func(t *testing.T) {
		_, err := LoadConfig("", mapEnv(map[string]string{ConfigEnv: missing}))
		if err == nil || !strings.Contains(err.Error(), missing) {
			t.Fatalf("err %v, want one naming %s", err, missing)
		}
	})
	t.Run("missing default file gives the defaults", func(t *testing.T) {
		c, err := loadConfigFrom(missing, false)
		if err != nil {
			t.Fatal(err)
		}
		if want := defaultsWithHost(t, nil); !reflect.DeepEqual(c, want) {
			t.Fatalf("got %+v, want %+v", c, want)
		}
	})
	t.Run("unreadable default file is an error", func(t *testing.T) {
		_, err := loadConfigFrom(t.TempDir(), false) // a directory
		if err == nil {
			t.Fatal("no error for a directory at the default path")
		}
	})

	resolve := []struct {
		name, path string
		env        map[string]string
		want       string
		explicit   bool
	}{
		{"flag", "/x.yaml", map[string]string{ConfigEnv: "/y.yaml"}, "/x.yaml", true},
		{"env", "", map[string]string{ConfigEnv: "/y.yaml"}, "/y.yaml", true},
		{"empty env", "", map[string]string{ConfigEnv: ""}, DefaultConfigPath, false},
		{"nothing", "", nil, DefaultConfigPath, false},
	}
	for _, tt := range resolve {
		t.Run("resolve "+tt.name, func(t *testing.T) {
			p, explicit := resolveConfigPath(tt.path, mapEnv(tt.env))
			if p != tt.want || explicit != tt.explicit {
				t.Fatalf("resolveConfigPath = %q, %v; want %q, %v", p, explicit, tt.want, tt.explicit)
			}
		})
	}
	t.Run("nil getenv", func(t *testing.T) {
		if p, _ := resolveConfigPath("", nil); p != DefaultConfigPath {
			t.Fatalf("got %q", p)
		}
	})
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		want []string // substrings; none means valid
	}{
		// ok
		{"defaults", func(c *Config) {}, nil},
		{"tightest timing", func(c *Config) {
			// ttl 6s, renew 1s, margin between 2s and 4s.
			c.Session.TTL, c.Session.RenewInterval, c.Fence.Margin = secs(6), secs(1), secs(4)
		}, nil},
		{"renew exactly ttl/3", func(c *Config) {
			c.Session.TTL, c.Session.RenewInterval, c.Fence.Margin = secs(9), secs(3), secs(3)
		}, []string{"fence.margin 3s must be at least 2 x session.renew_interval (2 x 3s = 6s)"}},
		{"https without cacert", func(c *Config) { c.Etcd.Endpoints = []string{"https://[::1]:2379"} }, nil},
		{"several https endpoints", func(c *Config) {
			c.Etcd.Endpoints = []string{"https://etcd-1:2379", "https://etcd-2:2379", "https://10.0.0.3:2379"}
		}, nil},
		{"unix endpoint, absolute", func(c *Config) { c.Etcd.Endpoints = []string{"unix:///run/etcd.sock"} }, nil},
		{"unix endpoint, relative (etcd test clusters)", func(c *Config) { c.Etcd.Endpoints = []string{"unix://localhost:m0"} }, nil},
		{"unixs endpoint", func(c *Config) { c.Etcd.Endpoints = []string{"unixs:///run/etcd.sock"} }, nil},
		{"hook timeout 60s", func(c *Config) { c.Hook.Timeout = secs(60) }, nil},
		{"username without password", func(c *Config) { c.Etcd.Username = "root" }, nil},
		{"fqdn host", func(c *Config) { c.Host = "host-a.example.com" }, nil},

		// timing
		{"ttl not whole seconds", func(c *Config) { c.Session.TTL = secs(10.5) },
			[]string{"session.ttl 10.5s must be whole seconds and at least 3s"}},
		{"ttl below 3s", func(c *Config) {
			c.Session.TTL, c.Session.RenewInterval, c.Fence.Margin = secs(2), secs(0.5), secs(2)
		}, []string{"session.ttl 2s must be whole seconds and at least 3s"}},
		{"renew zero", func(c *Config) { c.Session.RenewInterval = 0 },
			[]string{"session.renew_interval 0s must be more than 0"}},
		{"renew above ttl/3", func(c *Config) { c.Session.RenewInterval = secs(4) },
			[]string{"session.renew_interval 4s must be at most session.ttl/3 (10s/3 = 3.333s)"}},
		{"margin below 2s", func(c *Config) {
			c.Session.RenewInterval, c.Fence.Margin = secs(0.5), secs(1.5)
		}, []string{"fence.margin 1.5s must be at least 2s"}},
		{"margin below 2 x renew", func(c *Config) {
			c.Session.TTL, c.Session.RenewInterval, c.Fence.Margin = secs(30), secs(3), secs(5)
		}, []string{"fence.margin 5s must be at least 2 x session.renew_interval (2 x 3s = 6s)"}},
		{"margin above ttl - 2 x renew", func(c *Config) { c.Fence.Margin = secs(9) },
			[]string{"fence.margin 9s must be at most session.ttl - 2 x session.renew_interval (10s - 2 x 1s = 8s)"}},
		{"huge durations do not overflow", func(c *Config) {
			c.Session.TTL = Duration(1<<63 - 1)
			c.Session.RenewInterval = Duration(1<<63 - 1)
			c.Fence.Margin = Duration(1<<63 - 1)
		}, []string{"session.ttl", "session.renew_interval", "must be at most session.ttl/3"}},
		{"hook timeout zero", func(c *Config) { c.Hook.Timeout = 0 },
			[]string{"hook.timeout 0s must be more than 0 and at most 60s"}},
		{"hook timeout above 60s", func(c *Config) { c.Hook.Timeout = secs(61) },
			[]string{"hook.timeout 1m1s must be more than 0 and at most 60s"}},
		{"dial timeout negative", func(c *Config) { c.Etcd.DialTimeout = secs(-1) },
			[]string{"etcd.dial_timeout -1s must be more than 0"}},

		// etcd
		{"no endpoints", func(c *Config) { c.Etcd.Endpoints = nil },
			[]string{"etcd.endpoints is empty"}},
		{"endpoint without scheme", func(c *Config) { c.Etcd.Endpoints = []string{"127.0.0.1:2379"} },
			[]string{`etcd.endpoints[0] "127.0.0.1:2379" must be http://HOST:PORT, https://HOST:PORT, unix://PATH or unixs://PATH`}},
		{"endpoint without port", func(c *Config) {
			c.Etcd.Endpoints = []string{"http://127.0.0.1:2379", "http://etcd-2"}
		}, []string{`etcd.endpoints[1] "http://etcd-2" must be`}},
		{"endpoint with path", func(c *Config) { c.Etcd.Endpoints = []string{"http://a:2379/v3"} },
			[]string{`etcd.endpoints[0] "http://a:2379/v3" must be`}},
		{"endpoint with bad port", func(c *Config) { c.Etcd.Endpoints = []string{"http://a:99999"} },
			[]string{`etcd.endpoints[0] "http://a:99999" must be`}},
		{"unix endpoint without path", func(c *Config) { c.Etcd.Endpoints = []string{"unix://"} },
			[]string{`etcd.endpoints[0] "unix://" must be`}},
		{"unix endpoint without //", func(c *Config) { c.Etcd.Endpoints = []string{"unix:/run/etcd.sock"} },
			[]string{`etcd.endpoints[0] "unix:/run/etcd.sock" must be`}},
		{"mixed TLS and plain endpoints", func(c *Config) {
			c.Etcd.Endpoints = []string{"https://etcd-1:2379", "http://etcd-2:2379"}
		}, []string{`etcd.endpoints[1] "http://etcd-2:2379": every endpoint must use TLS (https://, unixs://) or none (http://, unix://), like etcd.endpoints[0] "https://etcd-1:2379"`}},
		{"cert without key", func(c *Config) { c.Etcd.Cert = "/c.pem" },
			[]string{`etcd.cert "/c.pem" and etcd.key "": set both or neither`}},
		{"key without cert", func(c *Config) { c.Etcd.Key = "/k.pem" },
			[]string{`etcd.cert "" and etcd.key "/k.pem": set both or neither`}},
		{"password file without username", func(c *Config) { c.Etcd.PasswordFile = "/p" },
			[]string{`etcd.password_file "/p" needs etcd.username`}},

		// names
		{"relative prefix", func(c *Config) { c.Prefix = "virtlease" },
			[]string{`prefix "virtlease" must start with /`}},
		{"root prefix", func(c *Config) { c.Prefix = "/" }, []string{`prefix "/" must start with /`}},
		{"slashes prefix", func(c *Config) { c.Prefix = "//" }, []string{`prefix "//" must start with /`}},
		{"empty host", func(c *Config) { c.Host = "" }, []string{"host is empty"}},
		{"host with slash", func(c *Config) { c.Host = "a/b" }, []string{`host "a/b" must not contain /`}},
		{"host with space", func(c *Config) { c.Host = "a b" }, []string{`host "a b" must not contain /, spaces`}},
		{"host with newline", func(c *Config) { c.Host = "a\n" }, []string{`host "a\n" must not contain`}},

		// other
		{"relative watchdog", func(c *Config) { c.Fence.HardwareWatchdog = "watchdog" },
			[]string{`fence.hardware_watchdog "watchdog" must be an absolute path`}},
		{"empty libvirt uri", func(c *Config) { c.Libvirt.URI = "" }, []string{"libvirt.uri is empty"}},
		{"metrics without port", func(c *Config) { c.Metrics.Listen = "9479" },
			[]string{`metrics.listen "9479" must be HOST:PORT`}},
		{"metrics any address", func(c *Config) { c.Metrics.Listen = ":9479" }, nil},
		{"bad on_shutdown", func(c *Config) { c.HA.OnShutdown = "Migrate" },
			[]string{`ha.on_shutdown "Migrate" must be migrate, failover or stop`}},
		{"on_shutdown stop", func(c *Config) { c.HA.OnShutdown = "stop" }, nil},
		{"max restarts zero", func(c *Config) { c.HA.MaxRestarts = 0 },
			[]string{"ha.max_restarts 0 must be at least 1"}},

		// several at once: one line, all named
		{"several", func(c *Config) {
			c.HA.MaxRestarts = 0
			c.Prefix = ""
			c.Hook.Timeout = 0
		}, []string{"config: hook.timeout 0s", `; prefix ""`, "; ha.max_restarts 0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			c.Host = "host-a"
			tt.edit(&c)
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate succeeded, want an error containing %q", tt.want)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "config: ") || strings.ContainsAny(msg, "\n\r") {
				t.Errorf("message is not one line starting with \"config: \": %q", msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q does not contain %q", msg, w)
				}
			}
		})
	}
}

func TestBadTimingFile(t *testing.T) {
	c, err := LoadConfig(configFixture("bad-timing.yaml"), mapEnv(nil))
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	err = c.Validate()
	if err == nil {
		t.Fatal("Validate accepted bad-timing.yaml")
	}
	for _, w := range []string{
		"session.renew_interval 3s must be at most session.ttl/3 (6s/3 = 2s)",
		"fence.margin 1s must be at least 2s",
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("message %q does not contain %q", err, w)
		}
	}
}

func TestPassword(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name, file string
		want       string
		wantErr    string
	}{
		{"no file configured", "", "", ""},
		{"trailing newline", write("nl", "s3cret\n"), "s3cret", ""},
		{"crlf", write("crlf", "s3cret\r\n"), "s3cret", ""},
		{"no newline, spaces kept", write("plain", " s3 cret "), " s3 cret ", ""},
		{"empty file", write("empty", "\n"), "", "is empty"},
		{"missing file", filepath.Join(dir, "missing"), "", "etcd.password_file " + filepath.Join(dir, "missing") + ": cannot read"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			c.Etcd.PasswordFile = tt.file
			got, err := c.Password()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Password() = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestDurationYAML(t *testing.T) {
	for _, s := range []string{"10s", "1.5s", "500ms", "1m30s", "-1s"} {
		var d Duration
		if err := yaml.Unmarshal([]byte(s), &d); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		want, _ := time.ParseDuration(s)
		if time.Duration(d) != want {
			t.Fatalf("%s: got %v", s, time.Duration(d))
		}
		out, err := yaml.Marshal(d)
		if err != nil || strings.TrimSpace(string(out)) != want.String() {
			t.Fatalf("%s: Marshal = %q, %v", s, out, err)
		}
	}
	for _, s := range []string{"10", "1.5", "ten", "10 s", "[1s]"} {
		var d Duration
		if err := yaml.Unmarshal([]byte(s), &d); err == nil {
			t.Fatalf("%s: accepted as %v", s, d)
		}
	}
}

// FuzzParseConfig checks that no input makes the loader panic and that every
// error is one line naming the file.
func FuzzParseConfig(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join(configFixtures, "*.yaml"))
	for _, s := range seeds {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("a: &a [*a, *a]\n"))
	f.Add([]byte("session: {<<: [{ttl: 1s}, {ttl: 2s}]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := parseConfig("f.yaml", data)
		if err != nil {
			msg := err.Error()
			if !strings.HasPrefix(msg, "config f.yaml: ") || strings.ContainsAny(msg, "\n\r") {
				t.Fatalf("bad error message %q", msg)
			}
			return
		}
		_ = c.Validate()
	})
}
