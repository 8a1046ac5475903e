package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode"

	"go.yaml.in/yaml/v3"
)

// DefaultConfigPath is read when neither --config nor $VIRTLEASE_CONFIG names
// a file. If it does not exist, every setting takes its default.
const DefaultConfigPath = "/etc/virtlease/config.yaml"

// ConfigEnv names the environment variable that overrides DefaultConfigPath.
// libvirt clears the environment of its hooks, so there only the file counts.
const ConfigEnv = "VIRTLEASE_CONFIG"

// Config is /etc/virtlease/config.yaml (README "Configuration"). Every
// field is optional; DefaultConfig gives the defaults. LoadConfig decodes a
// file on top of them; Validate checks the values, the timing rules first.
type Config struct {
	// Host is this machine's name in etcd keys (hosts/HOST). Default: the
	// full name os.Hostname returns, domain part included (not cut at the
	// first '.'), filled in by LoadConfig. Two machines must never share it.
	Host string `yaml:"host"`
	// Prefix is the etcd key prefix of every virtlease key. Default /virtlease.
	Prefix  string        `yaml:"prefix"`
	Etcd    EtcdConfig    `yaml:"etcd"`
	Session SessionConfig `yaml:"session"`
	Fence   FenceConfig   `yaml:"fence"`
	Libvirt LibvirtConfig `yaml:"libvirt"`
	Hook    HookConfig    `yaml:"hook"`
	Metrics MetricsConfig `yaml:"metrics"`
	// opTimeout is --timeout of an operator command (0: the default).
	opTimeout time.Duration
	HA        HAConfig `yaml:"ha"`
}

// EtcdConfig says how to reach etcd. TLS and credentials work like
// etcdctl's --cacert, --cert, --key and --user flags.
type EtcdConfig struct {
	// Endpoints are http:// or https:// URLs with host and port, or
	// unix:// or unixs:// socket paths, all with TLS or all without; used
	// as given, never synced from etcd's member list.
	// Default [http://127.0.0.1:2379].
	Endpoints []string `yaml:"endpoints"`
	// CACert is a PEM file of the CAs to trust; empty means the system
	// roots. Default "".
	CACert string `yaml:"cacert"`
	// Cert and Key are the client certificate and its key (PEM); set both
	// or neither. Default "".
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// Username is the etcd user; its password is read from PasswordFile
	// (see Config.Password). Default "".
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	// DialTimeout bounds the first connection. It does not bound later
	// calls: each takes its own context deadline. Default 2s.
	DialTimeout Duration `yaml:"dial_timeout"`
}

// SessionConfig is the host's etcd session lease.
type SessionConfig struct {
	// TTL is the lease's time to live: another host may start this host's
	// guests no earlier than TTL after its last successful renewal.
	// Whole seconds, at least 3s. Default 10s.
	TTL Duration `yaml:"ttl"`
	// RenewInterval is how often the lease is renewed; at most TTL/3.
	// Default 1s.
	RenewInterval Duration `yaml:"renew_interval"`
}

// FenceConfig is the watchdog that kills this host's guests when its lease
// may have expired.
type FenceConfig struct {
	// Margin is how long before the lease's deadline the watchdog has
	// killed every guest: at least 2s (above etcd's default election
	// timeout) and 2×RenewInterval, at most TTL − 2×RenewInterval.
	// Default 3s.
	Margin Duration `yaml:"margin"`
	// HardwareWatchdog is a watchdog device such as /dev/watchdog that
	// resets the machine if the fencing process itself stops. Default ""
	// (none).
	HardwareWatchdog string `yaml:"hardware_watchdog"`
}

// LibvirtConfig says which libvirtd the daemon talks to (hooks never do).
type LibvirtConfig struct {
	// URI is the libvirt connection URI. Default qemu:///system: the
	// modular virtqemud's /run/libvirt/virtqemud-sock when it exists, else
	// libvirtd's /run/libvirt/libvirt-sock (picked again at every
	// reconnect); qemu+unix:///system?socket=PATH names one socket.
	URI string `yaml:"uri"`
}

