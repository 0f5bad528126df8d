package stats

import (
	"strings"
	"testing"
	"time"

	"halb/internal/admin"
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
