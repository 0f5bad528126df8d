package probe

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"halb/test/fakecp"
	"halb/test/support"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func startCP(t *testing.T, ip string) (*fakecp.Client, netip.AddrPort, netip.AddrPort) {
	t.Helper()
	return startCPWith(t, ip, "")
}

func startCPWith(t *testing.T, ip, pki string) (*fakecp.Client, netip.AddrPort, netip.AddrPort) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "cp.sock")
	a := netip.MustParseAddrPort(ip + ":0")
	s := fakecp.New(fakecp.Options{Name: "cp7", HTTPS: []netip.AddrPort{a}, TLS: []netip.AddrPort{a}, ControlSocket: sock, PKIDir: pki},
		slog.New(slog.DiscardHandler))
	support.Go(t, s.Run).AwaitReady(t, s.Ready(), 5*time.Second)
	h, l := s.Addrs()
	return fakecp.NewClient(sock), h[0], l[0]
}

func TestHealthyTargetNamesResponder(t *testing.T) {
	_, api, talos := startCP(t, "127.0.0.31")
	for _, tc := range []struct {
		mode   string
		target netip.AddrPort
		named  bool
	}{{ModeHTTPS, api, true}, {ModeTLS, talos, true}, {ModeTCP, api, false}} {
		t.Run(tc.mode, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			r := Run(ctx, Options{Target: tc.target, Mode: tc.mode, ResponderHeader: fakecp.NameHeader})
			if r.Attempts < 5 || r.Failures != 0 || r.Successes != r.Attempts {
				t.Fatalf("report %v: want >= 5 attempts and no failures", r)
			}
			if tc.named && r.Responders["cp7"] != r.Successes {
				t.Errorf("responders %v, want cp7 for all %d successes", r.Responders, r.Successes)
			}
			if r.LongestGap > 200*time.Millisecond {
				t.Errorf("longest gap %s on a healthy target", r.LongestGap)
			}
		})
	}
}

func TestDeadTargetGapIsWholeRun(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.32:0")
	if err != nil {
		t.Fatal(err)
	}
	target := netip.MustParseAddrPort(ln.Addr().String())
	_ = ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	r := Run(ctx, Options{Target: target})
	if r.Successes != 0 || r.Failures == 0 || r.Errors["refused"] != r.Failures {
		t.Fatalf("report %v: want only refused failures", r)
	}
	if r.LongestGap < 190*time.Millisecond || r.FirstFailure.IsZero() || r.LastFailure.Before(r.FirstFailure) {
		t.Errorf("report %v: want a gap spanning the run and failure times", r)
	}
}

func TestOutageIsMeasured(t *testing.T) {
	cp, api, _ := startCP(t, "127.0.0.33")
	ctx, cancel := context.WithTimeout(context.Background(), 1200*time.Millisecond)
	defer cancel()
	done := make(chan Report, 1)
	go func() { done <- Run(ctx, Options{Target: api, Mode: ModeHTTPS}) }()

	// The outage is the stimulus under test, so its length is set by the clock.
	time.Sleep(300 * time.Millisecond)
	if err := cp.FailHealth(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond)
	if err := cp.FailHealth(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.LongestGap < 350*time.Millisecond || r.LongestGap > 800*time.Millisecond {
		t.Errorf("longest gap %s, want about 400ms: %v", r.LongestGap, r)
	}
	if r.Errors["status 500"] == 0 || r.Successes == 0 {
		t.Errorf("report %v: want 500s during the outage and successes around it", r)
	}
	if r.GapStart.Before(r.Start) || r.FirstFailure.Before(r.GapStart) {
		t.Errorf("gap start %s, first failure %s: the gap should begin at the last success before the first failure", r.GapStart, r.FirstFailure)
	}
}

func TestBlackholeCostsTimeoutPerAttempt(t *testing.T) {
	cp, api, _ := startCP(t, "127.0.0.34")
	if err := cp.SetState(context.Background(), fakecp.Blackhole); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 350*time.Millisecond)
	defer cancel()
	r := Run(ctx, Options{Target: api, Mode: ModeTLS, Timeout: 100 * time.Millisecond})
	if r.Successes != 0 || r.Errors["timeout"] < 2 || r.Attempts > 4 {
		t.Fatalf("report %v: want 2-4 attempts that all time out (attempts do not overlap)", r)
	}
}

