package config

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Defaults, documented in docs/configuration.md. Where HAProxy's defaults
// hurt an API-server endpoint we differ: idle timeouts are long because
// kubectl watches, logs -f and talosctl streams sit idle for minutes.
const (
	DefaultConnectTimeout = 2 * time.Second
	DefaultIdleTimeout    = 10 * time.Minute
	DefaultDrain          = 30 * time.Second
	DefaultMaxConn        = 10000
	DefaultRetries        = 2
	DefaultInterval       = 2 * time.Second
	DefaultCheckTimeout   = 1 * time.Second
	DefaultFall           = 3
	DefaultRise           = 2
	DefaultJitter         = 0.1
	DefaultGossipPort     = 7946
	DefaultPriority       = 100
	DefaultPreemptDelay   = 10 * time.Second
	DefaultJoinTimeout    = 3 * time.Second
	DefaultGARPCount      = 3
	DefaultGARPInterval   = 250 * time.Millisecond
	DefaultGARPRefresh    = 10 * time.Second
	DefaultVIPLifetime    = 2 * time.Second
	DefaultAdminSocket    = "/run/halb/admin.sock"

	// MaxDuration bounds every interval, timeout and delay: a longer one
	// is a typo (100 years in hours), and arithmetic on it could overflow.
	MaxDuration = 24 * time.Hour
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

type validator struct {
	lines map[string]int
	errs  Errors

	// badBackendName: a backend's name was refused, so a frontend's
	// reference that finds no backend is most likely a follow-up.
	badBackendName bool
}

func (v *validator) sorted() Errors { return sortErrors(v.errs) }

// fail records an error at path, taking the line of the nearest known
// ancestor when the field itself is absent from the file.
func (v *validator) fail(path string, format string, args ...any) {
	for i, a := range args {
		if s, ok := a.(string); ok {
			args[i] = clip(s)
		}
	}
	line := 0
	for p := path; p != ""; p = parent(p) {
		if l, ok := v.lines[p]; ok {
			line = l
			break
		}
	}
	v.errs = append(v.errs, &FieldError{Path: path, Line: line, Err: fmt.Errorf(format, args...)})
}

func parent(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i < 0 {
		return ""
	}
	return p[:i]
}

func (v *validator) duration(path, s string, def time.Duration, min time.Duration) time.Duration {
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		v.fail(path, "%q is not a duration (use e.g. 500ms, 2s, 10m)", s)
		return def
	}
	if d < min {
		v.fail(path, "%s is too short: at least %s", d, min)
	}
	if d > MaxDuration {
		v.fail(path, "%s is too long: at most %s", d, MaxDuration)
	}
	return d
}

// name checks one name and says whether it passed.
func (v *validator) name(path, s, what string) bool {
	switch {
	case s == "":
		v.fail(path, "%s name is required", what)
	case !nameRE.MatchString(s):
		v.fail(path, "%q: use letters, digits, '_', '.', '-' (at most 63, starting with a letter or digit)", s)
	default:
		return true
	}
	return false
}

func intOr(p *int, def int) int {
	if p == nil {
		return def
	}
	return *p
}

func boolOr(p *bool, def bool) bool {
	if p == nil {
		return def
	}
	return *p
}

func (v *validator) config(raw *rawConfig) *Config {
	cfg := &Config{
		Log:     v.log(raw.Log),
		MaxConn: intOr(raw.MaxConn, DefaultMaxConn),
		Admin:   Admin{Socket: DefaultAdminSocket, StateFile: DefaultStateFile},
	}
	if cfg.MaxConn < 0 {
		v.fail("maxconn", "%d: must be 0 (unlimited) or more", cfg.MaxConn)
	}
	rt := raw.Timeouts
	if rt == nil {
		rt = &rawTimeouts{}
	}
	cfg.Timeouts = Timeouts{
		Connect:    v.duration("timeouts.connect", rt.Connect, DefaultConnectTimeout, time.Millisecond),
		ClientIdle: v.duration("timeouts.client_idle", rt.ClientIdle, DefaultIdleTimeout, time.Second),
		ServerIdle: v.duration("timeouts.server_idle", rt.ServerIdle, DefaultIdleTimeout, time.Second),
		Drain:      v.duration("timeouts.drain", rt.Drain, DefaultDrain, 0),
		KeepAlive:  v.tcpKeepAlive(rt.KeepAlive),
	}
	if raw.Admin != nil {
		if raw.Admin.Socket != "" {
			cfg.Admin.Socket = raw.Admin.Socket
		}
		cfg.Admin.Group = raw.Admin.Group
		if raw.Admin.StateFile != "" {
			cfg.Admin.StateFile = raw.Admin.StateFile
		}
	}
	cfg.Hooks = v.hooks(raw.Hooks)

	cfg.Backends = v.backends(raw.Backends)
	cfg.Frontends = v.frontends(raw.Frontends, cfg)
	if raw.Cluster != nil {
		cfg.Cluster = v.cluster(raw.Cluster)
	}
	if raw.BGP != nil {
		cfg.BGP = v.bgp(raw.BGP, cfg.Cluster)
	}
	cfg.VIPs = v.vips(raw.VIPs, cfg.Cluster)
	v.announce(raw.VIPs, cfg)
	v.tickles(raw.VIPs, cfg.VIPs)
	if raw.Stats != nil {
		cfg.Stats = v.stats(raw.Stats)
	}
	v.listeners(cfg)
	return cfg
}