// HookConfig is the libvirt hook (/etc/libvirt/hooks/qemu).
type HookConfig struct {
	// Timeout is the hard deadline of every hook call, so libvirtd never
	// hangs; more than 0, at most 60s. Default 5s.
	Timeout Duration `yaml:"timeout"`
}

// MetricsConfig is the Prometheus endpoint.
type MetricsConfig struct {
	// Listen is the HOST:PORT to serve /metrics on, e.g. 127.0.0.1:9479.
	// Default "" (no metrics).
	Listen string `yaml:"listen"`
}

// HAConfig is the restart of HA domains elsewhere.
type HAConfig struct {
	// MaxRestarts is how many times a domain is restarted per 10 minutes
	// before its intent becomes failed; at least 1. Default 3.
	MaxRestarts int `yaml:"max_restarts"`
	// DefineMissing defines a domain from its recorded XML on a host that
	// lacks it. Default false.
	DefineMissing bool `yaml:"define_missing"`
	// OnShutdown is what a host shutting down does with its HA domains:
	// migrate, failover or stop. Default migrate.
	OnShutdown string `yaml:"on_shutdown"`
	// MigrateURI is the libvirt URI of another host for live evacuation
	// (drain --evacuate, on_shutdown migrate); {host} is replaced by the
	// destination's host name. Default qemu+ssh://{host}/system.
	MigrateURI string `yaml:"migrate_uri"`
	// MigrateDataURI is virsh migrate's migrate-uri (where the memory
	// goes), {host} replaced likewise; "" lets libvirt choose. Default "".
	MigrateDataURI string `yaml:"migrate_data_uri"`
}

// Duration is a time.Duration written in YAML as Go writes durations:
// "10s", "1.5s", "500ms". A bare number ("10") is refused, because its unit
// would be a guess.
type Duration time.Duration

// String returns the duration as Go writes it, e.g. "10s".
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalYAML writes the duration as LoadConfig reads it.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// UnmarshalYAML reads a scalar such as "10s". The error names the value,
// not the field: LoadConfig adds the field and line.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("expected a duration such as 10s, found %s", describeYAML(n))
	}
	v, err := parseDuration(n.Value)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

func parseDuration(s string) (time.Duration, error) {
	if _, err := strconv.ParseFloat(s, 64); err == nil {
		return 0, fmt.Errorf("%q is not a duration (write e.g. %ss)", s, s)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (write e.g. 10s, 1.5s or 500ms)", s)
	}
	return v, nil
}

// DefaultConfig returns the defaults of README "Configuration". Host is
// left empty: LoadConfig fills it from os.Hostname.
func DefaultConfig() Config {
	return Config{
		Prefix: "/virtlease",
		Etcd: EtcdConfig{
			Endpoints:   []string{"http://127.0.0.1:2379"},
			DialTimeout: Duration(2 * time.Second),
		},
		Session: SessionConfig{
			TTL:           Duration(10 * time.Second),
			RenewInterval: Duration(time.Second),
		},
		Fence:   FenceConfig{Margin: Duration(3 * time.Second)},
		Libvirt: LibvirtConfig{URI: "qemu:///system"},
		Hook:    HookConfig{Timeout: Duration(5 * time.Second)},
		HA:      HAConfig{MaxRestarts: 3, OnShutdown: "migrate", MigrateURI: "qemu+ssh://{host}/system"},
	}
}

// LoadConfig reads the configuration file at path. An empty path means
// $VIRTLEASE_CONFIG (looked up with getenv; nil means no environment) if it
// is set and non-empty, else DefaultConfigPath.
//
// Outcomes:
//   - the file exists: its settings on top of DefaultConfig; an empty file
//     (or one with only comments) gives the defaults;
//   - DefaultConfigPath, not named by path or the environment, does not
//     exist: the defaults, nil error;
//   - a file named by path or $VIRTLEASE_CONFIG is missing or unreadable, or
//     any file has bad YAML, an unknown or repeated key, or a value of the
//     wrong type: an error of one line, "config FILE: line N: FIELD: problem".
//
// Host, if still empty, becomes os.Hostname() (the full name). LoadConfig
// does not call Validate; callers do, after it.
func LoadConfig(path string, getenv func(string) string) (Config, error) {
	p, explicit := resolveConfigPath(path, getenv)
	return loadConfigFrom(p, explicit)
}

