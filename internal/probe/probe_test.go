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
	"sync"
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

// timeline records the end times of a run's successful attempts, through
// Options.Succeeded, so a test can work out the run's gaps itself.
type timeline struct {
	mu    sync.Mutex
	at    []time.Time
	added chan time.Time // every success, for a test that waits for one
}

func newTimeline() *timeline { return &timeline{added: make(chan time.Time, 1000)} }

func (l *timeline) succeeded(at time.Time) {
	l.mu.Lock()
	l.at = append(l.at, at)
	l.mu.Unlock()
	select {
	case l.added <- at:
	default: // nobody is waiting for this many
	}
}

// checkGap fails t unless r's longest gap is the longest stretch without a
// success on the timeline, counted from the run's start to its end, and
// returns the stretch (start, end) that holds the first failure, if any.
func (l *timeline) checkGap(t *testing.T, r Report) (from, to time.Time) {
	t.Helper()
	l.mu.Lock()
	edges := append(append([]time.Time{r.Start}, l.at...), r.End)
	l.mu.Unlock()
	if len(edges)-2 != r.Successes {
		t.Fatalf("report %v: %d successes, the callback saw %d", r, r.Successes, len(edges)-2)
	}
	var longest time.Duration
	var longestFrom time.Time
	for i := 1; i < len(edges); i++ {
		if d := edges[i].Sub(edges[i-1]); d > longest {
			longest, longestFrom = d, edges[i-1]
		}
		if !r.FirstFailure.IsZero() && edges[i-1].Before(r.FirstFailure) && !edges[i].Before(r.FirstFailure) {
			from, to = edges[i-1], edges[i]
		}
	}
	if r.LongestGap != longest || !r.GapStart.Equal(longestFrom) {
		t.Errorf("longest gap %s from %s; the successes say %s from %s", r.LongestGap, r.GapStart, longest, longestFrom)
	}
	return from, to
}

func TestHealthyTargetNamesResponder(t *testing.T) {
	_, api, talos := startCP(t, "127.0.0.31")
	for _, tc := range []struct {
		mode   string
		target netip.AddrPort
		named  bool
	}{{ModeHTTPS, api, true}, {ModeTLS, talos, true}, {ModeTCP, api, false}} {
		t.Run(tc.mode, func(t *testing.T) {
			// Five attempts, each with time to spare: a loaded machine
			// makes them slow, not failed.
			const want = 5
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			l, seen := newTimeline(), 0
			r := Run(ctx, Options{Target: tc.target, Mode: tc.mode, ResponderHeader: fakecp.NameHeader, Timeout: 5 * time.Second,
				Succeeded: func(at time.Time) {
					l.succeeded(at)
					if seen++; seen == want {
						cancel()
					}
				}})
			if r.Attempts != want || r.Failures != 0 || r.Successes != r.Attempts {
				t.Fatalf("report %v: want %d attempts and no failures", r, want)
			}
			if tc.named && r.Responders["cp7"] != r.Successes {
				t.Errorf("responders %v, want cp7 for all %d successes", r.Responders, r.Successes)
			}
			l.checkGap(t, r)
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
	if r.LongestGap != r.End.Sub(r.Start) || !r.GapStart.Equal(r.Start) || r.FirstFailure.IsZero() || r.LastFailure.Before(r.FirstFailure) {
		t.Errorf("report %v (%s to %s, gap from %s): want a gap spanning the run and failure times", r, r.Start, r.End, r.GapStart)
	}
}

func TestOutageIsMeasured(t *testing.T) {
	cp, api, _ := startCP(t, "127.0.0.33")
	served := func() int { // requests the server has answered, 200 or 500
		st, err := cp.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, v := range st.API.Authenticated {
			n += v
		}
		return n
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l := newTimeline()
	done := make(chan Report, 1)
	go func() {
		done <- Run(ctx, Options{Target: api, Mode: ModeHTTPS, Timeout: 5 * time.Second, Succeeded: l.succeeded})
	}()

	// The outage is the stimulus: it begins after a success, lasts until
	// the server has answered a few requests with 500 (counting from after
	// it began, so none answered before), and ends before a success.
	support.Receive(t, l.added, 10*time.Second, "a success before the outage")
	if err := cp.FailHealth(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	failedFrom := served()
	support.WaitUntil(t, 10*time.Second, func() bool { return served() >= failedFrom+3 }, "requests answered during the outage")
	healed := time.Now()
	if err := cp.FailHealth(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	for at := support.Receive(t, l.added, 10*time.Second, "a success after the outage"); at.Before(healed); {
		at = support.Receive(t, l.added, 10*time.Second, "a success after the outage")
	}
	cancel()
	r := <-done

	if r.Failures < 2 || r.Errors["status 500"] != r.Failures || r.Successes < 2 {
		t.Fatalf("report %v: want 500s, and only those, during the outage and successes around it", r)
	}
	// The failures lie in one stretch without a success, which ends only
	// after the outage did and is no longer than the longest gap.
	from, to := l.checkGap(t, r)
	if r.LastFailure.After(to) || to.Before(healed) {
		t.Errorf("failures from %s to %s, healed at %s: want them all in the stretch %s to %s, ending after the heal",
			r.FirstFailure, r.LastFailure, healed, from, to)
	}
	if to.Sub(from) > r.LongestGap {
		t.Errorf("longest gap %s shorter than the outage's %s", r.LongestGap, to.Sub(from))
	}
}

// Attempts do not overlap: each against a server that never answers costs
// a whole timeout before the next begins.
func TestBlackholeCostsTimeoutPerAttempt(t *testing.T) {
	cp, api, _ := startCP(t, "127.0.0.34")
	if err := cp.SetState(context.Background(), fakecp.Blackhole); err != nil {
		t.Fatal(err)
	}
	const timeout = 100 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 6*timeout)
	defer cancel()
	r := Run(ctx, Options{Target: api, Mode: ModeTLS, Timeout: timeout})
	if r.Successes != 0 || r.Attempts < 2 || r.Errors["timeout"] != r.Attempts {
		t.Fatalf("report %v: want at least two attempts that all time out", r)
	}
	if most := int(r.End.Sub(r.Start)/timeout) + 1; r.Attempts > most {
		t.Errorf("report %v: %d attempts in %s, at most %d fit without overlap", r, r.Attempts, r.End.Sub(r.Start), most)
	}
	for i := 1; i < len(r.Failed); i++ {
		if d := r.Failed[i].At.Sub(r.Failed[i-1].At); d < timeout {
			t.Errorf("attempts %d and %d ended %s apart, less than the %s timeout", i-1, i, d, timeout)
		}
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
