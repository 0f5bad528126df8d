package haproxy

import (
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"halb/internal/config"
)

const seedPath = "../../testdata/seed-haproxy.cfg"

// netipEqual compares netip values by ==, as their fields are unexported.
func netipEqual() cmp.Option {
	return cmpopts.EquateComparable(netip.Addr{}, netip.AddrPort{}, netip.Prefix{})
}

func seedNodes(t *testing.T) []Node {
	t.Helper()
	var nodes []Node
	for _, s := range []string{"lb1=192.168.66.151:200", "lb2=192.168.66.152:100"} {
		n, err := ParseNode(s)
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	return nodes
}

// importText imports cfg and parses the result with halb's own config
// loader, failing the test if either step fails.
func importText(t *testing.T, cfg string, opts Options) (*config.Config, []Warning, string) {
	t.Helper()
	res, err := Import([]byte(cfg), opts)
	if err != nil {
		t.Fatalf("import: %v", err)
	}
	c, err := config.Parse(res.YAML)
	if err != nil {
		t.Fatalf("config.Parse of the imported YAML: %v\n%s", err, res.YAML)
	}
	return c, res.Warnings, string(res.YAML)
}

// warningAt returns the warnings at line whose text contains want.
func warningAt(ws []Warning, line int, want string) bool {
	for _, w := range ws {
		if w.Line == line && strings.Contains(w.Format("f"), want) {
			return true
		}
	}
	return false
}

func TestImportSeedMatchesTalosExample(t *testing.T) {
	data, err := os.ReadFile(seedPath)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Import(data, Options{Source: "seed-haproxy.cfg", Nodes: seedNodes(t)})
	if err != nil {
		t.Fatalf("import seed: %v", err)
	}
	got, err := config.Parse(res.YAML)
	if err != nil {
		t.Fatalf("config.Parse: %v\n%s", err, res.YAML)
	}
	// The hand-written example for the seed topology is what an operator
	// should end up with: same servers, checks, ports, cluster and VIP.
	want, err := config.Load("../../deploy/examples/talos.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want.Backends, got.Backends, netipEqual()); diff != "" {
		t.Errorf("backends (-talos.yaml +imported):\n%s", diff)
	}
	if diff := cmp.Diff(want.Frontends, got.Frontends, netipEqual()); diff != "" {
		t.Errorf("frontends (-talos.yaml +imported):\n%s", diff)
	}
	if diff := cmp.Diff(want.VIPs, got.VIPs, netipEqual()); diff != "" {
		t.Errorf("vips (-talos.yaml +imported):\n%s", diff)
	}
	if diff := cmp.Diff(want.Cluster.Nodes, got.Cluster.Nodes, netipEqual()); diff != "" {
		t.Errorf("cluster nodes (-talos.yaml +imported):\n%s", diff)
	}
	if got.Cluster.KeyFile != "/etc/halb/gossip.key" {
		t.Errorf("cluster.key_file = %q", got.Cluster.KeyFile)
	}
	// The seed's defaults: timeout connect 5000, client/server 50000 (ms).
	wantT := config.Timeouts{Connect: 5 * time.Second, ClientIdle: 50 * time.Second, ServerIdle: 50 * time.Second, Drain: config.DefaultDrain}
	if diff := cmp.Diff(wantT, got.Timeouts); diff != "" {
		t.Errorf("timeouts (-want +got):\n%s", diff)
	}
	if !strings.HasPrefix(string(res.YAML), "# halb config imported from seed-haproxy.cfg") {
		t.Errorf("no header naming the source:\n%s", res.YAML)
	}
	// A stock Talos control plane rejects anonymous checks: both backends
	// must check with credentials, or every server would be marked down.
	// Asserted here as well as against talos.yaml, so that the two cannot
	// drift back together.
	k8s, talos := got.Backends[0].Health, got.Backends[1].Health
	if k8s.Type != config.CheckHTTPS || k8s.Path != "/readyz" || k8s.TLS.Kubeconfig != "/etc/halb/health.kubeconfig" {
		t.Errorf("k8s_controlplane check = %+v, want https /readyz with tls.kubeconfig", k8s)
	}
	if talos.Type != config.CheckTLS || talos.TLS.Talosconfig != "/etc/halb/health.talosconfig" {
		t.Errorf("talos_controlplane check = %+v, want tls with tls.talosconfig", talos)
	}
	for _, want := range []string{
		"#   /etc/halb/health.kubeconfig ",
		"#   /etc/halb/health.talosconfig  talosctl -n <control plane> config new /etc/halb/health.talosconfig --roles os:reader",
		"docs/getting-started-talos.md#check-credentials",
		"--probe",
		"/healthz became /readyz",
	} {
		if !strings.Contains(string(res.YAML), want) {
			t.Errorf("output lacks %q:\n%s", want, res.YAML)
		}
	}

	var all strings.Builder
	for _, w := range res.Warnings {
		all.WriteString(w.Format("seed-haproxy.cfg") + "\n")
	}
	for _, c := range []struct {
		line int
		want string
	}{
		{4, "chroot"},
		{5, "stats socket"},
		{9, "daemon"},
		{14, "ssl-default-bind-ciphers"},
		{21, "option httplog"},
		{26, "errorfile 400"},
		{32, "errorfile 504"},
		{37, "imported as the stats section"},
		{43, "password was NOT carried over"},
		{43, "now: the bcrypt logins in /etc/halb/stats.users"},
		{53, "option tcplog"},
		{66, "ssl-hello-chk (line 69)"},
		{66, "--anonymous-auth=false"},
		{66, "[was: GET /healthz; now: GET /readyz]"},
		{76, "TLS handshake"},
		{76, "no /healthz"},
		{79, "Talos OS CA"},
		{79, "config new /etc/halb/health.talosconfig --roles os:reader"},
	} {
		if !warningAt(res.Warnings, c.line, c.want) {
			t.Errorf("no warning at line %d mentioning %q; warnings:\n%s", c.line, c.want, all.String())
		}
	}
	for _, out := range []string{string(res.YAML), all.String()} {
		if strings.Contains(out, "your-secure-password") {
			t.Fatalf("the stats password leaked:\n%s", out)
		}
	}
	// The stats page becomes halb's, on the same address with the same
	// allow-list, its logins in a file the operator fills.
	wantStats := &config.Stats{
		Bind:         netip.MustParseAddrPort("192.168.66.160:9600"),
		Allow:        []netip.Prefix{netip.MustParsePrefix("172.16.25.0/24")},
		Refresh:      10 * time.Second,
		PasswordFile: "/etc/halb/stats.users",
	}
	if diff := cmp.Diff(wantStats, got.Stats, netipEqual()); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
	if !strings.Contains(string(res.YAML), "halb passwd --user admin --line >> /etc/halb/stats.users") {
		t.Errorf("output does not say how to make the stats logins:\n%s", res.YAML)
	}
	if got.Cluster.KeyringFile != "/var/lib/halb/gossip.keyring" {
		t.Errorf("cluster.keyring_file = %q, want the unit's StateDirectory", got.Cluster.KeyringFile)
	}
}

func TestImportSeedWithoutNodes(t *testing.T) {
	data, err := os.ReadFile(seedPath)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Import(data, Options{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse(res.YAML)
	if err != nil {
		t.Fatalf("config.Parse: %v", err)
	}
	if c.Cluster != nil || len(c.VIPs) != 0 {
		t.Errorf("invented a cluster %+v or VIPs %v without --node", c.Cluster, c.VIPs)
	}
	if c.Frontends[0].Bind != netip.MustParseAddrPort("192.168.66.160:6443") {
		t.Errorf("frontend bind = %s, want the VIP", c.Frontends[0].Bind)
	}
	if !warningAt(res.Warnings, 0, "--node lb1=192.168.66.151 --node lb2=192.168.66.152") {
		t.Errorf("no warning explaining --node: %v", res.Warnings)
	}
}

func TestImportVIPInterface(t *testing.T) {
	data, err := os.ReadFile(seedPath)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Import(data, Options{VIPInterface: "bond0", Nodes: seedNodes(t)[:1]})
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse(res.YAML)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.VIPs) != 1 || c.VIPs[0].Interface != "bond0" {
		t.Errorf("vips = %+v, want one on bond0", c.VIPs)
	}
}

func TestParseServer(t *testing.T) {
	i := func(n int) *int { return &n }
	d := func(x time.Duration) *time.Duration { return &x }
	yes := true
	tests := []struct {
		line string
		want serverParams
		drop []string
	}{
		{"server a 10.0.0.1:6443", serverParams{}, nil},
		{"server a 10.0.0.1:6443 check inter 2000 fall 3 rise 2 weight 10 backup",
			serverParams{check: &yes, inter: d(2 * time.Second), fall: i(3), rise: i(2), weight: i(10), backup: &yes}, nil},
		{"server a 10.0.0.1:6443 check inter 2s", serverParams{check: &yes, inter: d(2 * time.Second)}, nil},
		{"server a 10.0.0.1:6443 check inter 500ms fall 1", serverParams{check: &yes, inter: d(500 * time.Millisecond), fall: i(1)}, nil},
		{"server a 10.0.0.1:6443 check-ssl verify none", serverParams{checkSSL: &yes, verify: "none"}, nil},
		{"server a 10.0.0.1:6443 check send-proxy maxconn 100", serverParams{check: &yes}, []string{"send-proxy", "maxconn 100"}},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			s, drop, err := parseServer(directive{line: 7, args: strings.Fields(tt.line)})
			if err != nil {
				t.Fatal(err)
			}
			if s.name != "a" || s.addr != netip.MustParseAddrPort("10.0.0.1:6443") {
				t.Errorf("name %q address %s", s.name, s.addr)
			}
			if diff := cmp.Diff(tt.want, s.params, cmp.AllowUnexported(serverParams{})); diff != "" {
				t.Errorf("params (-want +got):\n%s", diff)
			}
			var gotDrop []string
			for _, x := range drop {
				gotDrop = append(gotDrop, x.option)
			}
			if diff := cmp.Diff(tt.drop, gotDrop); diff != "" {
				t.Errorf("dropped options (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseServerErrors(t *testing.T) {
	for _, line := range []string{
		"server a",
		"server a cp1.example.com:6443",
		"server a 10.0.0.1",
		"server a 10.0.0.1:0",
		"server a 10.0.0.1:6443-6445",
		"server a 0.0.0.0:6443",
		"server a 224.0.0.1:6443",
		"server a 255.255.255.255:6443",
		"server a 10.0.0.1:6443 inter",
		"server a 10.0.0.1:6443 inter fast",
		"server a 10.0.0.1:6443 fall -1",
		"server a 10.0.0.1:6443 weight x",
	} {
		if _, _, err := parseServer(directive{args: strings.Fields(line)}); err == nil {
			t.Errorf("%q: no error", line)
		}
	}
}

func TestParseTime(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"5000", 5 * time.Second},
		{"0", 0},
		{"500ms", 500 * time.Millisecond},
		{"250us", 250 * time.Microsecond},
		{"5s", 5 * time.Second},
		{"10m", 10 * time.Minute},
		{"1h", time.Hour},
		{"1d", 24 * time.Hour},
	}
	for _, tt := range tests {
		got, err := parseTime(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("parseTime(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "s", "5 s", "5sec", "-5", "1.5s", "99999999999999999999", "999999d"} {
		if _, err := parseTime(bad); err == nil {
			t.Errorf("parseTime(%q): no error", bad)
		}
	}
}

// tcpPair is a minimal TCP frontend and backend to which tests add lines.
func tcpPair(backendLines ...string) string {
	return "frontend fe\n  mode tcp\n  bind 10.1.1.10:6443\n  default_backend be\n" +
		"backend be\n  mode tcp\n  " + strings.Join(backendLines, "\n  ") + "\n"
}

func TestBalance(t *testing.T) {
	tests := []struct {
		line string
		want config.Balance
		warn string
	}{
		{"", config.RoundRobin, ""},
		{"balance roundrobin", config.RoundRobin, ""},
		{"balance leastconn", config.LeastConn, ""},
		{"balance source", config.Source, ""},
		{"balance static-rr", config.RoundRobin, "roundrobin"},
		{"balance uri", config.RoundRobin, "now: balance roundrobin"},
		{"balance hdr(host)", config.RoundRobin, "now: balance roundrobin"},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			c, ws, _ := importText(t, tcpPair(tt.line, "server s1 10.1.1.1:6443 check"), Options{})
			if got := c.Backends[0].Balance; got != tt.want {
				t.Errorf("balance = %s, want %s", got, tt.want)
			}
			warned := warningAt(ws, 7, "balance")
			if tt.warn != "" && !warningAt(ws, 7, tt.warn) {
				t.Errorf("no warning at line 7 with %q: %v", tt.warn, ws)
			}
			if tt.warn == "" && warned {
				t.Errorf("unexpected balance warning: %v", ws)
			}
		})
	}
}

// The check credentials the importer writes for Talos-looking backends.
var (
	kubeTLS  = config.TLSOptions{Kubeconfig: "/etc/halb/health.kubeconfig"}
	talosTLS = config.TLSOptions{Talosconfig: "/etc/halb/health.talosconfig"}
)

func TestHealthMapping(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
		want  config.HealthCheck
		warn  string // expected in some warning
	}{
		{"no option: tcp", []string{"server s1 10.1.1.1:6443 check"},
			config.HealthCheck{Type: config.CheckTCP}, ""},
		{"ssl-hello-chk alone: tls", []string{"option ssl-hello-chk", "server s1 10.1.1.1:6443 check"},
			config.HealthCheck{Type: config.CheckTLS}, ""},
		{"check-ssl alone: tls", []string{"server s1 10.1.1.1:6443 check check-ssl"},
			config.HealthCheck{Type: config.CheckTLS}, ""},
		{"httpchk alone: http", []string{"option httpchk GET /ready", "server s1 10.1.1.1:8080 check"},
			config.HealthCheck{Type: config.CheckHTTP, Path: "/ready", ExpectStatus: []int{200}}, ""},
		{"httpchk with check-ssl on 8443: https as written", []string{"option httpchk GET /healthz", "http-check expect status 204", "server s1 10.1.1.1:8443 check check-ssl verify none"},
			config.HealthCheck{Type: config.CheckHTTPS, Path: "/healthz", ExpectStatus: []int{204}}, ""},
		{"httpchk with check-ssl on 6443: /readyz with a kubeconfig", []string{"option httpchk GET /healthz", "http-check expect status 204", "server s1 10.1.1.1:6443 check check-ssl verify none"},
			config.HealthCheck{Type: config.CheckHTTPS, Path: "/readyz", ExpectStatus: []int{204}, TLS: kubeTLS}, "was: GET /healthz; now: GET /readyz"},
		{"httpchk uri only", []string{"option httpchk /livez", "server s1 10.1.1.1:6443 check ssl"},
			config.HealthCheck{Type: config.CheckHTTPS, Path: "/readyz", ExpectStatus: []int{200}, TLS: kubeTLS}, "does not encrypt traffic"},
		{"httpchk of another path on 6443 keeps it", []string{"option httpchk GET /version", "server s1 10.1.1.1:6443 check check-ssl"},
			config.HealthCheck{Type: config.CheckHTTPS, Path: "/version", ExpectStatus: []int{200}, TLS: kubeTLS}, "--anonymous-auth=false"},
		{"http-check send overrides", []string{"option httpchk", "http-check send meth GET uri /readyz", "server s1 10.1.1.1:6443 check check-ssl"},
			config.HealthCheck{Type: config.CheckHTTPS, Path: "/readyz", ExpectStatus: []int{200}, TLS: kubeTLS}, "--anonymous-auth=false"},
		{"httpchk + ssl-hello-chk on 6443: https /readyz with a kubeconfig", []string{"option httpchk GET /healthz", "option ssl-hello-chk", "server s1 10.1.1.1:6443 check"},
			config.HealthCheck{Type: config.CheckHTTPS, Path: "/readyz", ExpectStatus: []int{200}, TLS: kubeTLS}, "an HTTPS GET"},
		{"httpchk + ssl-hello-chk on 8443: https as written", []string{"option httpchk GET /healthz", "option ssl-hello-chk", "server s1 10.1.1.1:8443 check"},
			config.HealthCheck{Type: config.CheckHTTPS, Path: "/healthz", ExpectStatus: []int{200}}, "an HTTPS GET"},
		{"6443 mixed with another port: generic", []string{"option httpchk GET /healthz", "server s1 10.1.1.1:6443 check check-ssl", "server s2 10.1.1.2:8443 check check-ssl"},
			config.HealthCheck{Type: config.CheckHTTPS, Path: "/healthz", ExpectStatus: []int{200}}, ""},
		{"ca-file replaced by the kubeconfig", []string{"option httpchk GET /healthz", "server s1 10.1.1.1:6443 check check-ssl verify required ca-file /etc/ssl/k8s.pem"},
			config.HealthCheck{Type: config.CheckHTTPS, Path: "/readyz", ExpectStatus: []int{200}, TLS: kubeTLS}, "CA in /etc/halb/health.kubeconfig"},
		{"ssl-hello-chk on 6443 stays a handshake", []string{"option ssl-hello-chk", "server s1 10.1.1.1:6443 check"},
			config.HealthCheck{Type: config.CheckTLS}, "consider type: https, path: /readyz"},
		{"httpchk + ssl-hello-chk on 50000: tls with a talosconfig", []string{"option httpchk GET /healthz", "option ssl-hello-chk", "server s1 10.1.1.1:50000 check"},
			config.HealthCheck{Type: config.CheckTLS, TLS: talosTLS}, "TLS handshake"},
		{"ssl-hello-chk on 50000: tls with a talosconfig", []string{"option ssl-hello-chk", "server s1 10.1.1.1:50000 check"},
			config.HealthCheck{Type: config.CheckTLS, TLS: talosTLS}, "Talos OS CA"},
		{"tcp on 50000 stays tcp", []string{"server s1 10.1.1.1:50000 check"},
			config.HealthCheck{Type: config.CheckTCP}, ""},
		{"tcp-check last wins", []string{"option httpchk GET /healthz", "option tcp-check", "server s1 10.1.1.1:6443 check"},
			config.HealthCheck{Type: config.CheckTCP}, ""},
		{"server inter/fall/rise", []string{"server s1 10.1.1.1:6443 check inter 5s fall 5 rise 4"},
			config.HealthCheck{Type: config.CheckTCP, Interval: 5 * time.Second, Fall: 5, Rise: 4}, ""},
		{"default-server params", []string{"default-server inter 3000 fall 2", "server s1 10.1.1.1:6443 check rise 1"},
			config.HealthCheck{Type: config.CheckTCP, Interval: 3 * time.Second, Fall: 2, Rise: 1}, ""},
		{"short inter shortens the probe timeout", []string{"server s1 10.1.1.1:6443 check inter 200"},
			config.HealthCheck{Type: config.CheckTCP, Interval: 200 * time.Millisecond, Timeout: 200 * time.Millisecond}, ""},
		{"inter over halb's maximum", []string{"server s1 10.1.1.1:6443 check inter 2d"},
			config.HealthCheck{Type: config.CheckTCP, Interval: config.MaxDuration}, "at least every 24h"},
		{"timeout check", []string{"timeout check 300ms", "server s1 10.1.1.1:6443 check"},
			config.HealthCheck{Type: config.CheckTCP, Timeout: 300 * time.Millisecond}, ""},
		{"unchecked servers", []string{"server s1 10.1.1.1:6443"},
			config.HealthCheck{Type: config.CheckTCP}, "HAProxy never probed"},
		{"non-GET method", []string{"option httpchk HEAD /healthz", "server s1 10.1.1.1:80 check"},
			config.HealthCheck{Type: config.CheckHTTP, Path: "/healthz", ExpectStatus: []int{200}}, "GET, not HEAD"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, ws, _ := importText(t, tcpPair(tt.lines...), Options{})
			got := c.Backends[0].Health
			want := tt.want
			if want.Interval == 0 {
				want.Interval = 2 * time.Second
			}
			if want.Timeout == 0 {
				want.Timeout = config.DefaultCheckTimeout
			}
			if want.Fall == 0 {
				want.Fall, want.Rise = 3, 2
			}
			want.Jitter = config.DefaultJitter
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("health (-want +got):\n%s", diff)
			}
			if tt.warn != "" && !warningAt(ws, lineOf(ws, tt.warn), tt.warn) {
				t.Errorf("no warning with %q: %v", tt.warn, ws)
			}
		})
	}
}

