package haproxy

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"halb/internal/config"
)

// Options steer what Import adds beyond what haproxy.cfg says.
type Options struct {
	// Source names the input in the output's header comment, e.g. its path.
	Source string
	// VIPInterface is the interface that carries the VIP; "" means eth0.
	VIPInterface string
	// Nodes are the LB hosts. Without them the output has no cluster and
	// no VIP: halb would proxy but not manage the address.
	Nodes []Node
	// Keepalived, if set, supplies the VIPs' prefix lengths and
	// interfaces, the election policy and this host's priority.
	Keepalived *Keepalived
	// KeepalivedSource names the keepalived file in warnings.
	KeepalivedSource string
	// Env holds the environment variables HAProxy ran with, for the
	// defined() and $NAME of .if conditions. A name missing from it is
	// taken as undefined, with a warning: the importer cannot see the
	// environment of the LB hosts.
	Env map[string]string
}

// Result is an imported config.
type Result struct {
	YAML     []byte    // a halb config that config.Parse accepts
	Warnings []Warning // in line order; those without a line last
}

// Import translates an HAProxy configuration into a halb config. TCP-mode
// frontends and backends, health checks, timeouts and maxconn carry over;
// everything else is reported as a warning. The error is an Errors value
// when the input cannot be read or yields no usable config.
func Import(data []byte, opts Options) (*Result, error) {
	if opts.Source == "" {
		opts.Source = "haproxy.cfg"
	}
	if opts.KeepalivedSource == "" {
		opts.KeepalivedSource = "keepalived.conf"
	}
	secs, condWarns, errs, assumed := parseSections(data, opts.Env)
	imp := &importer{opts: opts, errs: errs, skipped: map[string]string{}, assumedUndefined: assumed}
	imp.warns = append(imp.warns, condWarns...)
	if opts.Keepalived != nil {
		for _, w := range opts.Keepalived.Warnings {
			w.File = opts.KeepalivedSource
			imp.warns = append(imp.warns, w)
		}
	}
	for _, s := range secs {
		imp.section(s)
	}
	var out outConfig
	if len(imp.errs) == 0 {
		out = imp.build()
	}
	if len(imp.errs) > 0 {
		slices.SortStableFunc(imp.errs, func(a, b *LineError) int { return cmp.Compare(a.Line, b.Line) })
		return nil, imp.errs
	}
	y, err := imp.render(&out)
	if err != nil {
		return nil, Errors{{Err: err}}
	}
	if _, err := config.Parse(y); err != nil && out.Stats != nil {
		// A stats page halb cannot serve (its address clashes with a
		// frontend's) must not cost the whole import.
		imp.changedFrom(imp.statsLine, "bind "+out.Stats.Bind, "HAProxy's stats page on "+out.Stats.Bind, "not imported", "halb refuses it: %s", strings.ReplaceAll(err.Error(), "\n", "; "))
		out.Stats, imp.stats = nil, nil
		if y, err = imp.render(&out); err != nil {
			return nil, Errors{{Err: err}}
		}
	}
	if _, err := config.Parse(y); err != nil {
		es := Errors{{Err: fmt.Errorf("the imported config does not validate: %w", err)}}
		return nil, es
	}
	// The HAProxy file's warnings first, then keepalived's, each in line
	// order; warnings about the whole file come last.
	key := func(w Warning) (int, int) {
		if w.Line == 0 {
			return 2, 0
		}
		if w.File != "" {
			return 1, w.Line
		}
		return 0, w.Line
	}
	slices.SortStableFunc(imp.warns, func(a, b Warning) int {
		fa, la := key(a)
		fb, lb := key(b)
		return cmp.Or(cmp.Compare(fa, fb), cmp.Compare(la, lb))
	})
	return &Result{YAML: y, Warnings: imp.warns}, nil
}

// Where the imported stats section expects its logins; `halb passwd`
// writes the lines.
const statsUsersFile = "/etc/halb/stats.users"

type importer struct {
	opts  Options
	warns []Warning
	errs  Errors

	globalMaxconn *int
	defaults      *proxy
	proxies       []*proxy          // carried frontend, backend and listen sections, in file order
	skipped       map[string]string // backend name → why it was not imported
	stats         *outStats         // the first stats page, imported
	statsLine     int               // its section's line
	statsUser     string            // HAProxy's stats auth user, for the header

	// credentials lists the check credential files the output refers to,
	// each with how to make it, for the output's header.
	credentials []string

	// assumedUndefined are environment variables .if conditions used that
	// Options.Env does not define; the output's header names them.
	assumedUndefined []string
}

// changed notes a difference in behaviour; now says what halb does.
func (imp *importer) changed(line int, directive, now, format string, args ...any) {
	imp.warns = append(imp.warns, Warning{Line: line, Directive: directive, Message: fmt.Sprintf(format, args...), Now: now})
}

// changedFrom is changed for a directive that does not say by itself
// what HAProxy did.
func (imp *importer) changedFrom(line int, directive, was, now, format string, args ...any) {
	imp.warns = append(imp.warns, Warning{Line: line, Directive: directive, Message: fmt.Sprintf(format, args...), Was: was, Now: now})
}

// confirm notes an assumption the operator should check.
func (imp *importer) confirm(line int, directive, format string, args ...any) {
	imp.warns = append(imp.warns, Warning{Line: line, Directive: directive, Message: fmt.Sprintf(format, args...), Effect: Confirm})
}

