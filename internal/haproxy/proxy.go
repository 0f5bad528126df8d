package haproxy

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"strings"
	"time"
)

// Warning is something in the input that the output does not do the same
// way, or does not do at all.
type Warning struct {
	File      string // "": the file given to Format
	Line      int    // 0 when not tied to one line
	Directive string // as written, with secrets masked
	Message   string
	Effect    Effect
	// Was and Now are, for Changes, what HAProxy or keepalived did and
	// what halb will do instead; Was "" means the directive itself.
	Was, Now string
}

// Effect sorts warnings by what they mean for the imported config, so
// that the few that change behaviour are not lost among the many that
// change nothing.
type Effect int

// Warning effects, in the order they are printed.
const (
	// Changes: halb will behave differently from HAProxy or keepalived.
	// The zero value, so a warning nobody classified is never filed as
	// harmless.
	Changes Effect = iota
	// Confirm: an assumption the importer made, or a value it kept that
	// halb would choose differently; the operator should confirm it.
	Confirm
	// Dropped: not carried over, or carried over in another form, with
	// no effect on what clients or operators see.
	Dropped
)

func (e Effect) String() string {
	switch e {
	case Changes:
		return "changes behaviour"
	case Confirm:
		return "confirm"
	default:
		return "dropped, no effect"
	}
}

