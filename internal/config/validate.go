package config

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"time"
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
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

type validator struct {
	lines map[string]int
	errs  Errors
}

func (v *validator) sorted() Errors { return sortErrors(v.errs) }

// fail records an error at path, taking the line of the nearest known
// ancestor when the field itself is absent from the file.
func (v *validator) fail(path string, format string, args ...any) {
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
	return d
}

func (v *validator) name(path, s, what string) {
	switch {
	case s == "":
		v.fail(path, "%s name is required", what)
	case !nameRE.MatchString(s):
		v.fail(path, "%q: use letters, digits, '_', '.', '-' (at most 63, starting with a letter or digit)", s)
	}
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
		Admin:   Admin{Socket: DefaultAdminSocket},
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
	}
	if raw.Admin != nil {
		if raw.Admin.Socket != "" {
			cfg.Admin.Socket = raw.Admin.Socket
		}
		cfg.Admin.Group = raw.Admin.Group
	}

	cfg.Backends = v.backends(raw.Backends)
	cfg.Frontends = v.frontends(raw.Frontends, cfg)
	if raw.Cluster != nil {
		cfg.Cluster = v.cluster(raw.Cluster)
	}
	cfg.VIPs = v.vips(raw.VIPs, cfg.Cluster)
	if raw.Stats != nil {
		cfg.Stats = v.stats(raw.Stats)
	}
	return cfg
}

// DefaultStatsRefresh is the dashboard's default auto-refresh period.
const DefaultStatsRefresh = 5 * time.Second

