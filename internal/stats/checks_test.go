package stats

import (
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"halb/internal/admin"
	"halb/internal/metrics"
	"halb/test/support"
)

// A check rejected for credentials and a backend in panic are spelled out
// on the dashboard, not shown as a plain "down".
func TestDashboardShowsRejectedCheckAndPanic(t *testing.T) {
	snap := healthyPair(time.Now())
	b := &snap.Backends[0]
	b.Panic, b.Healthy = true, false
	for i := range b.Servers {
		b.Servers[i].State = admin.StateDown
		b.Servers[i].LastCheckOK = false
		b.Servers[i].CheckFailure = admin.CheckRejected
		b.Servers[i].LastCheck = "401 Unauthorized: kube-apiserver rejects anonymous requests"
	}
	h := newServer(t, statsConfig(t), &fakeSource{snap: snap}).Handler()
	body := request(h, "127.0.0.1:1", "/", "admin", "s3cret").Body.String()
	for _, want := range []string{
		`data-verdict="degraded"`,
		`data-panic`,
		"PANIC: forwarding to servers down by checks",
		`data-check="rejected"><strong>check rejected: credentials:</strong> 401 Unauthorized`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("dashboard lacks %q", want)
		}
	}
}

// Without a separate metrics listener the start-up line says where the
// metrics are, not metrics_addr="invalid AddrPort" (W11).
func TestStartLogNamesListeners(t *testing.T) {
	cfg := statsConfig(t)
	cfg.Bind = netip.MustParseAddrPort("127.0.0.23:0")
	src := &fakeSource{snap: healthyPair(time.Now())}
	var buf support.Log
	s, err := New(cfg, src, metrics.New(src).Handler(), slog.New(slog.NewTextHandler(&buf, nil)))
	if err != nil {
		t.Fatal(err)
	}
	start(t, s)
	<-s.ready
	out := buf.String()
	if strings.Contains(out, "invalid") || !strings.Contains(out, "addr="+s.Addr().String()) || !strings.Contains(out, "same listener") {
		t.Fatalf("start-up log:\n%s", out)
	}
}