// DefaultStatsRefresh is the dashboard's default auto-refresh period.
const DefaultStatsRefresh = 5 * time.Second

func (v *validator) stats(r *rawStats) *Stats {
	st := &Stats{
		PasswordFile: r.PasswordFile,
		Refresh:      v.duration("stats.refresh", r.Refresh, DefaultStatsRefresh, time.Second),
	}
	st.Bind = v.bind("stats.bind", r.Bind, "192.168.66.160:9600")
	if r.MetricsBind != "" {
		st.MetricsBind = v.bind("stats.metrics_bind", r.MetricsBind, "127.0.0.1:9601")
	}
	if len(r.Users) == 0 && r.PasswordFile == "" {
		v.fail("stats.users", "the stats page needs users (name and bcrypt password_hash; make one with `halb passwd`) or a password_file")
	}
	users := map[string]int{}
	for i, u := range r.Users {
		p := fmt.Sprintf("stats.users[%d]", i)
		if v.name(p+".name", u.Name, "user") {
			if first, dup := users[u.Name]; dup {
				v.fail(p+".name", "%q is also stats.users[%d]: each user is listed once", u.Name, first)
			} else {
				users[u.Name] = i
			}
		}
		// The stats page refuses what bcrypt cannot read, so check does too.
		if _, err := bcrypt.Cost([]byte(u.PasswordHash)); err != nil {
			// Never echo the value: it may be a plaintext password.
			v.fail(p+".password_hash", "not a bcrypt hash (60 characters starting with $2a$, $2b$ or $2y$); plaintext passwords are refused — make a hash with `halb passwd`")
		}
		st.Users = append(st.Users, StatUser(u))
	}
	for i, a := range r.Allow {
		pfx, err := parsePrefix(a)
		if err != nil {
			v.fail(fmt.Sprintf("stats.allow[%d]", i), "%q is not a network (e.g. 172.16.25.0/24)", a)
			continue
		}
		st.Allow = append(st.Allow, pfx.Masked())
	}
	st.TLS = v.statsTLS(r.TLS)
	return st
}

// statsTLS checks that the stats listener's certificate and key come as a
// pair; whether they load and match is checked where the files are read.
func (v *validator) statsTLS(r *rawStatsTLS) *StatsTLS {
	if r == nil {
		return nil
	}
	if r.CertFile == "" || r.KeyFile == "" {
		v.fail("stats.tls", "cert_file and key_file go together: give both PEM files, or drop stats.tls to serve plain HTTP")
	}
	return &StatsTLS{CertFile: r.CertFile, KeyFile: r.KeyFile}
}

func (v *validator) log(raw *rawLog) Log {
	l := Log{Format: "text", Level: "info", Connections: true}
	if raw == nil {
		return l
	}
	if raw.Format != "" {
		l.Format = raw.Format
	}
	if raw.Level != "" {
		l.Level = raw.Level
	}
	l.Connections = boolOr(raw.Connections, true)
	if l.Format != "text" && l.Format != "json" {
		v.fail("log.format", "%q: want text or json", l.Format)
	}
	if err := CheckLogLevel(l.Level); err != nil {
		v.fail("log.level", "%v", err)
	}
	return l
}