// dropped notes something left out that nobody will miss.
func (imp *importer) dropped(line int, directive, format string, args ...any) {
	imp.warns = append(imp.warns, Warning{Line: line, Directive: directive, Message: fmt.Sprintf(format, args...), Effect: Dropped})
}

func (imp *importer) fail(line int, format string, args ...any) {
	imp.errs = append(imp.errs, &LineError{Line: line, Err: fmt.Errorf(format, args...)})
}

func (imp *importer) section(s section) {
	switch s.kind {
	case "global":
		for _, d := range s.dirs {
			imp.global(d)
		}
	case "defaults":
		// Each defaults section replaces the previous one entirely.
		p := inherit(nil, "defaults", s.name, s.line)
		imp.run(p, s)
		imp.warns = append(imp.warns, p.warns...)
		imp.defaults = p
	case "frontend", "backend", "listen":
		p := inherit(imp.defaults, s.kind, s.name, s.line)
		imp.run(p, s)
		imp.finish(p)
	default:
		imp.changed(s.line, strings.TrimSpace(s.kind+" "+s.name), "", "section not carried over: halb has no equivalent")
	}
}

func (imp *importer) run(p *proxy, s section) {
	for _, d := range s.dirs {
		if err := p.directive(d); err != nil {
			imp.fail(d.line, "%v", err)
		}
	}
}

// globalWhy explains global directives that halb does not need.
var globalWhy = map[string]string{
	"log":           whyLog,
	"chroot":        "halb does not chroot itself; confine it with the systemd unit's sandboxing",
	"user":          "halb runs as the user its systemd unit names (it needs CAP_NET_ADMIN and CAP_NET_RAW for the VIP)",
	"group":         "halb runs as the group its systemd unit names",
	"uid":           "halb runs as the user its systemd unit names",
	"gid":           "halb runs as the group its systemd unit names",
	"daemon":        "halb runs in the foreground under systemd",
	"master-worker": "halb runs in the foreground under systemd",
	"pidfile":       "systemd tracks halb's process",
	"stats":         whyAdmin,
	"ca-base":       whyTLS,
	"crt-base":      whyTLS,
	"nbthread":      "halb uses every CPU (Go's scheduler)",
	"nbproc":        "halb uses every CPU (Go's scheduler)",
	"cpu-map":       "halb uses every CPU (Go's scheduler)",
}

func (imp *importer) global(d directive) {
	kw := d.args[0]
	if kw == "maxconn" {
		n, err := parseCount(argAt(d.args, 1))
		if err != nil {
			imp.fail(d.line, "maxconn: %v", err)
			return
		}
		imp.globalMaxconn = &n
		return
	}
	why, ok := globalWhy[kw]
	switch {
	case ok:
	case strings.HasPrefix(kw, "ssl-default-"), strings.HasPrefix(kw, "ssl-"):
		why = whyTLS
	default:
		// An unknown global setting may well matter (tune.*, hard-stop-after).
		imp.changed(d.line, directiveText(d.args), "", "%s", whyNone)
		return
	}
	imp.dropped(d.line, directiveText(d.args), "%s", why)
}

func argAt(a []string, i int) string {
	if i < len(a) {
		return a[i]
	}
	return ""
}

// finish decides what becomes of a frontend, backend or listen section.
func (imp *importer) finish(p *proxy) {
	head := p.kind + " " + p.name
	switch {
	case p.disabled:
		imp.dropped(p.line, head, "disabled in HAProxy; not imported")
		imp.skipped[p.name] = "it is disabled"
		return
	case p.mode == "http" && p.stats != nil:
		imp.statsPage(p)
		imp.skipped[p.name] = "it is a stats page"
		return
	case p.mode != "tcp":
		from := ""
		if p.modeLine < p.line {
			from = ", inherited from defaults"
		}
		imp.changedFrom(p.line, head, "served in mode "+p.mode, "not served", "mode %s (line %d%s): halb proxies TCP only; section not imported", p.mode, p.modeLine, from)
		imp.skipped[p.name] = "it is in mode " + p.mode
		return
	}
	if p.stats != nil {
		imp.dropped(p.line, head, "stats directives only work in mode http; HAProxy ignored them too")
	}
	imp.warns = append(imp.warns, p.warns...)
	imp.proxies = append(imp.proxies, p)
}

