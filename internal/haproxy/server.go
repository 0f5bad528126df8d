package haproxy

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"halb/internal/config"
)

// serverParams are the options of a server or default-server line that
// halb can use. Pointers mark values that were set, so a server line
// overrides default-server only where it says something.
type serverParams struct {
	check    *bool
	checkSSL *bool
	ssl      *bool
	backup   *bool
	disabled *bool
	inter    *time.Duration
	fall     *int
	rise     *int
	weight   *int
	caFile   string
	verify   string
	sni      string
}

// merge returns p with every value set in over replacing p's.
func (p serverParams) merge(over serverParams) serverParams {
	pick := func(a, b *bool) *bool {
		if b != nil {
			return b
		}
		return a
	}
	p.check = pick(p.check, over.check)
	p.checkSSL = pick(p.checkSSL, over.checkSSL)
	p.ssl = pick(p.ssl, over.ssl)
	p.backup = pick(p.backup, over.backup)
	p.disabled = pick(p.disabled, over.disabled)
	if over.inter != nil {
		p.inter = over.inter
	}
	if over.fall != nil {
		p.fall = over.fall
	}
	if over.rise != nil {
		p.rise = over.rise
	}
	if over.weight != nil {
		p.weight = over.weight
	}
	if over.caFile != "" {
		p.caFile = over.caFile
	}
	if over.verify != "" {
		p.verify = over.verify
	}
	if over.sni != "" {
		p.sni = over.sni
	}
	return p
}

func isSet(b *bool) bool { return b != nil && *b }

// server is one server line.
type server struct {
	line   int
	name   string
	addr   netip.AddrPort
	params serverParams // as written on the line, before default-server
}

// dropped is a server option that halb does not carry over.
type dropped struct {
	option string
	why    string
	effect Effect
	now    string // for Changes: what halb does instead
}

func (x dropped) warning(line int, directive string) Warning {
	return Warning{Line: line, Directive: directive, Message: x.why, Effect: x.effect, Now: x.now}
}

// serverArgOptions take one argument; others are flags. Knowing them keeps
// an argument from being mistaken for an option.
var serverArgOptions = map[string]bool{
	"addr": true, "agent-addr": true, "agent-inter": true, "agent-port": true, "agent-send": true,
	"alpn": true, "ca-file": true, "check-alpn": true, "check-proto": true, "check-sni": true,
	"ciphers": true, "ciphersuites": true, "client-sigalgs": true, "cookie": true, "crl-file": true,
	"crt": true, "curves": true, "downinter": true, "error-limit": true, "fall": true,
	"fastinter": true, "guid": true, "hash-key": true, "id": true, "init-addr": true, "inter": true,
	"log-proto": true, "max-reuse": true, "maxconn": true, "maxqueue": true, "minconn": true,
	"namespace": true, "npn": true, "observe": true, "on-error": true, "on-marked-down": true,
	"on-marked-up": true, "pool-conn-name": true, "pool-low-conn": true, "pool-max-conn": true,
	"pool-purge-delay": true, "port": true, "proto": true, "redir": true, "resolve-net": true,
	"resolve-opts": true, "resolve-prefer": true, "resolvers": true, "rise": true, "shard": true,
	"sigalgs": true, "slowstart": true, "sni": true, "source": true, "ssl-max-ver": true,
	"ssl-min-ver": true, "tcp-ut": true, "track": true, "usesrc": true, "verify": true,
	"verifyhost": true, "weight": true, "ws": true, "set-proxy-v2-tlv-fmt": true,
}

// droppedWhy explains the server options whose loss matters most, and
// what halb does instead; an option not listed changes behaviour.
var droppedWhy = map[string]dropped{
	"send-proxy":    {why: "halb does not send the PROXY protocol: servers that require it will reject connections", now: "no PROXY header"},
	"send-proxy-v2": {why: "halb does not send the PROXY protocol: servers that require it will reject connections", now: "no PROXY header"},
	"port":          {why: "halb checks the server's own address and port", now: "checks on the server's address and port"},
	"addr":          {why: "halb checks the server's own address and port", now: "checks on the server's address and port"},
	"maxconn":       {why: "halb has no per-server connection limit; use frontend or global maxconn", now: "no per-server limit"},
	"slowstart":     {why: "halb sends a recovered server its full share at once", now: "full share at once"},
	"track":         {why: "halb checks every server itself", now: "the server's own check"},
	"agent-check":   {why: "halb has no agent checks", now: "no agent check"},
	"resolvers":     {why: "halb does not resolve host names", now: "the address as written"},
	"fastinter":     {why: "halb probes at one interval whatever the server's state", now: "one interval (inter)"},
	"downinter":     {why: "halb probes at one interval whatever the server's state", now: "one interval (inter)"},
	"crt":           {why: "client certificates are only used by health checks: set health.tls.cert_file/key_file", now: "no client certificate towards the server"},
	// Only HTTP persistence or HAProxy's own bookkeeping: nothing changes
	// for a TCP proxy.
	"cookie": {why: "HTTP persistence cookies do not apply to a TCP proxy", effect: Dropped},
	"id":     {why: "halb names servers, it has no numeric ids", effect: Dropped},
	"guid":   {why: "halb names servers, it has no global ids", effect: Dropped},
}