// CheckLogLevel reports why level is not one of halb's log levels, or nil.
// The --log-level flag uses it too, so a typo there is not silently info.
func CheckLogLevel(level string) error {
	switch level {
	case "debug", "info", "warn", "error":
		return nil
	}
	return fmt.Errorf("%q: want debug, info, warn or error", clip(level))
}

func (v *validator) frontends(raws []rawFrontend, cfg *Config) []Frontend {
	if len(raws) == 0 {
		v.fail("frontends", "at least one frontend is needed")
	}
	names := map[string]bool{}
	var out []Frontend
	for i, r := range raws {
		p := fmt.Sprintf("frontends[%d]", i)
		v.name(p+".name", r.Name, "frontend")
		if names[r.Name] && r.Name != "" {
			v.fail(p+".name", "%q is used by another frontend", r.Name)
		}
		names[r.Name] = true
		f := Frontend{Name: r.Name, Backend: r.Backend, MaxConn: intOr(r.MaxConn, 0)}
		if r.Bind == "" {
			v.fail(p+".bind", "bind address is required (e.g. 192.168.66.160:6443)")
		} else {
			f.Bind = v.bind(p+".bind", r.Bind, "192.168.66.160:6443 or [::1]:6443")
		}
		if f.MaxConn < 0 {
			v.fail(p+".maxconn", "%d: must be 0 (only the global limit) or more", f.MaxConn)
		}
		if r.Backend == "" {
			v.fail(p+".backend", "backend is required")
		} else if _, ok := cfg.Backend(r.Backend); !ok && !v.badBackendName {
			v.fail(p+".backend", "no backend named %q", r.Backend)
		}
		out = append(out, f)
	}
	return out
}

func (v *validator) backends(raws []rawBackend) []Backend {
	if len(raws) == 0 {
		v.fail("backends", "at least one backend is needed")
	}
	names := map[string]bool{}
	var out []Backend
	for i, r := range raws {
		p := fmt.Sprintf("backends[%d]", i)
		if !v.name(p+".name", r.Name, "backend") {
			v.badBackendName = true
		}
		if names[r.Name] && r.Name != "" {
			v.fail(p+".name", "%q is used by another backend", r.Name)
		}
		names[r.Name] = true
		b := Backend{
			Name:         r.Name,
			Balance:      Balance(r.Balance),
			Retries:      intOr(r.Retries, DefaultRetries),
			CloseOnDown:  boolOr(r.CloseOnDown, true),
			PanicRouting: boolOr(r.Panic, true),
			Health:       v.health(p+".health", r.Health),
			PassiveFall:  v.passiveFall(p+".passive_fall", r.PassiveFall),
		}
		v.healthMore(p+".health", b.Health)
		choose(v, p+".balance", &b.Balance, RoundRobin, RoundRobin, LeastConn, Source)
		if b.Retries < 0 {
			v.fail(p+".retries", "%d: must be 0 or more", b.Retries)
		}
		if len(r.Servers) == 0 {
			v.fail(p+".servers", "at least one server is needed")
		}
		snames := map[string]bool{}
		for j, rs := range r.Servers {
			sp := fmt.Sprintf("%s.servers[%d]", p, j)
			v.name(sp+".name", rs.Name, "server")
			if snames[rs.Name] && rs.Name != "" {
				v.fail(sp+".name", "%q is used by another server of this backend", rs.Name)
			}
			snames[rs.Name] = true
			s := Server{Name: rs.Name, Weight: intOr(rs.Weight, 1), Backup: rs.Backup}
			if ap, err := netip.ParseAddrPort(rs.Address); err != nil {
				v.fail(sp+".address", "%q is not IP:PORT (e.g. 192.168.66.161:6443); host names are not resolved, so a DNS outage cannot take the endpoint down", rs.Address)
			} else if ap.Port() == 0 {
				v.fail(sp+".address", "%q: port must be 1-65535", rs.Address)
			} else if err := CheckHostAddress(ap.Addr()); err != nil {
				v.fail(sp+".address", "%s: %v: a server needs its own address", ap, err)
			} else {
				s.Address = ap
			}
			if s.Weight < 1 || s.Weight > 256 {
				v.fail(sp+".weight", "%d: want 1-256", s.Weight)
			}
			b.Servers = append(b.Servers, s)
		}
		out = append(out, b)
	}
	return out
}