// statsPage turns HAProxy's stats page into halb's stats section: the
// same address and allow-list, logins from a password file the operator
// fills, since HAProxy's plaintext password is never carried over.
func (imp *importer) statsPage(p *proxy) {
	head := p.kind + " " + p.name
	if imp.stats != nil {
		imp.changedFrom(p.line, head, "another stats page", "not imported", "halb serves one stats page; the one at line %d was imported", imp.statsLine)
		return
	}
	if len(p.binds) == 0 {
		imp.dropped(p.line, head, "a stats page without a bind line, which HAProxy did not serve either: not imported")
		return
	}
	st := &outStats{Bind: p.binds[0].addr.String(), PasswordFile: statsUsersFile}
	for _, b := range p.binds[1:] {
		imp.changedFrom(b.line, "bind "+b.addr.String(), "the stats page on "+b.addr.String(), "only on "+st.Bind, "halb's stats page listens on one address")
	}
	imp.changedFrom(p.line, head, "HAProxy's stats page", "halb's dashboard, with /status.json and /metrics, on "+st.Bind, "imported as the stats section; its logins come from %s (see below)", statsUsersFile)
	st.TLS = imp.statsTLS(p.binds[0])
	if u := p.stats.uri; u != "" && u != "/" {
		imp.changedFrom(p.line, "stats uri "+u, "the page at "+u, "the dashboard at /", "halb's stats page has fixed paths")
	}
	if r := p.stats.refresh; r != "" {
		d, err := parseTime(r)
		switch {
		case err != nil || d < time.Second || d > config.MaxDuration:
			imp.changedFrom(p.line, "stats refresh "+r, "refresh "+r, formatDuration(config.DefaultStatsRefresh), "halb refreshes the dashboard every 1s to 24h")
		default:
			st.Refresh = formatDuration(d)
		}
	}
	for _, a := range p.allow {
		if _, err := netip.ParsePrefix(a); err != nil {
			if _, err := netip.ParseAddr(a); err != nil {
				imp.changedFrom(p.allowLine, "acl … src "+a, "connections from "+a+" allowed", "refused", "%q is not an address or network halb can read", a)
				continue
			}
		}
		st.Allow = append(st.Allow, a)
	}
	user := cmp.Or(p.stats.user, "admin")
	if p.stats.authLine > 0 {
		imp.changedFrom(p.stats.authLine, "stats auth "+p.stats.user+":<password not shown>", "user "+p.stats.user+" with a plaintext password", "the bcrypt logins in "+statsUsersFile, "the password was NOT carried over: create the file with `halb passwd --user %s --line >> %s` (until then nobody can log in)", user, statsUsersFile)
	} else {
		imp.changedFrom(p.line, head, "a page without a login", "the bcrypt logins in "+statsUsersFile, "halb's stats page always asks for a login: create the file with `halb passwd --user %s --line >> %s`", user, statsUsersFile)
	}
	imp.stats, imp.statsLine, imp.statsUser = st, p.line, user
}

// statsTLS carries a stats page's `bind … ssl crt FILE` over as stats.tls.
// HAProxy's crt is one PEM file holding the certificate (and its chain)
// and the private key; halb reads the certificate and the key each from
// the first PEM block of its kind, so the one file serves as both.
func (imp *importer) statsTLS(b bindAddr) *outStatsTLS {
	t := b.tls
	dir := "bind " + b.addr.String() + " ssl"
	switch {
	case !t.ssl:
		return nil
	case t.crtList != "":
		imp.changedFrom(b.line, dir+" crt-list "+t.crtList, "HTTPS with the certificates of a crt-list", "plain HTTP", "halb's stats page takes one certificate: set stats.tls.cert_file and key_file to the PEM files to serve")
		return nil
	case t.crt == "":
		imp.changedFrom(b.line, dir, "HTTPS", "plain HTTP", "no crt on the bind line: set stats.tls.cert_file and key_file to serve HTTPS")
		return nil
	}
	if t.crts > 1 {
		imp.changedFrom(b.line, dir+" crt …", fmt.Sprintf("HTTPS with %d certificates, picked by SNI", t.crts), "HTTPS with "+t.crt+" only", "halb's stats page serves one certificate: the first")
	}
	imp.confirm(b.line, dir+" crt "+t.crt, "imported as stats.tls with %[1]s as both cert_file and key_file, as HAProxy reads it: check that %[1]s is one file holding the certificate and its key (if HAProxy found the key in %[1]s.key, set key_file to that; a directory of certificates needs one file picked), and that user halb can read it (HAProxy read it as root)", t.crt)
	return &outStatsTLS{CertFile: t.crt, KeyFile: t.crt}
}

// build assembles the halb config from the carried sections.
func (imp *importer) build() outConfig {
	var out outConfig
	bprox := imp.buildBackends(&out)
	fprox, used, vips := imp.buildFrontends(&out, bprox)
	for _, p := range bprox {
		if !used[p.name] {
			imp.confirm(p.line, p.kind+" "+p.name, "no imported frontend uses this backend; it is imported anyway and its servers are health-checked")
		}
	}
	if len(out.Frontends) == 0 && len(imp.errs) == 0 {
		imp.fail(0, "nothing to import: no frontend in mode tcp with a bind line and a default_backend in mode tcp")
		return out
	}
	out.Timeouts = imp.timeouts(fprox, bprox)
	out.MaxConn = imp.globalMaxconn
	imp.cluster(&out, vips)
	if k := imp.opts.Keepalived; k != nil {
		for _, h := range k.Hooks {
			out.Hooks = append(out.Hooks, outHook{On: h.On, Command: h.Command, line: h.Line})
		}
	}
	out.Stats = imp.stats
	return out
}

// buildBackends adds the backends that can be imported and returns their
// sections. A listen section without servers is only a frontend.
func (imp *importer) buildBackends(out *outConfig) []*proxy {
	var bprox []*proxy
	for _, p := range imp.proxies {
		if !p.isBackend() || (p.kind == "listen" && len(p.servers) == 0) {
			continue
		}
		if b, ok := imp.backend(p); ok {
			out.Backends = append(out.Backends, b)
			bprox = append(bprox, p)
		}
	}
	return bprox
}