// resolveConfigPath returns the file LoadConfig reads and whether the
// operator named it (so that its absence is an error).
func resolveConfigPath(path string, getenv func(string) string) (string, bool) {
	if path != "" {
		return path, true
	}
	if getenv != nil {
		if p := getenv(ConfigEnv); p != "" {
			return p, true
		}
	}
	return DefaultConfigPath, false
}

// loadConfigFrom is LoadConfig once the path is known; explicit says whether
// a missing file is an error.
func loadConfigFrom(path string, explicit bool) (Config, error) {
	data, err := os.ReadFile(path)
	var cfg Config
	switch {
	case err == nil:
		cfg, err = parseConfig(path, data)
		if err != nil {
			return Config{}, err
		}
	case !explicit && errors.Is(err, fs.ErrNotExist):
		cfg = DefaultConfig()
	default:
		return Config{}, fmt.Errorf("config %s: cannot read: %v", path, unwrapPathError(err))
	}
	if cfg.Host == "" {
		h, err := os.Hostname()
		if err != nil {
			return Config{}, fmt.Errorf("config %s: host is not set and the hostname is unknown: %v", path, err)
		}
		cfg.Host = h
	}
	return cfg, nil
}

// unwrapPathError drops the "open FILE:" part of err, since the message
// already names the file.
func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// parseConfig decodes data (the contents of file) on top of DefaultConfig.
// It never panics: a panic inside the YAML library becomes an error.
func parseConfig(file string, data []byte) (cfg Config, err error) {
	defer func() {
		if r := recover(); r != nil {
			cfg, err = Config{}, fmt.Errorf("config %s: cannot parse YAML (%v)", file, singleLine(fmt.Sprint(r)))
		}
	}()
	fail := func(line int, format string, args ...any) (Config, error) {
		msg := singleLine(fmt.Sprintf(format, args...))
		if line > 0 {
			return Config{}, fmt.Errorf("config %s: line %d: %s", file, line, msg)
		}
		return Config{}, fmt.Errorf("config %s: %s", file, msg)
	}

	// First pass: the document as a tree, to name the field and line of
	// any problem.
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return DefaultConfig(), nil
		}
		msg := yamlMessage(err)
		if strings.Contains(msg, "cannot start any token") && bytes.ContainsRune(data, '\t') {
			msg += " (indent with spaces: YAML does not allow tabs)"
		}
		return fail(0, "%s", msg)
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return fail(0, "%s", yamlMessage(err))
	default:
		return fail(next.Line, "a second YAML document (after ---): put every setting in one")
	}
	if len(doc.Content) == 0 || isYAMLNull(doc.Content[0]) {
		return DefaultConfig(), nil
	}
	c := configChecker{budget: maxConfigNodes}
	if p := c.check(doc.Content[0], reflect.TypeFor[Config](), ""); p != nil {
		return fail(p.line, "%s", p.msg)
	}

	// Second pass: the decode itself, strict about keys.
	cfg = DefaultConfig()
	dec = yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		return fail(0, "%s", yamlMessage(err))
	}
	return cfg, nil
}

// yamlMessage turns a yaml.v3 error into one line without the "yaml: "
// prefixes and Go type names.
func yamlMessage(err error) string {
	var te *yaml.TypeError
	var parts []string
	if errors.As(err, &te) {
		parts = te.Errors
	} else {
		parts = []string{err.Error()}
	}
	for i, p := range parts {
		p = strings.TrimPrefix(p, "yaml: ")
		p = strings.TrimPrefix(p, "unmarshal errors:")
		parts[i] = strings.TrimSpace(p)
	}
	return singleLine(strings.Join(parts, "; "))
}

func singleLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// maxConfigNodes bounds the first pass, so that aliases and merges cannot
// make it run long.
const maxConfigNodes = 10000

// configProblem is a first-pass finding: its line (0 if unknown) and message.
type configProblem struct {
	line int
	msg  string
}