func lineOf(ws []Warning, want string) int {
	for _, w := range ws {
		if strings.Contains(w.Format("f"), want) {
			return w.Line
		}
	}
	return -1
}

func TestServersCarriedOver(t *testing.T) {
	c, ws, _ := importText(t, tcpPair(
		"server s1 10.1.1.1:6443 check weight 10",
		"server s2 10.1.1.2:6443 check backup",
		"server s3 10.1.1.3:6443 check disabled",
		"server s4 [fd00::4]:6443 check weight 0",
	), Options{})
	want := []config.Server{
		{Name: "s1", Address: netip.MustParseAddrPort("10.1.1.1:6443"), Weight: 10},
		{Name: "s2", Address: netip.MustParseAddrPort("10.1.1.2:6443"), Weight: 1, Backup: true},
		{Name: "s4", Address: netip.MustParseAddrPort("[fd00::4]:6443"), Weight: 1},
	}
	if diff := cmp.Diff(want, c.Backends[0].Servers, netipEqual()); diff != "" {
		t.Errorf("servers (-want +got):\n%s", diff)
	}
	if !warningAt(ws, 9, "disabled") || !warningAt(ws, 10, "weight 0") {
		t.Errorf("missing disabled/weight warnings: %v", ws)
	}
}

func TestTimeouts(t *testing.T) {
	cfg := "defaults\n  mode tcp\n  timeout connect 3s\n  timeout client 1h\n  timeout server 20m\n" + tcpPair("timeout connect 4500", "server s1 10.1.1.1:6443 check")
	c, ws, _ := importText(t, cfg, Options{})
	want := config.Timeouts{Connect: 4500 * time.Millisecond, ClientIdle: time.Hour, ServerIdle: 20 * time.Minute, Drain: config.DefaultDrain}
	if diff := cmp.Diff(want, c.Timeouts); diff != "" {
		t.Errorf("timeouts (-want +got):\n%s", diff)
	}
	for _, w := range ws {
		if w.Line > 0 {
			t.Errorf("unexpected warning: %s", w.Format("f"))
		}
	}

	// A tunnel timeout governs established TCP connections in HAProxy.
	cfg = "defaults\n  timeout client 30s\n  timeout server 30s\n  timeout tunnel 1h\n" + tcpPair("server s1 10.1.1.1:6443")
	c, ws, _ = importText(t, cfg, Options{})
	if c.Timeouts.ClientIdle != time.Hour || c.Timeouts.ServerIdle != time.Hour {
		t.Errorf("idle timeouts = %v/%v, want the tunnel timeout 1h", c.Timeouts.ClientIdle, c.Timeouts.ServerIdle)
	}
	if !warningAt(ws, 4, "timeout tunnel") {
		t.Errorf("no tunnel warning: %v", ws)
	}

	// Sub-second idle timeouts are raised to halb's minimum.
	cfg = "defaults\n  timeout client 100\n" + tcpPair("server s1 10.1.1.1:6443")
	c, ws, _ = importText(t, cfg, Options{})
	if c.Timeouts.ClientIdle != time.Second || !warningAt(ws, 2, "at least 1s") {
		t.Errorf("client_idle = %v, warnings %v", c.Timeouts.ClientIdle, ws)
	}

	// Days-long ones are lowered to halb's maximum, not refused.
	cfg = "defaults\n  timeout connect 2d\n  timeout client 3d\n" + tcpPair("server s1 10.1.1.1:6443")
	c, ws, _ = importText(t, cfg, Options{})
	if c.Timeouts.ClientIdle != config.MaxDuration || c.Timeouts.Connect != config.MaxDuration || !warningAt(ws, 3, "at most 24h") {
		t.Errorf("client_idle = %v, connect = %v, warnings %v", c.Timeouts.ClientIdle, c.Timeouts.Connect, ws)
	}
}