// buildFrontends adds a frontend per bind address of each frontend whose
// backend was imported. It returns their sections, the backends they use
// and the addresses they bind that can be VIPs, in file order.
func (imp *importer) buildFrontends(out *outConfig, bprox []*proxy) (fprox []*proxy, used map[string]bool, vips []netip.Addr) {
	carried := map[string]bool{}
	for _, p := range bprox {
		carried[p.name] = true
	}
	used = map[string]bool{}
	vipSeen := map[netip.Addr]bool{}
	for _, p := range imp.proxies {
		if !p.isFrontend() {
			continue
		}
		target, ok := imp.frontendTarget(p, carried)
		if !ok {
			continue
		}
		used[target] = true
		fprox = append(fprox, p)
		for i, b := range p.binds {
			out.Frontends = append(out.Frontends, imp.frontend(p, i, target))
			a := b.addr.Addr()
			switch {
			case a.IsUnspecified():
				imp.confirm(b.line, "bind "+b.addr.String(), "binds every address; no VIP can be derived from it")
			case a.IsLoopback():
			case !vipSeen[a]:
				vipSeen[a] = true
				vips = append(vips, a)
			}
		}
	}
	return fprox, used, vips
}

// frontendTarget returns the backend a frontend or listen section sends
// its connections to, or false when the section is not imported as a
// frontend, with the warning or error that says why.
func (imp *importer) frontendTarget(p *proxy, carried map[string]bool) (string, bool) {
	head := p.kind + " " + p.name
	target, line := p.defaultBackend, p.defaultBackendLine
	if p.kind == "listen" && len(p.servers) > 0 {
		target, line = p.name, p.line
	}
	why, skipped := imp.skipped[target]
	switch {
	case target == "":
		imp.changed(p.line, head, "not served", "no default_backend: not imported")
	case carried[target] && len(p.binds) == 0:
		imp.dropped(p.line, head, "no bind line, so HAProxy did not listen for it either: not imported")
	case carried[target]:
		return target, true
	case skipped:
		imp.changedFrom(line, "default_backend "+target, "frontend "+p.name+" served", "not served", "backend %s was not imported (%s), so frontend %s is not either", target, why, p.name)
	case !slices.ContainsFunc(imp.proxies, func(q *proxy) bool { return q.name == target && q.isBackend() }):
		imp.fail(line, "default_backend %s: no backend with that name", target)
	default:
		imp.changedFrom(line, "default_backend "+target, "frontend "+p.name+" served", "not served", "backend %s was not imported, so frontend %s is not either", target, p.name)
	}
	return "", false
}

// frontend is bind i of section p; halb binds one address per frontend,
// so binds after the first become frontends of their own.
func (imp *importer) frontend(p *proxy, i int, target string) outFrontend {
	b := p.binds[i]
	name := p.name
	if i > 0 {
		name = fmt.Sprintf("%s_%d", p.name, i+1)
		imp.dropped(b.line, "bind "+b.addr.String(), "halb binds one address per frontend: imported as frontend %s, which listens the same way", name)
	}
	return outFrontend{Name: name, Bind: b.addr.String(), Backend: target, MaxConn: p.maxconn, line: b.line}
}

// balance maps HAProxy's algorithm to one halb has.
func (imp *importer) balance(p *proxy) string {
	d := "balance " + p.balance
	switch p.balance {
	case "", "roundrobin":
		return "roundrobin"
	case "leastconn", "source":
		return p.balance
	case "static-rr":
		imp.dropped(p.balanceLine, d, "backend %s: imported as roundrobin, which honours weights the same way", p.name)
	default:
		imp.changed(p.balanceLine, d, "balance roundrobin", "backend %s: halb balances with roundrobin, leastconn or source", p.name)
	}
	return "roundrobin"
}

// HAProxy's health-check defaults when a server line just says "check".
const (
	haproxyInter = 2 * time.Second
	haproxyFall  = 3
	haproxyRise  = 2
)

// The ports that make a backend look like a Talos control plane: the
// Talos API (apid, gRPC with mutual TLS) and the Kubernetes API server.
const (
	talosPort = 50000
	kubePort  = 6443
)

// Where the imported config expects the check credentials; the getting
// started guide creates them there.
const (
	healthKubeconfig  = "/etc/halb/health.kubeconfig"
	healthTalosconfig = "/etc/halb/health.talosconfig"
	credentialsDoc    = "docs/getting-started-talos.md#check-credentials"
)

func (imp *importer) backend(p *proxy) (outBackend, bool) {
	head := p.kind + " " + p.name
	b := outBackend{Name: p.name, Balance: imp.balance(p), Retries: p.retries, line: p.line}
	var (
		first      *serverParams
		firstName  string
		unchecked  []server
		sslTraffic bool
		tlsCheck   bool
		allTalos   = true
		allKube    = true
	)
	for _, s := range p.servers {
		sp := p.defSrv.merge(s.params)
		if isSet(sp.disabled) {
			imp.dropped(s.line, "server "+s.name+" … disabled", "disabled in HAProxy; not imported")
			continue
		}
		o := outServer{Name: s.name, Address: s.addr.String(), Backup: isSet(sp.backup), Weight: imp.weight(s, sp.weight)}
		sslTraffic = sslTraffic || isSet(sp.ssl)
		tlsCheck = tlsCheck || isSet(sp.ssl) || isSet(sp.checkSSL)
		allTalos = allTalos && s.addr.Port() == talosPort
		allKube = allKube && s.addr.Port() == kubePort
		if isSet(sp.check) {
			if first == nil {
				first, firstName = &sp, s.name
			} else if !sameCheck(*first, sp) {
				imp.changedFrom(s.line, "server "+s.name, "its own inter/fall/rise", "server "+firstName+"'s", "inter/fall/rise differ from server %s; halb has one health check per backend", firstName)
			}
		} else {
			unchecked = append(unchecked, s)
		}
		b.Servers = append(b.Servers, o)
	}
	if len(b.Servers) == 0 {
		imp.changedFrom(p.line, head, "a backend with no enabled server", "not imported", "no enabled servers: not imported")
		imp.skipped[p.name] = "it has no enabled servers"
		return b, false
	}
	if first == nil {
		imp.changedFrom(p.line, head, "no server checked: always taken as up", "every server checked", "no server has `check`: HAProxy never probed them; halb probes every server (see health)")
	} else {
		for _, s := range unchecked {
			imp.changedFrom(s.line, "server "+s.name, "no check: always taken as up", "checked like the others", "no `check`: HAProxy never probed it; halb probes every server of the backend")
		}
	}
	if sslTraffic {
		imp.changedFrom(p.line, head, "traffic to the servers encrypted by HAProxy (ssl)", "the client's bytes forwarded as they are", "servers use `ssl`: halb does not encrypt traffic to servers; only the health check uses TLS")
	}
	params := p.defSrv
	if first != nil {
		params = *first
	}
	b.Health = imp.health(p, params, tlsCheck, allTalos, &b)
	switch {
	case allKube:
		imp.kubeCheck(p, params, b.Health, &b)
	case allTalos:
		imp.talosCheck(p, params, b.Health, &b)
	}
	return b, true
}