// configChecker walks a YAML tree against a Go type and reports the first
// key or value that type cannot take, naming its YAML path (session.ttl).
type configChecker struct {
	budget int
}

var durationType = reflect.TypeFor[Duration]()

func (c *configChecker) check(n *yaml.Node, t reflect.Type, path string) *configProblem {
	for n.Kind == yaml.AliasNode {
		c.budget--
		if n.Alias == nil || c.budget < 0 {
			return &configProblem{n.Line, fmt.Sprintf("%s: alias *%s cannot be used here", placeName(path), n.Value)}
		}
		n = n.Alias
	}
	c.budget--
	if c.budget < 0 {
		return &configProblem{n.Line, "too many nodes, aliases or merges (more than " + strconv.Itoa(maxConfigNodes) + ")"}
	}
	if isYAMLNull(n) {
		return nil // yaml.v3 keeps the default (an empty list for endpoints)
	}
	switch {
	case t == durationType:
		var d Duration
		if err := d.UnmarshalYAML(n); err != nil {
			return &configProblem{n.Line, fmt.Sprintf("%s: %v", path, err)}
		}
		return nil
	case t.Kind() == reflect.Struct:
		return c.checkStruct(n, t, path)
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return &configProblem{n.Line, fmt.Sprintf("%s: expected a list such as [%s], found %s", path, exampleValue(path), describeYAML(n))}
		}
		for i, e := range n.Content {
			if p := c.check(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); p != nil {
				return p
			}
		}
		return nil
	}
	want := wantedKind(t)
	if n.Kind != yaml.ScalarNode {
		return &configProblem{n.Line, fmt.Sprintf("%s: expected %s, found %s", path, want, describeYAML(n))}
	}
	if err := n.Decode(reflect.New(t).Interface()); err != nil {
		return &configProblem{n.Line, fmt.Sprintf("%s: %q is not %s", path, n.Value, want)}
	}
	return nil
}

func (c *configChecker) checkStruct(n *yaml.Node, t reflect.Type, path string) *configProblem {
	names := yamlKeys(t)
	if n.Kind != yaml.MappingNode {
		return &configProblem{n.Line, fmt.Sprintf("%s: expected keys (%s), found %s", placeName(path), strings.Join(names, ", "), describeYAML(n))}
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			if p := c.checkMerge(v, t, path); p != nil {
				return p
			}
			continue
		}
		if k.Kind != yaml.ScalarNode {
			return &configProblem{k.Line, fmt.Sprintf("%s: a key must be a name, found %s", placeName(path), describeYAML(k))}
		}
		if first, ok := seen[k.Value]; ok {
			return &configProblem{k.Line, fmt.Sprintf("key %q repeated %s (first on line %d)", k.Value, inPlace(path), first)}
		}
		seen[k.Value] = k.Line
		f, ok := fieldByKey(t, k.Value)
		if !ok {
			msg := fmt.Sprintf("unknown key %q %s", k.Value, inPlace(path))
			if s := suggestKey(k.Value, names); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			} else {
				msg += fmt.Sprintf(" (known: %s)", strings.Join(names, ", "))
			}
			return &configProblem{k.Line, msg}
		}
		if p := c.check(v, f.Type, keyPath(path, k.Value)); p != nil {
			return p
		}
	}
	return nil
}

// checkMerge checks the value of a "<<" key: a mapping or a list of them.
func (c *configChecker) checkMerge(v *yaml.Node, t reflect.Type, path string) *configProblem {
	for v.Kind == yaml.AliasNode && v.Alias != nil && c.budget > 0 {
		c.budget--
		v = v.Alias
	}
	if v.Kind == yaml.SequenceNode {
		for _, e := range v.Content {
			if p := c.check(e, t, path); p != nil {
				return p
			}
		}
		return nil
	}
	return c.check(v, t, path)
}

// yamlKeys lists the YAML keys of struct type t in declaration order.
func yamlKeys(t reflect.Type) []string {
	var names []string
	for f := range t.Fields() {
		if name := yamlKey(f); name != "" {
			names = append(names, name)
		}
	}
	return names
}

func yamlKey(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" {
		return ""
	}
	if name == "" {
		name = strings.ToLower(f.Name)
	}
	return name
}