// Against servers that authenticate, the probe succeeds only with the
// credentials it is given, and verifies the server with them.
func TestClientCredentials(t *testing.T) {
	pki := filepath.Join(t.TempDir(), "pki")
	if err := fakecp.WritePKI(pki, netip.MustParseAddr("127.0.0.35"), []netip.Addr{netip.MustParseAddr("127.0.0.35")}); err != nil {
		t.Fatal(err)
	}
	_, api, talos := startCPWith(t, "127.0.0.35", pki)
	creds := func(id fakecp.Identity) *tls.Config {
		c, err := fakecp.ClientTLS(pki, id)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	kubeCertTalosCA := creds(fakecp.KubeAdmin)
	kubeCertTalosCA.RootCAs = creds(fakecp.TalosAdmin).RootCAs
	for _, tc := range []struct {
		name   string
		mode   string
		target netip.AddrPort
		tls    *tls.Config
		ok     bool
		err    string
	}{
		{"https anonymous", ModeHTTPS, api, nil, false, "status 401"},
		{"https admin", ModeHTTPS, api, creds(fakecp.KubeAdmin), true, ""},
		{"tls anonymous", ModeTLS, talos, nil, false, "tls rejected"},
		{"tls with a kubernetes cert", ModeTLS, talos, kubeCertTalosCA, false, "tls rejected"},
		{"tls verifying with the kubernetes CA", ModeTLS, talos, creds(fakecp.KubeAdmin), false, "tls untrusted server"},
		{"tls talos admin", ModeTLS, talos, creds(fakecp.TalosAdmin), true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// One attempt, with time to spare: the outcome is under test,
			// not its speed on a loaded machine.
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			r := Run(ctx, Options{Target: tc.target, Mode: tc.mode, TLS: tc.tls, ResponderHeader: fakecp.NameHeader,
				Timeout: 5 * time.Second, Started: cancel})
			if tc.ok && (r.Failures != 0 || r.Responders["cp7"] != r.Successes || r.Successes == 0) {
				t.Errorf("report %v: want only successes answered by cp7", r)
			}
			if !tc.ok && (r.Successes != 0 || r.Failures == 0 || (tc.err != "" && r.Errors[tc.err] != r.Failures)) {
				t.Errorf("report %v: want only failures %s", r, tc.err)
			}
		})
	}
}

// TestResponderHeaderIsTheCallers: a probe names the answering server from
// the header its caller names, and from no header by default, so a real
// API server's headers are never mistaken for a name.
func TestResponderHeaderIsTheCallers(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("X-Served-By", "cp3")
		_, _ = io.WriteString(w, "healthy\n")
	}))
	defer srv.Close()
	target := netip.MustParseAddrPort(srv.Listener.Addr().String())
	for _, tc := range []struct {
		header string
		want   map[string]int
	}{
		{"", map[string]int{}},
		{"X-Served-By", map[string]int{"cp3": 1}},
		{"X-Other", map[string]int{}},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		r := Run(ctx, Options{Target: target, Mode: ModeHTTPS, ResponderHeader: tc.header, Timeout: 5 * time.Second,
			TLS: &tls.Config{InsecureSkipVerify: true}, Started: cancel}) //nolint:gosec // test server
		cancel()
		if r.Successes != 1 || !maps.Equal(r.Responders, tc.want) {
			t.Errorf("header %q: %v, responders %v; want 1 success answered by %v", tc.header, r, r.Responders, tc.want)
		}
	}
}