func TestMaxconn(t *testing.T) {
	cfg := "global\n  maxconn 4000\ndefaults\n  maxconn 300\n" + tcpPair("server s1 10.1.1.1:6443") +
		"frontend fe2\n  bind 10.1.1.10:50000\n  maxconn 50\n  default_backend be\n"
	c, _, _ := importText(t, cfg, Options{})
	if c.MaxConn != 4000 {
		t.Errorf("maxconn = %d, want 4000", c.MaxConn)
	}
	if c.Frontends[0].MaxConn != 300 || c.Frontends[1].MaxConn != 50 {
		t.Errorf("frontend maxconn = %d, %d; want 300 (defaults), 50", c.Frontends[0].MaxConn, c.Frontends[1].MaxConn)
	}
}

func TestHTTPModeSkipped(t *testing.T) {
	cfg := "defaults\n  mode http\n" +
		"frontend web\n  bind 10.1.1.10:80\n  default_backend webpool\n" +
		"backend webpool\n  server w1 10.1.1.5:80 check\n" +
		tcpPair("server s1 10.1.1.1:6443 check")
	c, ws, _ := importText(t, cfg, Options{})
	if len(c.Frontends) != 1 || c.Frontends[0].Name != "fe" || len(c.Backends) != 1 || c.Backends[0].Name != "be" {
		t.Errorf("imported %v / %v; want only the tcp pair", c.Frontends, c.Backends)
	}
	if !warningAt(ws, 3, "mode http (line 2, inherited from defaults)") || !warningAt(ws, 6, "halb proxies TCP only") {
		t.Errorf("no skip warnings for the http sections: %v", ws)
	}
}