// weight is a server's weight within halb's 1 to 256; nil leaves
// halb's default, 1.
func (imp *importer) weight(s server, weight *int) *int {
	if weight == nil {
		return nil
	}
	w := *weight
	switch {
	case w == 0:
		imp.changedFrom(s.line, "server "+s.name+" … weight 0", "weight 0: no new connections", "weight 1: its share of new connections", "halb has no weight 0; drain the server with `halb server drain` instead")
		return nil
	case w > 256:
		imp.changed(s.line, fmt.Sprintf("server %s … weight %d", s.name, w), "weight 256", "halb's weights go up to 256, so the shares between servers differ")
		w = 256
	}
	return &w
}

func sameCheck(a, b serverParams) bool {
	return derefOr(a.inter, haproxyInter) == derefOr(b.inter, haproxyInter) &&
		derefOr(a.fall, haproxyFall) == derefOr(b.fall, haproxyFall) &&
		derefOr(a.rise, haproxyRise) == derefOr(b.rise, haproxyRise)
}

func derefOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// health maps HAProxy's check options onto one halb health check.
func (imp *importer) health(p *proxy, sp serverParams, tlsCheck, allTalos bool, b *outBackend) *outHealth {
	h := &outHealth{}
	req := checkRequestOf(p)
	// HAProxy runs only the last of httpchk and ssl-hello-chk; paired
	// is both, with no later check option overriding them.
	paired := p.httpchk != nil && p.sslHelloLine > 0 && p.otherCheckLine < max(req.line, p.sslHelloLine)
	switch {
	case p.otherCheckLine > max(req.line, p.sslHelloLine):
		h.Type = "tcp"
		if tlsCheck {
			h.Type = "tls"
		}
	case paired:
		imp.pairedCheck(p, req, allTalos, h, b)
	case p.httpchk != nil:
		h.Type = "http"
		if tlsCheck {
			h.Type = "https"
		}
		h.Path = req.path
	case p.sslHelloLine > 0 || tlsCheck:
		h.Type = "tls"
	default:
		h.Type = "tcp"
	}
	if h.Type == "http" || h.Type == "https" {
		imp.webCheck(p, req, h)
	} else if len(p.expect) > 0 && !paired {
		imp.dropped(p.expectLine, "http-check expect", "backend %s: a %s check has no HTTP status, in HAProxy neither", p.name, h.Type)
	}
	inter := imp.checkInterval(p, sp)
	h.Interval = formatDuration(inter)
	h.Fall, h.Rise = imp.checkCounts(p, sp)
	h.Timeout = checkTimeout(p, inter)
	if (h.Type == "tls" || h.Type == "https") && (sp.caFile != "" || sp.verify == "required" || sp.sni != "") {
		h.TLS = &outTLS{CAFile: sp.caFile, Verify: sp.verify == "required", ServerName: sp.sni}
	}
	return h
}

// checkRequest is the HTTP request of a check: option httpchk as
// overridden by http-check send. line is option httpchk's, 0 without
// one.
type checkRequest struct {
	line         int
	method, path string
}

func checkRequestOf(p *proxy) checkRequest {
	hc := p.httpchk
	if hc == nil {
		return checkRequest{}
	}
	return checkRequest{line: hc.line, method: cmp.Or(p.sendMethod, hc.method), path: cmp.Or(p.sendPath, hc.path)}
}