func (v *validator) health(p string, r *rawHealth) HealthCheck {
	if r == nil {
		r = &rawHealth{}
	}
	before := len(v.errs)
	h := HealthCheck{
		Type:     CheckType(r.Type),
		Path:     r.Path,
		Interval: v.duration(p+".interval", r.Interval, DefaultInterval, 10*time.Millisecond),
		Timeout:  v.duration(p+".timeout", r.Timeout, DefaultCheckTimeout, time.Millisecond),
		Fall:     intOr(r.Fall, DefaultFall),
		Rise:     intOr(r.Rise, DefaultRise),
		Jitter:   DefaultJitter,
	}
	if r.Jitter != nil {
		h.Jitter = *r.Jitter
	}
	choose(v, p+".type", &h.Type, CheckTCP, CheckTCP, CheckTLS, CheckHTTP, CheckHTTPS)
	if h.Type == CheckHTTP || h.Type == CheckHTTPS {
		v.webCheck(p, r, &h)
	} else {
		if r.Path != "" {
			v.fail(p+".path", "only http and https checks use a path (type is %s)", h.Type)
		}
		if len(r.ExpectStatus) > 0 {
			v.fail(p+".expect_status", "only http and https checks expect a status (type is %s)", h.Type)
		}
	}
	// Compared only when both parsed: a refused interval falls back to its
	// default, and the comparison with it would be a follow-up error.
	if len(v.errs) == before && h.Timeout > h.Interval {
		v.fail(p+".timeout", "%s is longer than the interval %s: probes would overlap", h.Timeout, h.Interval)
	}
	if h.Fall < 1 {
		v.fail(p+".fall", "%d: at least 1", h.Fall)
	}
	if h.Rise < 1 {
		v.fail(p+".rise", "%d: at least 1", h.Rise)
	}
	if h.Jitter < 0 || h.Jitter > 1 {
		v.fail(p+".jitter", "%v: want a fraction of the interval between 0 and 1", h.Jitter)
	}
	if r.TLS != nil {
		h.TLS = v.checkTLS(p, *r.TLS, h.Type)
	}
	return h
}

// choose sets *val to def when it is empty and refuses a value that is
// none of allowed, listing them.
func choose[T ~string](v *validator, path string, val *T, def T, allowed ...T) {
	switch {
	case *val == "":
		*val = def
	case !slices.Contains(allowed, *val):
		names := make([]string, len(allowed))
		for i, a := range allowed {
			names[i] = string(a)
		}
		last := len(names) - 1
		v.fail(path, "%q: want %s or %s", string(*val), strings.Join(names[:last], ", "), names[last])
	}
}

// webCheck fills in the path and the statuses an http or https check
// expects, defaulting to GET /healthz answered with 200.
func (v *validator) webCheck(p string, r *rawHealth, h *HealthCheck) {
	if h.Path == "" {
		h.Path = "/healthz"
	}
	if !strings.HasPrefix(h.Path, "/") {
		v.fail(p+".path", "%q must start with /", h.Path)
	}
	h.ExpectStatus = r.ExpectStatus
	if len(h.ExpectStatus) == 0 {
		h.ExpectStatus = []int{200}
	}
	for i, s := range h.ExpectStatus {
		if s < 100 || s > 599 {
			v.fail(fmt.Sprintf("%s.expect_status[%d]", p, i), "%d is not an HTTP status", s)
		}
	}
}

// checkTLS validates the TLS options of a check of type typ: only tls and
// https checks use them, and they give at most one client certificate.
func (v *validator) checkTLS(p string, r rawTLS, typ CheckType) TLSOptions {
	if typ != CheckTLS && typ != CheckHTTPS {
		v.fail(p+".tls", "only tls and https checks use TLS options (type is %s)", typ)
	}
	o := TLSOptions(r)
	if (o.CertFile == "") != (o.KeyFile == "") {
		v.fail(p+".tls", "cert_file and key_file go together")
	}
	var sources []string
	for _, s := range []struct{ name, file string }{
		{"talosconfig", o.Talosconfig}, {"kubeconfig", o.Kubeconfig}, {"cert_file", o.CertFile},
	} {
		if s.file != "" {
			sources = append(sources, s.name)
		}
	}
	if len(sources) > 1 {
		v.fail(p+".tls", "%s are mutually exclusive: give the check one client certificate (a talosconfig for the Talos API, a kubeconfig for the Kubernetes API)", strings.Join(sources, " and "))
	}
	if o.Context != "" && o.Talosconfig == "" && o.Kubeconfig == "" {
		v.fail(p+".tls.context", "%q names a context of a talosconfig or kubeconfig: set health.tls.talosconfig or health.tls.kubeconfig", o.Context)
	}
	return o
}