func TestFrontendShapes(t *testing.T) {
	// Two bind lines, one with two addresses, become three frontends; a
	// tcp listen section becomes a frontend and a backend.
	cfg := "frontend fe\n  bind 10.1.1.10:6443\n  bind 10.1.1.11:6443,10.1.1.12:6443\n  default_backend be\n" +
		"backend be\n  server s1 10.1.1.1:6443 check\n" +
		"listen talos\n  bind 10.1.1.10:50000\n  server t1 10.1.1.1:50000 check\n"
	nodes := []Node{{Name: "lb1", Address: netip.MustParseAddr("10.1.1.2")}}
	c, ws, _ := importText(t, cfg, Options{Nodes: nodes})
	var names []string
	for _, f := range c.Frontends {
		names = append(names, f.Name+"@"+f.Bind.String()+"→"+f.Backend)
	}
	want := []string{"fe@10.1.1.10:6443→be", "fe_2@10.1.1.11:6443→be", "fe_3@10.1.1.12:6443→be", "talos@10.1.1.10:50000→talos"}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("frontends (-want +got):\n%s", diff)
	}
	var vips []string
	for _, v := range c.VIPs {
		vips = append(vips, v.Address.String())
	}
	if diff := cmp.Diff([]string{"10.1.1.10/24", "10.1.1.11/24", "10.1.1.12/24"}, vips); diff != "" {
		t.Errorf("vips (-want +got):\n%s", diff)
	}
	if !warningAt(ws, 3, "imported as frontend fe_2") {
		t.Errorf("no split warning: %v", ws)
	}
}