// pairedCheck decides the check of a backend with both option httpchk
// and option ssl-hello-chk, which HAProxy treats as alternatives but
// configs use together to mean an HTTPS check.
func (imp *importer) pairedCheck(p *proxy, req checkRequest, allTalos bool, h *outHealth, b *outBackend) {
	hc := p.httpchk
	ran := "option ssl-hello-chk, an SSL hello"
	if hc.line > p.sslHelloLine {
		ran = "option httpchk, an HTTP request"
	}
	pair := fmt.Sprintf("together with option ssl-hello-chk (line %d): the two are alternatives and HAProxy runs only the last one given (%s)", p.sslHelloLine, ran)
	d := directiveText([]string{"option", "httpchk", req.method, req.path})
	if hc.method == "OPTIONS" && len(hc.path) == 1 {
		d = "option httpchk"
	}
	if allTalos {
		h.Type = "tls"
		b.typeNote = fmt.Sprintf("HAProxy: option httpchk (line %d) + ssl-hello-chk (line %d); the Talos API (gRPC) has no %s", hc.line, p.sslHelloLine, commentSafe(req.path))
		imp.changedFrom(hc.line, d, ran, "a TLS handshake", "backend %s: %s; its servers are the Talos API on port %d (gRPC), which has no %s, so halb checks them with a TLS handshake; the path and expected status are dropped", p.name, pair, talosPort, req.path)
		return
	}
	h.Type = "https"
	h.Path = req.path
	b.typeNote = fmt.Sprintf("HAProxy: option httpchk (line %d) + ssl-hello-chk (line %d)", hc.line, p.sslHelloLine)
	imp.changedFrom(hc.line, d, ran, "an HTTPS GET", "backend %s: %s; halb runs what the pair means for the Kubernetes API: an HTTPS GET (set health.type: tls for a handshake only)", p.name, pair)
}

// webCheck fits an HTTP or HTTPS check to what halb sends: a GET of an
// absolute path.
func (imp *importer) webCheck(p *proxy, req checkRequest, h *outHealth) {
	if req.method != "GET" && req.method != "" {
		imp.changed(req.line, "option httpchk "+req.method, "GET", "backend %s: halb checks with GET, not %s", p.name, req.method)
	}
	if !strings.HasPrefix(h.Path, "/") {
		imp.changed(req.line, "option httpchk", "GET /", "backend %s: path %q does not start with /", p.name, h.Path)
		h.Path = "/"
	}
	h.ExpectStatus = p.expect
}

// checkInterval is the server's inter, within what halb accepts.
func (imp *importer) checkInterval(p *proxy, sp serverParams) time.Duration {
	inter := derefOr(sp.inter, haproxyInter)
	if inter < 10*time.Millisecond {
		imp.changed(p.line, "inter "+formatDuration(inter), "inter 10ms", "backend %s: halb probes at most every 10ms", p.name)
		inter = 10 * time.Millisecond
	}
	if inter > config.MaxDuration {
		imp.changed(p.line, "inter "+formatDuration(inter), "inter "+formatDuration(config.MaxDuration), "backend %s: halb probes at least every %s", p.name, formatDuration(config.MaxDuration))
		inter = config.MaxDuration
	}
	return inter
}

// checkCounts are the server's fall and rise, HAProxy's defaults where
// they are below 1.
func (imp *importer) checkCounts(p *proxy, sp serverParams) (*int, *int) {
	fall, rise := derefOr(sp.fall, haproxyFall), derefOr(sp.rise, haproxyRise)
	if fall < 1 {
		imp.changed(p.line, "fall 0", fmt.Sprintf("fall %d", haproxyFall), "backend %s: at least 1", p.name)
		fall = haproxyFall
	}
	if rise < 1 {
		imp.changed(p.line, "rise 0", fmt.Sprintf("rise %d", haproxyRise), "backend %s: at least 1", p.name)
		rise = haproxyRise
	}
	return &fall, &rise
}

// checkTimeout is timeout check, kept within the interval; "" leaves
// halb's default.
func checkTimeout(p *proxy, inter time.Duration) string {
	if t, ok := p.timeouts["check"]; ok && t.d > 0 {
		return formatDuration(max(min(t.d, inter), time.Millisecond))
	}
	if inter < config.DefaultCheckTimeout {
		// halb's default probe timeout would outlast the interval.
		return formatDuration(inter)
	}
	return ""
}

// timeouts merges the sections' timeouts into halb's global ones.
func (imp *importer) timeouts(fprox, bprox []*proxy) *outTimeouts {
	t := &outTimeouts{}
	connect, connOK := imp.pick("connect", bprox)
	client, clientOK := imp.pick("client", fprox)
	srv, srvOK := imp.pick("server", bprox)
	tunnel, tunnelOK := imp.pick("tunnel", append(slices.Clone(fprox), bprox...))
	if connOK {
		t.Connect = formatDuration(min(max(connect.d, time.Millisecond), config.MaxDuration))
	}
	idle := func(name, halbName string, v timeoutVal) string {
		d := v.d
		if d < time.Second {
			imp.changedFrom(v.line, "timeout "+name, "timeout "+name+" "+formatDuration(v.d), "1s", "halb's idle timeouts are at least 1s")
			d = time.Second
		}
		if d > config.MaxDuration {
			imp.changedFrom(v.line, "timeout "+name, "timeout "+name+" "+formatDuration(v.d), formatDuration(config.MaxDuration), "halb's timeouts are at most %s", formatDuration(config.MaxDuration))
			d = config.MaxDuration
		}
		if d < 5*time.Minute {
			imp.confirm(v.line, "timeout "+name+" "+formatDuration(d), "carried over as timeouts.%s: kubectl watches and talosctl streams idle for longer are cut, as in HAProxy (halb's default is %s)", halbName, formatDuration(config.DefaultIdleTimeout))
		}
		return formatDuration(d)
	}
	switch {
	case tunnelOK:
		// HAProxy uses the tunnel timeout instead of client and server
		// once a TCP connection is established.
		imp.dropped(tunnel.line, "timeout tunnel "+formatDuration(tunnel.d), "used for both timeouts.client_idle and timeouts.server_idle, as HAProxy uses it for an established TCP connection")
		v := idle("tunnel", "client_idle and timeouts.server_idle", tunnel)
		t.ClientIdle, t.ServerIdle = v, v
	default:
		if clientOK {
			t.ClientIdle = idle("client", "client_idle", client)
		}
		if srvOK {
			t.ServerIdle = idle("server", "server_idle", srv)
		}
	}
	if *t == (outTimeouts{}) {
		return nil
	}
	return t
}