func (v *validator) cluster(r *rawCluster) *Cluster {
	c := &Cluster{
		Port:           intOr(r.Port, DefaultGossipPort),
		KeyFile:        r.KeyFile,
		KeyringFile:    r.KeyringFile,
		InsecureGossip: r.InsecureGossip,
		Profile:        r.Profile,
		Policy:         Policy(r.Policy),
		PreemptDelay:   v.duration("cluster.preempt_delay", r.PreemptDelay, DefaultPreemptDelay, 0),
		Quorum:         r.Quorum,
		JoinTimeout:    v.duration("cluster.join_timeout", r.JoinTimeout, DefaultJoinTimeout, 0),
		Eligibility:    r.Eligibility,
	}
	if c.Port < 1 || c.Port > 65535 {
		v.fail("cluster.port", "%d: want 1-65535", c.Port)
	}
	v.gossipKeys(c)
	choose(v, "cluster.profile", &c.Profile, "lan", "lan", "fast")
	choose(v, "cluster.policy", &c.Policy, Preempt, Preempt, Sticky)
	choose(v, "cluster.eligibility", &c.Eligibility, "all_frontends", "all_frontends", "any_frontend")
	if r.Witness != "" {
		a, err := netip.ParseAddr(r.Witness)
		if err != nil {
			v.fail("cluster.witness", "%q is not an IP address", r.Witness)
		} else if err := CheckHostAddress(a); err != nil {
			v.fail("cluster.witness", "%s: %v: the witness is one host that answers ping", a, err)
		}
		c.Witness = a
	}
	c.Nodes = v.nodes(r.Nodes)
	if c.Quorum && len(c.Nodes) < 3 {
		v.fail("cluster.quorum", "needs at least 3 nodes: with %d a single failure loses the majority; use a witness for a pair", len(c.Nodes))
	}
	return c
}

// gossipKeys checks that gossip is either encrypted with a key file or
// insecure by choice, and that the keyring has a file of its own.
func (v *validator) gossipKeys(c *Cluster) {
	switch {
	case c.KeyFile == "" && !c.InsecureGossip:
		v.fail("cluster.key_file", "gossip must be encrypted: create a key with `halb keygen --out /etc/halb/gossip.key` and set key_file, or set insecure_gossip: true for a lab")
	case c.KeyFile != "" && c.InsecureGossip:
		v.fail("cluster.insecure_gossip", "key_file is set too: choose one")
	}
	switch {
	case c.KeyringFile != "" && c.InsecureGossip:
		v.fail("cluster.keyring_file", "gossip is insecure: there are no keys to keep")
	case c.KeyringFile != "" && c.KeyringFile == c.KeyFile:
		v.fail("cluster.keyring_file", "is key_file: halb rewrites the keyring, so give it its own file (e.g. /var/lib/halb/gossip.keyring)")
	}
}

// nodes validates cluster.nodes: at least one, names and addresses unique.
func (v *validator) nodes(raws []rawNode) []Node {
	if len(raws) == 0 {
		v.fail("cluster.nodes", "list every LB node (name and address); a single node is a valid cluster")
	}
	names := map[string]bool{}
	addrs := map[netip.Addr]string{}
	var out []Node
	for i, rn := range raws {
		p := fmt.Sprintf("cluster.nodes[%d]", i)
		v.name(p+".name", rn.Name, "node")
		if names[rn.Name] && rn.Name != "" {
			v.fail(p+".name", "%q is listed twice: node names must be unique (a duplicate's leave would mark the real node gone)", rn.Name)
		}
		names[rn.Name] = true
		n := Node{Name: rn.Name, Priority: intOr(rn.Priority, DefaultPriority), Interface: rn.Interface}
		if err := CheckInterface(rn.Interface); err != nil {
			v.fail(p+".interface", "%v", err)
		}
		n.Address = v.nodeAddress(p+".address", rn.Address)
		if n.Address.IsValid() {
			if other, dup := addrs[n.Address]; dup {
				v.fail(p+".address", "%s is also node %q's address", n.Address, other)
			}
			addrs[n.Address] = rn.Name
		}
		if n.Priority < 0 || n.Priority > 1000 {
			v.fail(p+".priority", "%d: want 0-1000", n.Priority)
		}
		out = append(out, n)
	}
	return out
}