func TestSourceFilterWarning(t *testing.T) {
	cfg := "frontend fe\n  bind 10.1.1.10:6443\n  acl admins src 10.9.0.0/16\n  tcp-request connection reject if !admins\n  default_backend be\n" +
		"backend be\n  server s1 10.1.1.1:6443 check\n"
	_, ws, _ := importText(t, cfg, Options{})
	if !warningAt(ws, 4, "NOT carried over: halb has no source filter") {
		t.Errorf("a dropped source filter must be warned about: %v", ws)
	}
}

func TestSecretsMasked(t *testing.T) {
	cfg := "userlist admins\n  user bob password $6$hash\n  user eve insecure-password hunter2\n" +
		"listen stats\n  bind 10.1.1.10:9600\n  mode http\n  stats enable\n  stats auth bob:hunter2\n" +
		"frontend fe\n  mode tcp\n  stats auth eve:hunter2\n  bind 10.1.1.10:6443\n  default_backend be\n" +
		"backend be\n  server s1 10.1.1.1:6443 check\n"
	res, err := Import([]byte(cfg), Options{})
	if err != nil {
		t.Fatal(err)
	}
	var all strings.Builder
	all.Write(res.YAML)
	for _, w := range res.Warnings {
		all.WriteString(w.Format("f") + "\n")
	}
	if strings.Contains(all.String(), "hunter2") || strings.Contains(all.String(), "$6$hash") {
		t.Fatalf("a password leaked:\n%s", all.String())
	}
}