// pick returns the one value of a timeout across sections, or the longest
// with a warning when they differ (halb's timeouts are global).
func (imp *importer) pick(name string, ps []*proxy) (timeoutVal, bool) {
	var vals []timeoutVal
	for _, p := range ps {
		if v, ok := p.timeouts[name]; ok {
			vals = append(vals, v)
		}
	}
	if len(vals) == 0 {
		return timeoutVal{}, false
	}
	best := vals[0]
	differ := false
	for _, v := range vals[1:] {
		if v.d != best.d {
			differ = true
		}
		if v.d > best.d {
			best = v
		}
	}
	if differ {
		imp.changedFrom(best.line, "timeout "+name, "a value per section", formatDuration(best.d)+" everywhere", "sections set different values; halb's timeouts are global, so the longest is used")
	}
	return best, true
}

// cluster adds the cluster and VIP sections when LB nodes were given.
func (imp *importer) cluster(out *outConfig, vips []netip.Addr) {
	if len(imp.opts.Nodes) == 0 {
		addr := "the VIP"
		if len(vips) > 0 {
			addr = vips[0].String()
		}
		imp.confirm(0, "", "no --node given: the output has no cluster and no vips section, so halb will proxy on %s but not move the address between LB hosts; run the import again with your LB hosts, e.g. --node lb1=192.168.66.151 --node lb2=192.168.66.152", addr)
		out.noCluster = true
		return
	}
	// A keyring file lets the first `halb keys` rotation work without a
	// restart; it lives in the unit's StateDirectory.
	c := &outCluster{KeyFile: "/etc/halb/gossip.key", KeyringFile: "/var/lib/halb/gossip.keyring"}
	k := imp.opts.Keepalived
	prios, note := planPriorities(imp.opts.Nodes, k)
	for i, n := range imp.opts.Nodes {
		c.Nodes = append(c.Nodes, outNode{Name: n.Name, Address: n.Address.String(), Priority: prios[i]})
	}
	if note != "" {
		imp.warns = append(imp.warns, Warning{File: imp.opts.KeepalivedSource, Message: "priorities: " + note, Effect: Confirm})
		c.nodesNote = "Priorities assumed from " + commentSafe(imp.opts.KeepalivedSource) + ": confirm them (see the warnings)."
	}
	out.Cluster = c
	// The interface comes from the flag, else keepalived; the fallback is
	// a guess that must not pass silently.
	guessed := false
	iface := func(fromKeepalived string, line int) (string, string) {
		switch {
		case imp.opts.VIPInterface != "":
			return imp.opts.VIPInterface, ""
		case fromKeepalived != "":
			return fromKeepalived, fmt.Sprintf("from %s:%d; on hosts that name it otherwise set cluster.nodes[].interface", commentSafe(imp.opts.KeepalivedSource), line)
		}
		guessed = true
		return "eth0", "ASSUMED: confirm, or import again with --vip-interface"
	}
	seen := map[netip.Addr]bool{}
	for _, a := range vips {
		seen[a] = true
		if kv, ok := k.vip(a); ok {
			name, why := iface(kv.Interface, kv.Line)
			out.VIPs = append(out.VIPs, outVIP{Address: kv.Prefix.String(), Interface: name, ifaceNote: why})
			continue
		}
		bits := 24
		if a.Is6() {
			bits = 64
		}
		name, why := iface("", 0)
		out.VIPs = append(out.VIPs, outVIP{Address: netip.PrefixFrom(a, bits).String(), Interface: name, ifaceNote: why, addrNote: "prefix length ASSUMED: set the LB hosts' subnet"})
		imp.confirm(0, "", "VIP %s: prefix length /%d assumed; set it to the LB hosts' subnet", a, bits)
	}
	defer func() {
		if guessed {
			imp.confirm(0, "", "VIP interface eth0 assumed (neither --vip-interface nor --keepalived gave one): confirm it is the LB hosts' interface on the VIP's subnet")
		}
	}()
	if k == nil {
		if len(vips) == 0 {
			imp.confirm(0, "", "no frontend binds a specific address, so no VIP was derived; add a vips section by hand")
		}
		return
	}
	for _, kv := range k.VIPs {
		if !seen[kv.Prefix.Addr()] {
			seen[kv.Prefix.Addr()] = true
			name, why := iface(kv.Interface, kv.Line)
			out.VIPs = append(out.VIPs, outVIP{Address: kv.Prefix.String(), Interface: name, ifaceNote: why})
		}
	}
	if k.NoPreempt {
		c.Policy = "sticky"
	}
	if k.PreemptDelay != nil {
		c.PreemptDelay = formatDuration(*k.PreemptDelay)
	}
}

// vip returns the keepalived VIP with address a.
func (k *Keepalived) vip(a netip.Addr) (KeepalivedVIP, bool) {
	if k == nil {
		return KeepalivedVIP{}, false
	}
	for _, v := range k.VIPs {
		if v.Prefix.Addr() == a {
			return v, true
		}
	}
	return KeepalivedVIP{}, false
}