// parseServerParams reads the options after "server NAME ADDR" or
// "default-server".
func parseServerParams(args []string) (serverParams, []dropped, error) {
	var (
		p    serverParams
		drop []dropped
	)
	for i := 0; i < len(args); i++ {
		opt, val := args[i], ""
		if serverArgOptions[opt] {
			if i+1 >= len(args) {
				return p, drop, fmt.Errorf("server option %q needs a value", opt)
			}
			i++
			val = args[i]
		}
		if field, on := p.flag(opt); field != nil {
			*field = &on
			continue
		}
		used, err := p.setValue(opt, val)
		if err != nil {
			return p, drop, err
		}
		if !used {
			drop = append(drop, droppedOption(opt, val))
		}
	}
	return p, drop, nil
}

// flag returns the field an on/off option such as "check" or "no-check"
// sets and the value it sets, or nil when opt is not one halb uses.
func (p *serverParams) flag(opt string) (**bool, bool) {
	switch opt {
	case "check", "no-check":
		return &p.check, opt == "check"
	case "check-ssl", "no-check-ssl":
		return &p.checkSSL, opt == "check-ssl"
	case "ssl", "no-ssl":
		return &p.ssl, opt == "ssl"
	case "backup", "no-backup":
		return &p.backup, opt == "backup"
	case "disabled", "enabled":
		return &p.disabled, opt == "disabled"
	}
	return nil, false
}

// setValue stores an option that takes a value, reporting whether opt is
// one halb uses.
func (p *serverParams) setValue(opt, val string) (bool, error) {
	switch opt {
	case "inter":
		d, err := parseTime(val)
		if err != nil {
			return true, fmt.Errorf("inter: %w", err)
		}
		if d <= 0 {
			return true, fmt.Errorf("inter %s: must be more than 0", val)
		}
		p.inter = &d
	case "fall":
		return true, setCount(&p.fall, opt, val)
	case "rise":
		return true, setCount(&p.rise, opt, val)
	case "weight":
		return true, setCount(&p.weight, opt, val)
	case "ca-file":
		p.caFile = val
	case "verify":
		p.verify = val
	case "sni", "check-sni":
		p.sni = val
	default:
		return false, nil
	}
	return true, nil
}

// setCount reads the count val of option opt into *dst, which keeps its
// value when val is not a count.
func setCount(dst **int, opt, val string) error {
	n, err := parseCount(val)
	if err != nil {
		return fmt.Errorf("%s: %w", opt, err)
	}
	*dst = &n
	return nil
}

// droppedOption explains a server option halb does not carry over.
func droppedOption(opt, val string) dropped {
	x, ok := droppedWhy[opt]
	if !ok {
		x = dropped{why: "halb has no equivalent"}
	}
	x.option = opt
	if val != "" {
		x.option += " " + val
	}
	return x
}

// parseServer reads "server NAME ADDR [options]".
func parseServer(d directive) (server, []dropped, error) {
	if len(d.args) < 3 {
		return server{}, nil, fmt.Errorf("server needs a name and an address (server NAME IP:PORT [check])")
	}
	s := server{line: d.line, name: d.args[1]}
	addr, err := parseHostPort(d.args[2])
	var notHost error
	if err == nil {
		notHost = config.CheckHostAddress(addr.Addr())
	}
	switch {
	case errors.Is(err, errNoPort):
		return s, nil, fmt.Errorf("server %s: address %q has no port; halb needs IP:PORT", s.name, d.args[2])
	case err != nil:
		return s, nil, fmt.Errorf("server %s: %w", s.name, err)
	case notHost != nil:
		return s, nil, fmt.Errorf("server %s: %q %w", s.name, d.args[2], notHost)
	}
	s.addr = addr
	params, drop, err := parseServerParams(d.args[3:])
	if err != nil {
		return s, drop, fmt.Errorf("server %s: %w", s.name, err)
	}
	s.params = params
	return s, drop, nil
}

// directiveText prints a directive for a warning, masking secrets so that
// a password never reaches a terminal or a log.
func directiveText(args []string) string {
	out := make([]string, len(args))
	copy(out, args)
	for i := range out {
		switch {
		case i >= 1 && out[i-1] == "stats" && out[i] == "auth" && i+1 < len(out):
			user, _, _ := strings.Cut(out[i+1], ":")
			out[i+1] = user + ":<password not shown>"
		case i >= 1 && (out[i-1] == "password" || out[i-1] == "insecure-password" || out[i-1] == "auth_pass"):
			out[i] = "<not shown>"
		}
	}
	return strings.Join(out, " ")
}