func (v *validator) stats(r *rawStats) *Stats {
	st := &Stats{
		PasswordFile: r.PasswordFile,
		Refresh:      v.duration("stats.refresh", r.Refresh, DefaultStatsRefresh, time.Second),
	}
	if ap, err := netip.ParseAddrPort(r.Bind); err != nil {
		v.fail("stats.bind", "%q is not ADDRESS:PORT (e.g. 192.168.66.160:9600)", r.Bind)
	} else {
		st.Bind = ap
	}
	if r.MetricsBind != "" {
		if ap, err := netip.ParseAddrPort(r.MetricsBind); err != nil {
			v.fail("stats.metrics_bind", "%q is not ADDRESS:PORT (e.g. 127.0.0.1:9601)", r.MetricsBind)
		} else {
			st.MetricsBind = ap
		}
	}
	if len(r.Users) == 0 && r.PasswordFile == "" {
		v.fail("stats.users", "the stats page needs users (name and bcrypt password_hash; make one with `halb passwd`) or a password_file")
	}
	for i, u := range r.Users {
		p := fmt.Sprintf("stats.users[%d]", i)
		v.name(p+".name", u.Name, "user")
		if !strings.HasPrefix(u.PasswordHash, "$2") {
			// Never echo the value: it may be a plaintext password.
			v.fail(p+".password_hash", "not a bcrypt hash (starts with $2a$, $2b$ or $2y$); plaintext passwords are refused — make a hash with `halb passwd`")
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
	return st
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
	switch l.Level {
	case "debug", "info", "warn", "error":
	default:
		v.fail("log.level", "%q: want debug, info, warn or error", l.Level)
	}
	return l
}

func (v *validator) frontends(raws []rawFrontend, cfg *Config) []Frontend {
	if len(raws) == 0 {
		v.fail("frontends", "at least one frontend is needed")
	}
	names := map[string]bool{}
	binds := map[netip.AddrPort]string{}
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
		} else if ap, err := netip.ParseAddrPort(r.Bind); err != nil {
			v.fail(p+".bind", "%q is not ADDRESS:PORT (e.g. 192.168.66.160:6443 or [::1]:6443)", r.Bind)
		} else if ap.Port() == 0 {
			v.fail(p+".bind", "%q: port must be 1-65535", r.Bind)
		} else {
			f.Bind = ap
			if other, dup := binds[ap]; dup {
				v.fail(p+".bind", "%s is already bound by frontend %q", ap, other)
			}
			binds[ap] = r.Name
		}
		if f.MaxConn < 0 {
			v.fail(p+".maxconn", "%d: must be 0 (only the global limit) or more", f.MaxConn)
		}
		if r.Backend == "" {
			v.fail(p+".backend", "backend is required")
		} else if _, ok := cfg.Backend(r.Backend); !ok {
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
		v.name(p+".name", r.Name, "backend")
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
		}
		switch b.Balance {
		case "":
			b.Balance = RoundRobin
		case RoundRobin, LeastConn, Source:
		default:
			v.fail(p+".balance", "%q: want roundrobin, leastconn or source", r.Balance)
		}
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
	switch h.Type {
	case "":
		h.Type = CheckTCP
	case CheckTCP, CheckTLS, CheckHTTP, CheckHTTPS:
	default:
		v.fail(p+".type", "%q: want tcp, tls, http or https", r.Type)
	}
	web := h.Type == CheckHTTP || h.Type == CheckHTTPS
	if web {
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
	} else {
		if r.Path != "" {
			v.fail(p+".path", "only http and https checks use a path (type is %s)", h.Type)
		}
		if len(r.ExpectStatus) > 0 {
			v.fail(p+".expect_status", "only http and https checks expect a status (type is %s)", h.Type)
		}
	}
	if h.Timeout > h.Interval {
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
		if h.Type != CheckTLS && h.Type != CheckHTTPS {
			v.fail(p+".tls", "only tls and https checks use TLS options (type is %s)", h.Type)
		}
		h.TLS = TLSOptions(*r.TLS)
		if (h.TLS.CertFile == "") != (h.TLS.KeyFile == "") {
			v.fail(p+".tls", "cert_file and key_file go together")
		}
		var sources []string
		for _, s := range []struct{ name, file string }{
			{"talosconfig", h.TLS.Talosconfig}, {"kubeconfig", h.TLS.Kubeconfig}, {"cert_file", h.TLS.CertFile},
		} {
			if s.file != "" {
				sources = append(sources, s.name)
			}
		}
		if len(sources) > 1 {
			v.fail(p+".tls", "%s are mutually exclusive: give the check one client certificate (a talosconfig for the Talos API, a kubeconfig for the Kubernetes API)", strings.Join(sources, " and "))
		}
		if h.TLS.Context != "" && h.TLS.Talosconfig == "" && h.TLS.Kubeconfig == "" {
			v.fail(p+".tls.context", "%q names a context of a talosconfig or kubeconfig: set health.tls.talosconfig or health.tls.kubeconfig", h.TLS.Context)
		}
	}
	return h
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
	switch c.Profile {
	case "":
		c.Profile = "lan"
	case "lan", "fast":
	default:
		v.fail("cluster.profile", "%q: want lan or fast", r.Profile)
	}
	switch c.Policy {
	case "":
		c.Policy = Preempt
	case Preempt, Sticky:
	default:
		v.fail("cluster.policy", "%q: want preempt or sticky", r.Policy)
	}
	switch c.Eligibility {
	case "":
		c.Eligibility = "all_frontends"
	case "all_frontends", "any_frontend":
	default:
		v.fail("cluster.eligibility", "%q: want all_frontends or any_frontend", r.Eligibility)
	}
	if r.Witness != "" {
		a, err := netip.ParseAddr(r.Witness)
		if err != nil {
			v.fail("cluster.witness", "%q is not an IP address", r.Witness)
		}
		c.Witness = a
	}
	if len(r.Nodes) == 0 {
		v.fail("cluster.nodes", "list every LB node (name and address); a single node is a valid cluster")
	}
	names := map[string]bool{}
	addrs := map[netip.Addr]string{}
	for i, rn := range r.Nodes {
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
		a, err := netip.ParseAddr(rn.Address)
		if err != nil {
			v.fail(p+".address", "%q is not an IP address (the address gossip binds to on that node)", rn.Address)
		} else {
			n.Address = a
			if other, dup := addrs[a]; dup {
				v.fail(p+".address", "%s is also node %q's address", a, other)
			}
			addrs[a] = rn.Name
		}
		if n.Priority < 0 || n.Priority > 1000 {
			v.fail(p+".priority", "%d: want 0-1000", n.Priority)
		}
		c.Nodes = append(c.Nodes, n)
	}
	if c.Quorum && len(c.Nodes) < 3 {
		v.fail("cluster.quorum", "needs at least 3 nodes: with %d a single failure loses the majority; use a witness for a pair", len(c.Nodes))
	}
	return c
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
		} else {
			vip.Address = pfx
			if seen[pfx.Addr()] {
				v.fail(p+".address", "%s is listed twice", pfx.Addr())
			}
			seen[pfx.Addr()] = true
		}
		if vip.Interface == "" && c != nil {
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
// "" (unset) passes. The importers use it too, so what they accept, Parse
// accepts.
func CheckInterface(name string) error {
	if len(name) > 15 {
		return fmt.Errorf("%q: Linux interface names have at most 15 characters", name)
	}
	return nil
}
