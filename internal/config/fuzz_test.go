package config

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// FuzzParse: no input may crash the parser or make it walk more nodes than
// the file has plus the alias budget; a refused file gets errors that say
// where the problem is; an accepted one is a usable, self-consistent
// config, and parsing it again gives the same result.
func FuzzParse(f *testing.F) {
	f.Add([]byte(minimal))
	for _, p := range []string{"../../deploy/examples/talos.yaml", "../../deploy/examples/loopback.yaml"} {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(minimal + "timeouts: {connect: 1ms, client_idle: 1s}\nmaxconn: 0\n"))
	f.Add([]byte(minimal + "cluster: {insecure_gossip: true, nodes: [{name: a, address: 10.0.0.1, priority: 0}]}\nvips: [{address: 10.0.0.9/24, interface: eth0}]\n"))
	f.Add([]byte("frontends: &a [{name: x}]\nbackends: *a\n"))
	f.Add([]byte("maxconn: lots\n"))
	f.Add([]byte(aliasBomb(120)))
	f.Add([]byte(minimal + "---\nfrontends: []\n"))
	f.Add([]byte(minimal + "...\n]]]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		// Work is bounded by the file, not by how its aliases repeat it.
		walkBudget(t, data)
		cfg, err := Parse(data)
		if err != nil {
			checkErrors(t, data, err)
			return
		}
		checkConfig(t, cfg)
		again, err := Parse(data)
		if err != nil {
			t.Fatalf("accepted once, refused the second time: %v", err)
		}
		if diff := cmp.Diff(cfg, again, cmpopts.EquateComparable(netip.Addr{}, netip.AddrPort{}, netip.Prefix{})); diff != "" {
			t.Fatalf("parsing the same bytes twice differs (-first +second):\n%s", diff)
		}
	})
}

// checkErrors asserts a refusal is an Errors list whose every entry points
// the operator somewhere: a field path, a line, or a YAML syntax message.
func checkErrors(t *testing.T, data []byte, err error) {
	t.Helper()
	var es Errors
	if !errors.As(err, &es) || len(es) == 0 {
		t.Fatalf("error is not a non-empty Errors: %T %v", err, err)
	}
	// YAML breaks lines at \r\n, \r and \n alike (a lone \r starts a line).
	lines := bytes.Count(bytes.ReplaceAll(data, []byte("\r\n"), []byte("\n")), []byte("\n")) +
		bytes.Count(data, []byte("\r")) - bytes.Count(data, []byte("\r\n")) + 1
	for _, e := range es {
		if e.Err == nil || strings.TrimSpace(e.Err.Error()) == "" {
			t.Fatalf("an error without a message: %+v", e)
		}
		if e.Line < 0 || e.Line > lines {
			t.Fatalf("error %q at line %d, outside the input's %d lines", e, e.Line, lines)
		}
		msg := e.Error()
		fileLevel := strings.HasPrefix(msg, "parse yaml") || strings.HasPrefix(msg, "config is empty")
		if e.Path == "" && e.Line == 0 && !fileLevel {
			t.Fatalf("error %q names neither a field nor a line", msg)
		}
	}
}

// checkConfig asserts what the rest of halb relies on from a parsed config.
func checkConfig(t *testing.T, cfg *Config) {
	t.Helper()
	if len(cfg.Frontends) == 0 || len(cfg.Backends) == 0 || cfg.Fingerprint == "" {
		t.Fatalf("accepted a config without frontends, backends or fingerprint: %+v", cfg)
	}
	if cfg.MaxConn < 0 {
		t.Fatalf("negative maxconn %d accepted", cfg.MaxConn)
	}
	to := cfg.Timeouts
	if to.Connect < time.Millisecond || to.ClientIdle < time.Second || to.ServerIdle < time.Second || to.Drain < 0 {
		t.Fatalf("timeouts below their minimums accepted: %+v", to)
	}
	binds := map[string]bool{}
	for _, fe := range cfg.Frontends {
		if _, ok := cfg.Backend(fe.Backend); !ok {
			t.Fatalf("frontend %q points at missing backend %q", fe.Name, fe.Backend)
		}
		if !fe.Bind.IsValid() || fe.Bind.Port() == 0 || binds[fe.Bind.String()] {
			t.Fatalf("frontend %q has an unusable or duplicate bind %v", fe.Name, fe.Bind)
		}
		binds[fe.Bind.String()] = true
	}
	for _, b := range cfg.Backends {
		if len(b.Servers) == 0 || b.Retries < 0 {
			t.Fatalf("backend %q: %d servers, %d retries", b.Name, len(b.Servers), b.Retries)
		}
		h := b.Health
		if h.Fall < 1 || h.Rise < 1 || h.Timeout > h.Interval || h.Interval <= 0 || h.Interval > MaxDuration || !(h.Jitter >= 0 && h.Jitter <= 1) {
			t.Fatalf("backend %q: unusable health check %+v", b.Name, h)
		}
		for _, s := range b.Servers {
			if !s.Address.IsValid() || s.Address.Port() == 0 || s.Weight < 1 || s.Weight > 256 {
				t.Fatalf("backend %q: unusable server %+v", b.Name, s)
			}
		}
	}
	if len(cfg.VIPs) > 0 && cfg.Cluster == nil {
		t.Fatal("VIPs accepted without a cluster")
	}
	if c := cfg.Cluster; c != nil {
		if len(c.Nodes) == 0 || c.Port < 1 || c.Port > 65535 || (c.KeyFile == "") == !c.InsecureGossip {
			t.Fatalf("unusable cluster accepted: %+v", c)
		}
		for _, n := range c.Nodes {
			if !n.Address.IsValid() || CheckHostAddress(n.Address) != nil || n.Priority < 0 || n.Priority > 1000 || CheckInterface(n.Interface) != nil {
				t.Fatalf("unusable node accepted: %+v", n)
			}
		}
	}
	for _, v := range cfg.VIPs {
		if !v.Address.IsValid() || v.GARPCount < 1 || CheckInterface(v.Interface) != nil {
			t.Fatalf("unusable VIP accepted: %+v", v)
		}
	}
}