// Format prints the warning as FILE:LINE: EFFECT: DIRECTIVE: MESSAGE, with
// the old and the new behaviour for one that changes behaviour.
func (w Warning) Format(file string) string {
	if w.File != "" {
		file = w.File
	}
	loc := file
	if w.Line > 0 {
		loc = fmt.Sprintf("%s:%d", file, w.Line)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s: ", loc, w.Effect)
	if w.Directive != "" {
		b.WriteString(w.Directive + ": ")
	}
	b.WriteString(w.Message)
	if w.Effect == Changes {
		was := cmp.Or(w.Was, w.Directive)
		fmt.Fprintf(&b, " [was: %s; now: %s]", cmp.Or(was, "?"), cmp.Or(w.Now, "not carried over"))
	}
	return b.String()
}

// FormatWarnings prints warnings grouped by effect, each group under a
// heading with its count, those that change behaviour first.
func FormatWarnings(ws []Warning, file string) string {
	var b strings.Builder
	for _, e := range []Effect{Changes, Confirm, Dropped} {
		var group []Warning
		for _, w := range ws {
			if w.Effect == e {
				group = append(group, w)
			}
		}
		if len(group) == 0 {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "%s: %d warning(s)%s\n", e, len(group), effectHint[e])
		for _, w := range group {
			b.WriteString(w.Format(file) + "\n")
		}
	}
	return b.String()
}

var effectHint = map[Effect]string{
	Changes: ", read each one: halb will not do what HAProxy or keepalived did",
	Confirm: ", assumptions to check before cutting over",
	Dropped: ", nothing to do",
}

type timeoutVal struct {
	d    time.Duration
	line int
}

type httpchk struct {
	line   int
	method string
	path   string
}

type bindAddr struct {
	line int
	addr netip.AddrPort
	// tls is the bind line's TLS, which only a stats page keeps.
	tls bindTLS
}

// bindTLS is what a bind line says about TLS: ssl, and the certificate
// options (crt FILE, crt-list FILE).
type bindTLS struct {
	ssl     bool
	crt     string // the first crt; HAProxy also takes several, or a directory
	crts    int    // how many crt options the line has
	crtList string
}

// statsPage is what a `stats enable` section says, minus the password.
type statsPage struct {
	uri      string
	refresh  string
	user     string
	authLine int
}

// proxy is a defaults, frontend, backend or listen section after reading
// its directives, with the values it inherited from defaults.
type proxy struct {
	kind, name string
	line       int

	mode     string
	modeLine int
	disabled bool

	binds              []bindAddr
	defaultBackend     string
	defaultBackendLine int
	maxconn            *int

	balance     string
	balanceLine int
	retries     *int
	defSrv      serverParams
	servers     []server

	httpchk        *httpchk
	sslHelloLine   int
	otherCheckLine int // option tcp-check or a protocol check halb lacks
	expect         []int
	expectLine     int
	sendMethod     string
	sendPath       string

	timeouts map[string]timeoutVal

	acls      map[string][]string // name → source networks, for `acl NAME src …`
	allow     []string
	allowLine int
	stats     *statsPage

	warns []Warning
}

// inherit starts a section with the settings of the defaults section
// above it (nil: none). Directives that only make sense once per section
// (binds, servers, ACLs) start empty.
func inherit(d *proxy, kind, name string, line int) *proxy {
	p := &proxy{kind: kind, name: name, line: line, mode: "tcp", timeouts: map[string]timeoutVal{}, acls: map[string][]string{}}
	if d == nil {
		return p
	}
	p.mode, p.modeLine = d.mode, d.modeLine
	p.defaultBackend, p.defaultBackendLine = d.defaultBackend, d.defaultBackendLine
	p.maxconn = d.maxconn
	p.balance, p.balanceLine = d.balance, d.balanceLine
	p.retries = d.retries
	p.defSrv = d.defSrv
	p.httpchk = d.httpchk
	p.sslHelloLine = d.sslHelloLine
	p.otherCheckLine = d.otherCheckLine
	p.expect, p.expectLine = d.expect, d.expectLine
	p.sendMethod, p.sendPath = d.sendMethod, d.sendPath
	p.timeouts = maps.Clone(d.timeouts)
	return p
}

// dropped notes a directive that is not carried over and whose loss
// nobody will notice.
func (p *proxy) dropped(d directive, format string, args ...any) {
	p.warns = append(p.warns, Warning{Line: d.line, Directive: directiveText(d.args), Message: fmt.Sprintf(format, args...), Effect: Dropped})
}

// changed notes a directive whose loss or translation changes behaviour;
// now says what halb does instead.
func (p *proxy) changed(d directive, now, format string, args ...any) {
	p.warns = append(p.warns, Warning{Line: d.line, Directive: directiveText(d.args), Message: fmt.Sprintf(format, args...), Now: now})
}

func (p *proxy) isFrontend() bool { return p.kind == "frontend" || p.kind == "listen" }
func (p *proxy) isBackend() bool  { return p.kind == "backend" || p.kind == "listen" }

// Explanations shared by several directives.
const (
	whyLog      = "halb logs with log/slog to stderr (journald under systemd), one line per finished connection (log.connections)"
	whyHTTPOnly = "halb proxies TCP only and never writes HTTP responses"
	whyNone     = "not carried over: halb has no equivalent"
	whyTLS      = "halb does not terminate TLS: it passes the bytes through, so the API servers' own TLS settings apply"
	whyAdmin    = "halb's admin API is a unix socket (admin.socket, default /run/halb/admin.sock); use `halb status`"
)

// directive handles one line of a defaults, frontend, backend or listen
// section. It returns an error only for input that is wrong, not merely
// unsupported.
func (p *proxy) directive(d directive) error {
	if handle, ok := proxyDirectives[d.args[0]]; ok {
		return handle(p, d)
	}
	p.changed(d, "", whyNone)
	return nil
}

// proxyDirectives maps a section keyword to its handler; a keyword not
// listed has no equivalent in halb, which changes behaviour.
var proxyDirectives = map[string]func(*proxy, directive) error{
	"mode":            (*proxy).setMode,
	"bind":            (*proxy).bind,
	"default_backend": (*proxy).setDefaultBackend,
	"use_backend":     (*proxy).useBackend,
	"maxconn":         (*proxy).setMaxconn,
	"balance":         (*proxy).setBalance,
	"retries":         (*proxy).setRetries,
	"server":          (*proxy).addServer,
	"default-server":  (*proxy).setDefaultServer,
	"option":          noError((*proxy).option),
	"http-check":      (*proxy).httpCheck,
	"timeout":         (*proxy).timeout,
	"acl":             noError((*proxy).acl),
	"http-request":    noError((*proxy).httpRequest),
	"tcp-request":     noError((*proxy).tcpRequest),
	"stats":           noError((*proxy).statsDirective),
	"log":             dropAs(whyLog),
	"errorfile":       dropAs("error pages are not carried over: " + whyHTTPOnly),
	"errorfiles":      dropAs("error pages are not carried over: " + whyHTTPOnly),
	"errorloc":        dropAs("error pages are not carried over: " + whyHTTPOnly),
	"errorloc302":     dropAs("error pages are not carried over: " + whyHTTPOnly),
	"errorloc303":     dropAs("error pages are not carried over: " + whyHTTPOnly),
	"disabled":        noError(func(p *proxy, _ directive) { p.disabled = true }),
}

// noError adapts a handler that cannot fail.
func noError(handle func(*proxy, directive)) func(*proxy, directive) error {
	return func(p *proxy, d directive) error {
		handle(p, d)
		return nil
	}
}

// dropAs handles a directive halb does without, for the reason why.
func dropAs(why string) func(*proxy, directive) error {
	return func(p *proxy, d directive) error {
		p.dropped(d, "%s", why)
		return nil
	}
}

func (p *proxy) setMode(d directive) error {
	p.mode, p.modeLine = argAt(d.args, 1), d.line
	return nil
}

func (p *proxy) setDefaultBackend(d directive) error {
	name := argAt(d.args, 1)
	if name == "" {
		return fmt.Errorf("default_backend needs a backend name")
	}
	p.defaultBackend, p.defaultBackendLine = name, d.line
	return nil
}

func (p *proxy) useBackend(d directive) error {
	p.changed(d, "every connection goes to default_backend", "not carried over: halb sends every connection of a frontend to its one backend (default_backend)")
	return nil
}

func (p *proxy) setMaxconn(d directive) error {
	return setCount(&p.maxconn, "maxconn", argAt(d.args, 1))
}

func (p *proxy) setRetries(d directive) error {
	return setCount(&p.retries, "retries", argAt(d.args, 1))
}

func (p *proxy) setBalance(d directive) error {
	algo := argAt(d.args, 1)
	p.balance, p.balanceLine = algo, d.line
	if len(d.args) > 2 {
		p.changed(d, "balance "+algo, "balance arguments after %q are not carried over", algo)
	}
	return nil
}

func (p *proxy) addServer(d directive) error {
	if !p.isBackend() {
		p.dropped(d, "servers belong in a backend or listen section; ignored, as HAProxy would refuse it")
		return nil
	}
	s, drop, err := parseServer(d)
	if err != nil {
		return err
	}
	for _, x := range drop {
		p.warns = append(p.warns, x.warning(d.line, "server "+s.name+" "+x.option))
	}
	p.servers = append(p.servers, s)
	return nil
}

func (p *proxy) setDefaultServer(d directive) error {
	params, drop, err := parseServerParams(d.args[1:])
	if err != nil {
		return fmt.Errorf("default-server: %w", err)
	}
	for _, x := range drop {
		p.warns = append(p.warns, x.warning(d.line, "default-server "+x.option))
	}
	p.defSrv = p.defSrv.merge(params)
	return nil
}

// timeout handles "timeout NAME VALUE"; only the timeouts of a TCP
// connection and its check carry over.
func (p *proxy) timeout(d directive) error {
	name := argAt(d.args, 1)
	switch name {
	case "connect", "client", "server", "check", "tunnel":
		if len(d.args) != 3 {
			return fmt.Errorf("timeout %s takes one value (e.g. 5s)", name)
		}
		t, err := parseTime(d.args[2])
		if err != nil {
			return fmt.Errorf("timeout %s: %w", name, err)
		}
		p.timeouts[name] = timeoutVal{d: t, line: d.line}
	case "http-request", "http-keep-alive", "tarpit":
		p.dropped(d, whyHTTPOnly)
	default:
		p.changed(d, "", whyNone)
	}
	return nil
}

// acl keeps "acl NAME src NETWORK…" for the rules that allow-list by
// source; every other ACL is dropped.
func (p *proxy) acl(d directive) {
	a := d.args
	if argAt(a, 2) == "src" && len(a) > 3 {
		p.acls[a[1]] = append(p.acls[a[1]], a[3:]...)
		return
	}
	p.dropped(d, "not carried over: halb has no ACLs (the rules using it are reported on their own lines)")
}

func (p *proxy) httpRequest(d directive) {
	if !p.sourceRule(d, "deny", "allow") {
		p.dropped(d, whyHTTPOnly)
	}
}

func (p *proxy) tcpRequest(d directive) {
	a := d.args
	stage := argAt(a, 1)
	if len(a) > 2 && (stage == "connection" || stage == "content") && p.sourceRule(directive{line: d.line, args: a[1:]}, "reject", "accept") {
		// Only the stats page keeps its allow-list (as a note); for a
		// TCP frontend the filter would silently vanish, so say so.
		p.changed(d, "every source address is accepted", "NOT carried over: halb has no source filter; restrict access with a firewall (nftables) instead")
		return
	}
	p.changed(d, "", whyNone)
}

// bind records each address of a bind line; halb binds one address per
// frontend.
func (p *proxy) bind(d directive) error {
	if !p.isFrontend() {
		p.dropped(d, "bind belongs in a frontend or listen section; ignored, as HAProxy would refuse it")
		return nil
	}
	if len(d.args) < 2 {
		return fmt.Errorf("bind needs an address (bind 192.168.66.160:6443)")
	}
	t := bindOptionsTLS(d.args[2:])
	for _, s := range strings.Split(d.args[1], ",") {
		ap, err := parseHostPort(s)
		if err != nil {
			return fmt.Errorf("bind %s: %w", s, err)
		}
		p.binds = append(p.binds, bindAddr{line: d.line, addr: ap, tls: t})
	}
	if len(d.args) > 2 {
		why, now := "bind options are not carried over", "a plain TCP listener"
		for _, opt := range d.args[2:] {
			switch opt {
			case "ssl", "crt", "crt-list":
				why, now = whyTLS, "TLS passes through to the servers"
			case "accept-proxy":
				why, now = "halb does not read the PROXY protocol from clients", "the PROXY header reaches the servers as data"
			}
		}
		p.changed(d, now, "%s", why)
	}
	return nil
}

// bindOptionsTLS reads ssl, crt FILE and crt-list FILE from a bind line's
// options.
func bindOptionsTLS(opts []string) bindTLS {
	var t bindTLS
	for i, opt := range opts {
		arg := ""
		if i+1 < len(opts) {
			arg = opts[i+1]
		}
		switch opt {
		case "ssl":
			t.ssl = true
		case "crt":
			if t.crts == 0 {
				t.crt = arg
			}
			t.crts++
		case "crt-list":
			t.crtList = arg
		}
	}
	return t
}

// option handles "option NAME …".
func (p *proxy) option(d directive) {
	a := d.args
	if len(a) < 2 {
		p.dropped(d, "an option without a name does nothing")
		return
	}
	switch a[1] {
	case "httpchk":
		h := &httpchk{line: d.line, method: "OPTIONS", path: "/"}
		switch len(a) {
		case 2:
		case 3:
			h.path = a[2]
		default:
			h.method, h.path = a[2], a[3]
			if len(a) > 5 {
				p.changed(d, "GET "+h.path+" without extra headers", "words after the HTTP version (headers) are not carried over")
			}
		}
		p.httpchk = h
		p.sendMethod, p.sendPath = "", ""
	case "ssl-hello-chk":
		p.sslHelloLine = d.line
	case "tcp-check":
		p.otherCheckLine = d.line
	case "mysql-check", "pgsql-check", "redis-check", "smtpchk", "ldap-check", "spop-check", "external-check":
		p.otherCheckLine = d.line
		p.changed(d, "a TCP connect check", "halb has no %s: it checks these servers with a TCP connect", a[1])
	case "httplog", "tcplog", "dontlognull", "logasap", "log-health-checks", "log-separate-errors", "httpslog":
		p.dropped(d, "%s", whyLog)
	case "redispatch":
		// halb always tries another server after a failed connect.
	case "forwardfor", "http-server-close", "http-keep-alive", "httpclose", "http-buffer-request":
		p.dropped(d, whyHTTPOnly)
	default:
		p.changed(d, "", whyNone)
	}
}

// httpCheck handles "http-check expect status N" and "http-check send".
func (p *proxy) httpCheck(d directive) error {
	a := d.args
	if len(a) >= 4 && a[1] == "expect" && a[2] == "status" {
		var codes []int
		for _, c := range strings.Split(a[3], ",") {
			n, err := parseCount(c)
			if err != nil || n < 100 || n > 599 {
				return fmt.Errorf("http-check expect status %s: want an HTTP status such as 200", a[3])
			}
			codes = append(codes, n)
		}
		p.expect, p.expectLine = codes, d.line
		return nil
	}
	if len(a) >= 2 && a[1] == "send" {
		for i := 2; i+1 < len(a); i += 2 {
			switch a[i] {
			case "meth":
				p.sendMethod = a[i+1]
			case "uri":
				p.sendPath = a[i+1]
			default:
				p.changed(d, "a plain GET", "http-check send %s is not carried over: halb sends a plain GET", a[i])
			}
		}
		return nil
	}
	if len(a) >= 2 && a[1] == "expect" {
		p.changed(d, "expect status 200", "halb only expects status codes (http-check expect status N); the check keeps its default, status 200")
		return nil
	}
	p.changed(d, "", whyNone)
	return nil
}

// sourceRule recognises "VERB if !ACL" (deny others) and "VERB2 if ACL"
// (allow these) where ACL matches source networks, and records them as an
// allow-list.
func (p *proxy) sourceRule(d directive, deny, allow string) bool {
	a := d.args
	if len(a) != 4 || a[2] != "if" {
		return false
	}
	name, negated := strings.CutPrefix(a[3], "!")
	nets, ok := p.acls[name]
	if !ok || (a[1] == deny) != negated || (a[1] != deny && a[1] != allow) {
		return false
	}
	p.allow = append(p.allow, nets...)
	p.allowLine = d.line
	return true
}

func (p *proxy) statsDirective(d directive) {
	if p.stats == nil {
		p.stats = &statsPage{}
	}
	a := d.args
	if len(a) < 2 {
		return
	}
	switch a[1] {
	case "uri":
		if len(a) > 2 {
			p.stats.uri = a[2]
		}
	case "refresh":
		if len(a) > 2 {
			p.stats.refresh = a[2]
		}
	case "auth":
		if len(a) > 2 {
			user, _, _ := strings.Cut(a[2], ":")
			p.stats.user = user
			p.stats.authLine = d.line
		}
	}
}