// nodeAddress parses a node's gossip address; the zero Addr if it is not
// one.
func (v *validator) nodeAddress(path, s string) netip.Addr {
	a, err := netip.ParseAddr(s)
	if err != nil {
		v.fail(path, "%q is not an IP address (the address gossip binds to on that node)", s)
		return netip.Addr{}
	}
	if err := CheckHostAddress(a); err != nil {
		v.fail(path, "%s: %v: gossip binds to and advertises the node's own address", a, err)
		return netip.Addr{}
	}
	return a
}

func (v *validator) vips(raws []rawVIP, c *Cluster) []VIP {
	if len(raws) > 0 && c == nil {
		v.fail("vips", "a VIP needs a cluster section to elect its holder (a single node is a valid cluster)")
	}
	seen := map[netip.Addr]bool{}
	var out []VIP
	for i, r := range raws {
		p := fmt.Sprintf("vips[%d]", i)
		vip := VIP{
			Interface:    r.Interface,
			GARPCount:    intOr(r.GARPCount, DefaultGARPCount),
			GARPInterval: v.duration(p+".garp_interval", r.GARPInterval, DefaultGARPInterval, time.Millisecond),
			GARPRefresh:  v.duration(p+".garp_refresh", r.GARPRefresh, DefaultGARPRefresh, 0),
			Lifetime:     v.duration(p+".lifetime", r.Lifetime, DefaultVIPLifetime, time.Second),
		}
		pfx, err := parsePrefix(r.Address)
		if err != nil {
			v.fail(p+".address", "%q is not an address with an optional prefix length (e.g. 192.168.66.160/24)", r.Address)
		} else if err := CheckHostAddress(pfx.Addr()); err != nil {
			v.fail(p+".address", "%s: %v: a VIP is one host's address", pfx.Addr(), err)
		} else {
			vip.Address = pfx
			if seen[pfx.Addr()] {
				v.fail(p+".address", "%s is listed twice", pfx.Addr())
			}
			seen[pfx.Addr()] = true
		}
		if vip.Interface == "" && c != nil && r.Announce != string(AnnounceBGP) {
			for _, n := range c.Nodes {
				if n.Interface == "" {
					v.fail(p+".interface", "interface is required (or set interface on every node; node %q has none)", n.Name)
					break
				}
			}
		}
		if err := CheckInterface(vip.Interface); err != nil {
			v.fail(p+".interface", "%v", err)
		}
		if vip.GARPCount < 1 {
			v.fail(p+".garp_count", "%d: at least 1", vip.GARPCount)
		}
		out = append(out, vip)
	}
	return out
}

func parsePrefix(s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, errors.New("empty")
	}
	if strings.Contains(s, "/") {
		return netip.ParsePrefix(s)
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// CheckInterface reports why name cannot be a Linux interface name, or nil;
// "" (unset) passes. The rules are the kernel's (dev_valid_name): fewer
// than 16 bytes, not "." or "..", no '/', ':' or white space; control
// characters are refused too, as no tool can show such a name. The
// importers use it as well, so what they accept, Parse accepts.
func CheckInterface(name string) error {
	switch {
	case name == "":
		return nil
	case len(name) > 15:
		return fmt.Errorf("%q: Linux interface names have at most 15 characters", clip(name))
	case name == "." || name == "..":
		return fmt.Errorf("%q is not an interface name", name)
	}
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c == '/' || c == ':':
			return fmt.Errorf("%q: Linux interface names cannot contain %q", name, c)
		case c <= ' ' || c == 0x7f || c == 0xa0: // the kernel's isspace includes 0xa0
			return fmt.Errorf("%q: Linux interface names cannot contain white space or control characters", name)
		}
	}
	return nil
}

// CheckHostAddress reports why a cannot be one host's address (a server,
// node, witness or VIP), or nil. The importers use it too.
func CheckHostAddress(a netip.Addr) error { return unicast(a, true) }

// unicast reports why a cannot be one host's address, or nil. Unspecified
// (0.0.0.0, ::) is refused only when unspecifiedBad: a listener may bind
// it, a peer or server cannot be it.
func unicast(a netip.Addr, unspecifiedBad bool) error {
	a = a.Unmap()
	switch {
	case a.IsUnspecified() && unspecifiedBad:
		return errors.New("is the unspecified address")
	case a.IsMulticast():
		return errors.New("is a multicast address")
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return errors.New("is the broadcast address")
	}
	return nil
}