// kubeReadyPaths are the API server's health endpoints a load balancer
// check should replace with /readyz.
var kubeReadyPaths = map[string]bool{"/": true, "/healthz": true, "/livez": true, "/readyz": true}

// kubeCheck adapts the check of a backend whose servers all listen on
// 6443, taken to be Kubernetes API servers of a Talos control plane. Talos
// runs kube-apiserver with --anonymous-auth=false: an anonymous request
// gets 401, so an HTTPS check without credentials marks every server down.
func (imp *importer) kubeCheck(p *proxy, sp serverParams, h *outHealth, b *outBackend) {
	line := p.line
	if p.httpchk != nil {
		line = p.httpchk.line
	}
	switch h.Type {
	case "https":
	case "tls":
		imp.confirm(line, "backend "+p.name, "servers on port %d, taken to be Kubernetes API servers: a TLS handshake shows an API server listens, not that it is ready; consider type: https, path: /readyz with tls.kubeconfig: %s (%s)", kubePort, healthKubeconfig, credentialsDoc)
		return
	default:
		return
	}
	d := "option httpchk"
	if p.httpchk != nil {
		d = directiveText([]string{"option", "httpchk", p.httpchk.method, p.httpchk.path})
	}
	imp.changedFrom(line, d, "an anonymous check", "a check with the client certificate of "+healthKubeconfig, "backend %s: servers on port %d with an HTTPS check are taken to be the Kubernetes API of a Talos control plane; Talos runs kube-apiserver with --anonymous-auth=false, so an anonymous check gets 401 and would mark every server down. halb checks with the client certificate of %s: create it on every LB host (%s). It works on any cluster; without Talos you may drop tls.kubeconfig if your API servers answer anonymous checks", p.name, kubePort, healthKubeconfig, credentialsDoc)
	was := h.Path
	if kubeReadyPaths[was] {
		h.Path = "/readyz"
	}
	if was != h.Path {
		imp.changedFrom(line, d, "GET "+was, "GET /readyz", "backend %s: /readyz is the endpoint meant for load balancers: it fails while an API server shuts down gracefully or loses etcd, so halb stops sending it new connections and lets open ones finish (/healthz is deprecated)", p.name)
	}
	if sp.caFile != "" || sp.verify != "" {
		imp.changedFrom(line, "backend "+p.name, "ca-file/verify on the server lines", "the CA in "+healthKubeconfig, "ca-file/verify not carried over: the check verifies the API servers with the CA in %s", healthKubeconfig)
	}
	h.TLS = &outTLS{ServerName: sp.sni, Kubeconfig: healthKubeconfig}
	b.healthNote = fmt.Sprintf("Talos assumed (servers on %d, HTTPS check): the API server answers\nanonymous checks with 401, so the check presents a client certificate.", kubePort)
	if was != h.Path {
		b.healthNote += fmt.Sprintf("\n%s became /readyz, the endpoint meant for load balancers.", commentSafe(was))
	}
	b.healthNote += "\nCreate the kubeconfig: " + credentialsDoc
	b.credNote = "a user with no RBAC rights beyond /readyz; never the admin kubeconfig"
	imp.addCredential(healthKubeconfig + "   client certificate of a user with no rights (e.g. CN=halb-health)")
}

// talosCheck adapts the check of a backend whose servers all listen on
// 50000, taken to be the Talos API (apid), which accepts only clients
// presenting a certificate from the Talos OS CA (mutual TLS 1.3).
func (imp *importer) talosCheck(p *proxy, sp serverParams, h *outHealth, b *outBackend) {
	if h.Type != "tls" {
		return
	}
	line := p.line
	d := "backend " + p.name
	switch {
	case p.sslHelloLine > 0:
		line, d = p.sslHelloLine, "option ssl-hello-chk"
	case p.httpchk != nil:
		line = p.httpchk.line
	}
	imp.changedFrom(line, d, "a handshake without a client certificate", "a handshake with the os:reader certificate of "+healthTalosconfig, "backend %s: servers on port %d are taken to be the Talos API (apid), which requires a client certificate from the Talos OS CA (mutual TLS 1.3) and refuses a handshake without one; halb's TLS check presents the os:reader certificate of %s and verifies the servers with its CA: create it on every LB host with `talosctl -n <control plane> config new %s --roles os:reader` (%s)", p.name, talosPort, healthTalosconfig, healthTalosconfig, credentialsDoc)
	if sp.caFile != "" || sp.verify != "" {
		imp.changedFrom(line, d, "ca-file/verify on the server lines", "the CA in "+healthTalosconfig, "backend %s: ca-file/verify not carried over: the check verifies the Talos API with the CA in %s", p.name, healthTalosconfig)
	}
	h.TLS = &outTLS{ServerName: sp.sni, Talosconfig: healthTalosconfig}
	b.healthNote = fmt.Sprintf("Talos assumed (servers on %d): apid accepts only clients with a\ncertificate from the Talos OS CA, so the check presents an os:reader one.\nCreate the talosconfig: %s", talosPort, credentialsDoc)
	b.credNote = "talosctl config new --roles os:reader; never the admin talosconfig"
	imp.addCredential(healthTalosconfig + "  talosctl -n <control plane> config new " + healthTalosconfig + " --roles os:reader")
}

func (imp *importer) addCredential(c string) {
	if !slices.Contains(imp.credentials, c) {
		imp.credentials = append(imp.credentials, c)
	}
}