func TestImportErrors(t *testing.T) {
	tests := []struct {
		name  string
		cfg   string
		lines []int
	}{
		{"directive before any section", "  maxconn 10\n" + tcpPair("server s1 10.1.1.1:6443"), []int{1}},
		{"unclosed quote", tcpPair("server s1 10.1.1.1:6443", `option httpchk GET "/healthz`), []int{8}},
		{"unnamed frontend", "frontend\n  bind 10.1.1.10:6443\n", []int{1}},
		{"host name server", tcpPair("server s1 cp1.lan:6443 check"), []int{7}},
		{"bad inter and bad fall", tcpPair("server s1 10.1.1.1:6443 check inter soon", "server s2 10.1.1.2:6443 fall x"), []int{7, 8}},
		{"bad timeout", "defaults\n  timeout client 5 s\n" + tcpPair("server s1 10.1.1.1:6443"), []int{2}},
		{"missing backend", "frontend fe\n  bind 10.1.1.10:6443\n  default_backend nowhere\n", []int{3}},
		{"bad bind", "frontend fe\n  bind 10.1.1.10\n  default_backend be\nbackend be\n  server s1 10.1.1.1:6443\n", []int{2}},
		{"nothing in tcp mode", "defaults\n  mode http\nfrontend web\n  bind :80\n  default_backend b\nbackend b\n  server s 10.0.0.1:80\n", []int{0}},
		{"empty", "", []int{0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Import([]byte(tt.cfg), Options{})
			if diff := cmp.Diff(tt.lines, errorLines(t, err)); diff != "" {
				t.Errorf("error lines (-want +got):\n%s\n%v", diff, err)
			}
		})
	}
}

