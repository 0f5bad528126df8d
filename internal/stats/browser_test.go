//go:build browser

package stats

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// chromium finds a headless-capable Chromium, or skips the test unless
// HALB_REQUIRE_BROWSER=1 says it must run.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("HALB_REQUIRE_BROWSER") == "1" {
		t.Fatal("no chromium in PATH and HALB_REQUIRE_BROWSER=1")
	}
	t.Skip("no chromium in PATH (apt-get install chromium); set HALB_REQUIRE_BROWSER=1 to fail instead")
	return ""
}

// runChromium loads url headless with extra flags and returns its stdout.
// It may reach only server: background services are off, every other
// host resolves to nothing, and any other request goes to a proxy on a
// closed loopback port.
func runChromium(t *testing.T, bin string, server netip.AddrPort, url string, extra ...string) []byte {
	t.Helper()
	args := []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-default-apps", "--disable-extensions", "--disable-client-side-phishing-detection",
		"--disable-domain-reliability", "--no-pings", "--metrics-recording-only", "--no-default-browser-check",
		"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE " + server.Addr().String(),
		"--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=" + server.Addr().String(),
		"--user-data-dir=" + t.TempDir(),
		"--virtual-time-budget=3000",
	}
	args = append(args, extra...)
	args = append(args, url)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, stderr.String())
	}
	return stdout.Bytes()
}

func TestBrowserDashboard(t *testing.T) {
	bin := chromium(t)
	cfg := statsConfig(t)
	cfg.Bind = netip.MustParseAddrPort("127.0.0.31:0")
	cfg.Refresh = time.Second // the script must swap in a fresh panel within the time budget
	s := newServer(t, cfg, &fakeSource{snap: healthyPair(time.Now())})
	start(t, s)
	url := "http://admin:s3cret@" + s.Addr().String() + "/"

	dom := string(runChromium(t, bin, s.Addr(), url, "--window-size=1280,900", "--dump-dom"))
	for _, want := range []*regexp.Regexp{
		// The VIP card: holder lb1, agreed, green.
		regexp.MustCompile(`<div class="vip agreed" data-vip="192\.168\.66\.160">`),
		regexp.MustCompile(`<span class="holder" data-holder="lb1">lb1</span>`),
		// cp03 is down, in red, in both backends.
		regexp.MustCompile(`(?s)<tr data-server="talos-lon-cp03" data-state="down">.*?<span class="state bad">down</span>`),
		// A control plane down is not "all good": the banner says DEGRADED.
		regexp.MustCompile(`<section class="verdict warn" id="verdict" data-verdict="degraded">`),
		// HAProxy's columns survive the script's swap: downtime and totals.
		regexp.MustCompile(`data-col="downtime">12m15s<`),
		regexp.MustCompile(`(?s)<tr class="totals" data-totals[^>]*>.*?data-col="failed-checks">41<`),
		// The script fetched /panel and swapped it in: the live marker says so.
		regexp.MustCompile(`id="live" data-live="ok"`),
	} {
		if !want.MatchString(dom) {
			t.Errorf("rendered DOM lacks %s", want)
		}
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", dom)
	}

	// A screenshot for the docs when asked: HALB_SCREENSHOT=path.
	if out := os.Getenv("HALB_SCREENSHOT"); out != "" {
		dir := t.TempDir()
		shot := filepath.Join(dir, "shot.png")
		// Tall enough for the whole page of the fixture.
		runChromium(t, bin, s.Addr(), url, "--window-size=1600,1240", "--hide-scrollbars", "--screenshot="+shot)
		png, err := os.ReadFile(shot)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(png), "\x89PNG") {
			t.Fatal("screenshot is not a PNG")
		}
		if err := os.WriteFile(out, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