// bind parses a listener address: ADDRESS:PORT with a port and an address
// a TCP socket can listen on. example shows the right form.
func (v *validator) bind(path, s, example string) netip.AddrPort {
	ap, err := netip.ParseAddrPort(s)
	switch {
	case err != nil:
		v.fail(path, "%q is not ADDRESS:PORT (e.g. %s)", s, example)
	case ap.Port() == 0:
		v.fail(path, "%q: port must be 1-65535", s)
	default:
		if err := unicast(ap.Addr(), false); err != nil {
			v.fail(path, "%s: %v: TCP cannot listen on it", ap, err)
			return netip.AddrPort{}
		}
		return ap
	}
	return netip.AddrPort{}
}

// healthMore checks what health leaves open: a path the HTTP client
// would refuse at start, and a jitter that is not a number.
func (v *validator) healthMore(p string, h HealthCheck) {
	if math.IsNaN(h.Jitter) || math.IsInf(h.Jitter, 0) {
		v.fail(p+".jitter", "%v: want a fraction of the interval between 0 and 1", h.Jitter)
	}
	if (h.Type == CheckHTTP || h.Type == CheckHTTPS) && strings.HasPrefix(h.Path, "/") {
		if err := checkHTTPPath(h.Path); err != nil {
			v.fail(p+".path", "%q: %v", h.Path, err)
		}
	}
}

// checkHTTPPath applies the rules the health checker's URL parser applies
// when halb starts, so that check refuses what run would.
func checkHTTPPath(path string) error {
	u, err := url.Parse(path)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error repeats the whole path
		}
		return fmt.Errorf("not a URL path: %w", err)
	}
	if u.Host != "" || u.Scheme != "" {
		return errors.New("a path starting with // names a host; write one slash (e.g. /healthz)")
	}
	return nil
}

// listener is one TCP (or TCP and UDP) port halb binds.
type listener struct {
	path, what string
	at         netip.AddrPort
}

// listeners refuses two listeners that the kernel would not let bind
// together: the same address and port, written the same way or not
// ([::ffff:10.0.0.1]:80 is 10.0.0.1:80), or a wildcard address beside
// another address on the same port (Linux refuses it while one listens).
func (v *validator) listeners(cfg *Config) {
	var ls []listener
	for i, f := range cfg.Frontends {
		ls = append(ls, listener{fmt.Sprintf("frontends[%d].bind", i), fmt.Sprintf("frontend %q", f.Name), f.Bind})
	}
	if st := cfg.Stats; st != nil {
		ls = append(ls, listener{"stats.bind", "stats.bind", st.Bind}, listener{"stats.metrics_bind", "stats.metrics_bind", st.MetricsBind})
	}
	if c := cfg.Cluster; c != nil {
		for i, n := range c.Nodes {
			if n.Address.IsValid() && c.Port > 0 && c.Port <= 65535 {
				ls = append(ls, listener{fmt.Sprintf("cluster.nodes[%d].address", i), fmt.Sprintf("gossip of node %q", n.Name), netip.AddrPortFrom(n.Address, uint16(c.Port))})
			}
		}
	}
	byPort := map[uint16][]listener{}
	for _, l := range ls {
		if !l.at.IsValid() {
			continue // refused already, or not configured
		}
		for _, other := range byPort[l.at.Port()] {
			if BindsOverlap(l.at.Addr(), other.at.Addr()) {
				v.fail(l.path, "%s clashes with %s at %s: both cannot listen", l.at, other.what, other.at)
				break
			}
		}
		byPort[l.at.Port()] = append(byPort[l.at.Port()], l)
	}
}

// BindsOverlap reports whether listeners on a and b (same port) would
// clash: the same address, or a wildcard of the same family (an IPv6
// wildcard takes IPv4 too).
func BindsOverlap(a, b netip.Addr) bool {
	a, b = a.Unmap(), b.Unmap()
	switch {
	case a == b:
		return true
	case a.IsUnspecified() && a.Is6(), b.IsUnspecified() && b.Is6():
		return true
	case a.IsUnspecified() || b.IsUnspecified():
		return a.Is4() == b.Is4()
	}
	return false
}
