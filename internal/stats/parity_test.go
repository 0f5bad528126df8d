package stats

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"halb/internal/admin"
)

// The columns an operator used to HAProxy's stats page looks for: per
// server weight, backup, last state change, failed checks, up→down
// transitions, total downtime and peak sessions, and a totals row per
// backend.
func TestDashboardHasHAProxyColumns(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	snap := healthyPair(now)
	k8s := snap.Backends[0].Servers
	k8s[0].Weight, k8s[0].Retries = 3, 4
	k8s[1].Backup = true
	h := newServer(t, statsConfig(t), &fakeSource{snap: snap}).Handler()
	body := request(h, "127.0.0.1:1", "/panel", "admin", "s3cret").Body.String()

	section := regexp.MustCompile(`(?s)<section class="card" data-backend="k8s-api">.*?</section>`).FindString(body)
	row := func(name string) string {
		return regexp.MustCompile(`(?s)<tr data-server="` + name + `".*?</tr>`).FindString(section)
	}
	cp01, cp02, cp03 := row("talos-lon-cp01"), row("talos-lon-cp02"), row("talos-lon-cp03")
	totals := regexp.MustCompile(`(?s)<tr class="totals" data-totals>.*?</tr>`).FindString(section)
	for _, tt := range []struct{ where, html, want string }{
		{"cp01 weight", cp01, `data-col="weight">3<`},
		{"cp01 peak", cp01, `data-col="peak">17<`},
		{"cp02 backup flag", cp02, `<span class="pill" data-backup>backup</span>`},
		{"cp03 failed checks", cp03, `data-col="failed-checks">41<`},
		{"cp03 transitions", cp03, `class="num warn" data-col="transitions">2<`},
		{"cp03 downtime", cp03, `data-col="downtime">12m15s<`},
		{"cp03 last change", cp03, `title="2025-03-01 11:58:25 UTC">1m35s ago<`},
		{"cp01 no downtime", cp01, `data-col="downtime">–<`},
		{"totals up", totals, `2/3 up`},
		{"totals weight of servers up", totals, `data-col="weight" title="weight of the servers up">4<`},
		{"totals current", totals, `data-col="current">14<`},
		{"totals total", totals, `data-col="total">52270<`},
		{"totals failed checks", totals, `data-col="failed-checks">41<`},
		{"totals transitions", totals, `data-col="transitions">2<`},
		{"totals connect failures", totals, `data-col="fails">3<`},
	} {
		if !strings.Contains(tt.html, tt.want) {
			t.Errorf("%s: lacks %q in\n%s", tt.where, tt.want, tt.html)
		}
	}
}

// Each verdict has its own banner; a FAIL lists its failures first and
// marks them.
func TestDashboardBannerPerVerdict(t *testing.T) {
	now := time.Now()
	src := &fakeSource{}
	h := newServer(t, statsConfig(t), src).Handler()
	nolisten := allUp(now)
	nolisten.Frontends[0].ListenError = "bind: address already in use"
	inMaint := allUp(now)
	inMaint.Members[1].Maintenance = true
	for _, tt := range []struct {
		name string
		snap admin.Snapshot
		want []string
	}{
		{"ok", allUp(now), []string{`data-verdict="ok"`, "<strong>OK.</strong>"}},
		{"peer in maintenance", inMaint, []string{`class="verdict warn"`, `data-verdict="degraded"`, "<li>member lb2 is in maintenance: it will not take a VIP</li>"}},
		{"frontend without listener", nolisten, []string{`class="verdict bad"`, `data-verdict="fail"`, "<strong>FAIL:</strong>",
			`<li class="fail"><strong>FAIL</strong> frontend k8s-api: not listening on 192.168.66.160:6443: bind: address already in use`}},
	} {
		src.set(tt.snap)
		body := request(h, "127.0.0.1:1", "/panel", "admin", "s3cret").Body.String()
		for _, want := range tt.want {
			if !strings.Contains(body, want) {
				t.Errorf("%s: banner lacks %q", tt.name, want)
			}
		}
		if tt.name != "ok" && strings.Contains(body, "<strong>OK.</strong>") {
			t.Errorf("%s: says OK", tt.name)
		}
	}
}