func fieldByKey(t reflect.Type, key string) (reflect.StructField, bool) {
	for f := range t.Fields() {
		if yamlKey(f) == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func keyPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// label names a place for a message: the path, or "top level".
func placeName(path string) string {
	if path == "" {
		return "top level"
	}
	return path
}

func inPlace(path string) string {
	if path == "" {
		return "at top level"
	}
	return "in " + path
}

func isYAMLNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func describeYAML(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	case yaml.AliasNode:
		return "an alias"
	}
	return "a document"
}

func wantedKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "a string"
	}
	return "a " + t.String()
}

func exampleValue(path string) string {
	if path == "etcd.endpoints" {
		return "http://127.0.0.1:2379"
	}
	return "..."
}

// suggest returns the name in names closest to key, if it is close enough
// to be a typo (at most two edits, or a difference of case).
func suggestKey(key string, names []string) string {
	best, bestD := "", 3
	for _, n := range names {
		if strings.EqualFold(n, key) {
			return n
		}
		if d := editDistance(key, n); d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 99
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// Validate checks the values LoadConfig cannot check alone: the timing rules
// of README "Configuration" (timing), then everything else. It returns nil or one error
// of one line, "config: " and every problem, separated by "; ", each naming
// the YAML field and its value, e.g.
//
//	config: session.renew_interval 4s must be at most session.ttl/3 (10s/3 = 3.333s)
func (c Config) Validate() error {
	var probs []string
	add := func(format string, args ...any) {
		probs = append(probs, fmt.Sprintf(format, args...))
	}

	ttl := time.Duration(c.Session.TTL)
	renew := time.Duration(c.Session.RenewInterval)
	margin := time.Duration(c.Fence.Margin)

	if ttl < 3*time.Second || ttl%time.Second != 0 {
		add("session.ttl %s must be whole seconds and at least 3s", ttl)
	}
	renewOK := renew > 0 && renew <= ttl/3
	switch {
	case renew <= 0:
		add("session.renew_interval %s must be more than 0", renew)
	case !renewOK:
		add("session.renew_interval %s must be at most session.ttl/3 (%s/3 = %s)",
			renew, ttl, max(ttl/3, 0).Round(time.Millisecond))
	}
	if margin < 2*time.Second {
		add("fence.margin %s must be at least 2s (more than etcd's election timeout)", margin)
	}
	// Only with a valid renew_interval: 2×renew and ttl−2×renew cannot
	// overflow then, and the rule above already names the cause.
	if renewOK {
		if margin < 2*renew {
			add("fence.margin %s must be at least 2 x session.renew_interval (2 x %s = %s)", margin, renew, 2*renew)
		}
		if limit := ttl - 2*renew; margin > limit {
			add("fence.margin %s must be at most session.ttl - 2 x session.renew_interval (%s - 2 x %s = %s)",
				margin, ttl, renew, limit)
		}
	}

	if t := time.Duration(c.Hook.Timeout); t <= 0 || t > time.Minute {
		add("hook.timeout %s must be more than 0 and at most 60s", t)
	}
	if t := time.Duration(c.Etcd.DialTimeout); t <= 0 {
		add("etcd.dial_timeout %s must be more than 0", t)
	}

	if len(c.Etcd.Endpoints) == 0 {
		add("etcd.endpoints is empty: name at least one, e.g. [http://127.0.0.1:2379]")
	}
	for i, e := range c.Etcd.Endpoints {
		if err := checkEndpoint(e); err != nil {
			add("etcd.endpoints[%d] %q %v", i, e, err)
		}
	}
	// etcd's client dials every endpoint with the credentials the first
	// one's scheme asks for, so a mixed list would fail on some endpoints.
	for i, e := range c.Etcd.Endpoints {
		if i > 0 && endpointTLS(e) != endpointTLS(c.Etcd.Endpoints[0]) {
			add("etcd.endpoints[%d] %q: every endpoint must use TLS (https://, unixs://) or none (http://, unix://), like etcd.endpoints[0] %q", i, e, c.Etcd.Endpoints[0])
			break
		}
	}
	if (c.Etcd.Cert == "") != (c.Etcd.Key == "") {
		add("etcd.cert %q and etcd.key %q: set both or neither", c.Etcd.Cert, c.Etcd.Key)
	}
	if c.Etcd.PasswordFile != "" && c.Etcd.Username == "" {
		add("etcd.password_file %q needs etcd.username", c.Etcd.PasswordFile)
	}

	if !strings.HasPrefix(c.Prefix, "/") || strings.Trim(c.Prefix, "/") == "" {
		add("prefix %q must start with / and name a key below it, e.g. /virtlease", c.Prefix)
	}
	if c.Host == "" {
		add("host is empty")
	} else if strings.ContainsFunc(c.Host, func(r rune) bool {
		return r == '/' || unicode.IsSpace(r) || unicode.IsControl(r)
	}) {
		add("host %q must not contain /, spaces or control characters", c.Host)
	}

	if c.Fence.HardwareWatchdog != "" && !filepath.IsAbs(c.Fence.HardwareWatchdog) {
		add("fence.hardware_watchdog %q must be an absolute path such as /dev/watchdog", c.Fence.HardwareWatchdog)
	}
	if c.Libvirt.URI == "" {
		add("libvirt.uri is empty (default qemu:///system)")
	}
	if l := c.Metrics.Listen; l != "" {
		if _, port, err := net.SplitHostPort(l); err != nil || !validPort(port) {
			add("metrics.listen %q must be HOST:PORT, e.g. 127.0.0.1:9479", l)
		}
	}
	switch c.HA.OnShutdown {
	case "migrate", "failover", "stop":
	default:
		add("ha.on_shutdown %q must be migrate, failover or stop", c.HA.OnShutdown)
	}
	if c.HA.MaxRestarts < 1 {
		add("ha.max_restarts %d must be at least 1", c.HA.MaxRestarts)
	}
	if !strings.Contains(c.HA.MigrateURI, "{host}") {
		add("ha.migrate_uri %q must name the destination as {host}, e.g. qemu+ssh://{host}/system", c.HA.MigrateURI)
	}

	if len(probs) == 0 {
		return nil
	}
	return errors.New("config: " + singleLine(strings.Join(probs, "; ")))
}

// checkEndpoint accepts what etcdctl accepts: http://HOST:PORT and
// https://HOST:PORT (https with no cacert trusts the system roots), and
// unix://PATH or unixs://PATH for a local socket (a PATH without a leading
// / is relative to the working directory, as in etcd's client; write
// unix:///run/etcd.sock for an absolute one).
func checkEndpoint(e string) error {
	const want = "must be http://HOST:PORT, https://HOST:PORT, unix://PATH or unixs://PATH"
	for _, scheme := range []string{"unix://", "unixs://"} {
		// Not a URL: etcd takes everything after the scheme as the path
		// (its test clusters use unix://localhost:NAME).
		if path, ok := strings.CutPrefix(e, scheme); ok {
			if path == "" || path == "/" || strings.ContainsFunc(path, unicode.IsControl) {
				return errors.New(want)
			}
			return nil
		}
	}
	u, err := url.Parse(e)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return errors.New(want)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil || host == "" || !validPort(port) {
		return errors.New(want)
	}
	return nil
}

// endpointTLS reports whether an endpoint's scheme asks for TLS.
func endpointTLS(e string) bool {
	return strings.HasPrefix(e, "https://") || strings.HasPrefix(e, "unixs://")
}

func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n >= 1 && n <= 65535
}

// Password returns the etcd password: the contents of etcd.password_file
// without its trailing newline, or "" if no file is configured. The error
// names the file; an empty file is an error too.
func (c Config) Password() (string, error) {
	f := c.Etcd.PasswordFile
	if f == "" {
		return "", nil
	}
	data, err := os.ReadFile(f)
	if err != nil {
		return "", fmt.Errorf("etcd.password_file %s: cannot read: %v", f, unwrapPathError(err))
	}
	p := strings.TrimRight(string(data), "\r\n")
	if p == "" {
		return "", fmt.Errorf("etcd.password_file %s is empty", f)
	}
	return p, nil
}