func TestParseNode(t *testing.T) {
	p := func(n int) *int { return &n }
	tests := []struct {
		in   string
		want Node
	}{
		{"lb1=192.168.66.151", Node{Name: "lb1", Address: netip.MustParseAddr("192.168.66.151")}},
		{"lb1=192.168.66.151:200", Node{Name: "lb1", Address: netip.MustParseAddr("192.168.66.151"), Priority: p(200)}},
		{"lb3=fd00::3", Node{Name: "lb3", Address: netip.MustParseAddr("fd00::3")}},
		{"lb3=[fd00::3]:50", Node{Name: "lb3", Address: netip.MustParseAddr("fd00::3"), Priority: p(50)}},
	}
	for _, tt := range tests {
		got, err := ParseNode(tt.in)
		if err != nil {
			t.Errorf("%q: %v", tt.in, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got, netipEqual()); diff != "" {
			t.Errorf("%q (-want +got):\n%s", tt.in, diff)
		}
	}
	for _, bad := range []string{"", "lb1", "=10.0.0.1", "lb1=", "lb1=host", "lb1=10.0.0.1:x", "lb1=10.0.0.1:1001"} {
		if _, err := ParseNode(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", 5 * time.Second: "5s", 90 * time.Second: "90s", 10 * time.Minute: "10m",
		2 * time.Hour: "2h", 1500 * time.Millisecond: "1500ms", 250 * time.Microsecond: "250µs",
	} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%v) = %q, want %q", d, got, want)
		}
		if back, err := time.ParseDuration(formatDuration(d)); err != nil || back != d {
			t.Errorf("%q does not parse back to %v", formatDuration(d), d)
		}
	}
}

// Text from the input that ends up in a YAML comment must not break the
// encoder: invalid UTF-8 there once made the import panic.
func TestCommentsTakeAnyBytes(t *testing.T) {
	talosPair := tcpPair("option httpchk GET /\xff", "option ssl-hello-chk", "server s1 10.1.1.1:50000 check")
	tests := []struct {
		name string
		cfg  string
		opts Options
	}{
		{"check path in the type note", talosPair, Options{}},
		{"source name in the line comments", tcpPair("server s1 10.1.1.1:6443 check"), Options{Source: "ha\xffproxy.cfg"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := Import([]byte(tt.cfg), tt.opts)
			if err != nil {
				t.Fatalf("import: %v", err)
			}
			if !utf8.Valid(res.YAML) {
				t.Fatalf("output is not UTF-8:\n%s", res.YAML)
			}
		})
	}
}
