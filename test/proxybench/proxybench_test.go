package proxybench

import (
	"bytes"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"halb/internal/config"
)

func TestRatiosAreTakenWithinEachRepetition(t *testing.T) {
	// halb is 0.9× direct in every run although direct and halb both
	// swing: medians of ratios say 0.9, a ratio of medians would not.
	s := &Summary{Targets: []string{Direct, Halb, HAProxy}, Groups: []string{GroupBulk}}
	for _, d := range []float64{10, 2, 5} {
		r := Run{}
		r.set(Direct, "bulk1_gbps", d)
		r.set(Halb, "bulk1_gbps", 0.9*d)
		r.set(HAProxy, "bulk1_gbps", 0.5*d)
		s.Runs = append(s.Runs, r)
	}
	s.Runs[1].set(Halb, "bulk1_gbps", 9) // an outlier run: 4.5× direct
	s.summarize()
	if got := s.ToDirect[Halb]["bulk1_gbps"]; got != 0.9 {
		t.Fatalf("halb/direct %v, want the median ratio 0.9", got)
	}
	if got := s.Median[Direct]["bulk1_gbps"]; got != 5 {
		t.Fatalf("median direct %v, want 5", got)
	}
	if got := s.ToHAProxy[Halb]["bulk1_gbps"]; got != 1.8 {
		t.Fatalf("halb/haproxy %v, want 1.8", got)
	}
	if len(s.Goals) != 1 || !s.Goals[0].Met || s.Goals[0].Got != 0.9 {
		t.Fatalf("goals %+v, want only the bulk goal, met at 0.9", s.Goals)
	}
}

func TestGoalsCanMiss(t *testing.T) {
	r := Run{}
	for _, kv := range []struct {
		t, k string
		v    float64
	}{
		{Halb, "rr1_p99_us", 300}, {HAProxy, "rr1_p99_us", 200},
		{Halb, "idle_fds", 4}, {HAProxy, "idle_fds", 2},
	} {
		r.set(kv.t, kv.k, kv.v)
	}
	s := &Summary{Runs: []Run{r}}
	s.summarize()
	if len(s.Goals) != 2 {
		t.Fatalf("goals %+v, want the p99 and fds goals", s.Goals)
	}
	for _, g := range s.Goals {
		if g.Met {
			t.Errorf("goal %q met with %v", g.Figure, g.Got)
		}
	}
}

func TestMedianEven(t *testing.T) {
	if got := median([]float64{4, 1, 3, 2}); got != 2.5 {
		t.Fatalf("median %v, want 2.5", got)
	}
}

func TestHalbConfigChecks(t *testing.T) {
	cps := []netip.Addr{netip.MustParseAddr("192.168.66.161"), netip.MustParseAddr("192.168.66.162")}
	text := halbConfig(netip.MustParseAddr("192.168.66.151"), cps, proxyPorts{8000, 8001}, "/tmp/x.sock")
	cfg, err := config.Parse([]byte(text))
	if err != nil {
		t.Fatalf("generated config does not parse: %v\n%s", err, text)
	}
	if len(cfg.Frontends) != 2 || len(cfg.Backends) != 2 || len(cfg.Backends[0].Servers) != 2 {
		t.Fatalf("want 2 frontends and 2 backends of 2 servers, got %+v", cfg)
	}
}

func TestHAProxyConfigChecks(t *testing.T) {
	cps := []netip.Addr{netip.MustParseAddr("127.0.0.11"), netip.MustParseAddr("127.0.0.12")}
	for _, splice := range []bool{false, true} {
		text := haproxyConfig(netip.MustParseAddr("127.0.0.1"), cps, proxyPorts{18000, 18001}, 100, splice)
		if got := strings.Contains(text, "option splice-request"); got != splice {
			t.Fatalf("splice %v, but splice-request in config is %v:\n%s", splice, got, text)
		}
		if strings.Count(text, " check inter 2s fall 3 rise 2") != 2 {
			t.Fatalf("want health checks on both backends:\n%s", text)
		}
		bin, err := exec.LookPath("haproxy")
		if err != nil {
			continue // the text checks above still ran
		}
		path := filepath.Join(t.TempDir(), "h.cfg")
		if err := writeFile(path, text); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(bin, "-c", "-f", path).CombinedOutput(); err != nil {
			t.Fatalf("haproxy -c: %v\n%s\n%s", err, out, text)
		}
	}
}

func TestParseSlabinfo(t *testing.T) {
	in := `slabinfo - version: 2.1
# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>
TCP                   10     12   2432   13    8 : tunables    0    0    0 : slabdata      1      1      0
kmalloc-64          1000   1000     64   64    1 : tunables    0    0    0 : slabdata     16     16      0
filp                   4      8    256   16    1 : tunables    0    0    0 : slabdata      1      1      0
`
	got, err := parseSlabinfo([]byte(in), socketCaches)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(10*2432 + 4*256); got != want {
		t.Fatalf("socket slab %d, want %d (kmalloc left out)", got, want)
	}
	if _, err := parseSlabinfo([]byte("TCP x 1 2\n"), socketCaches); err == nil {
		t.Fatal("a malformed line was accepted")
	}
}

func TestTablesShowMeasuredGroupsOnly(t *testing.T) {
	r := Run{}
	r.set(Direct, "rr1_p99_us", 100)
	r.set(Halb, "rr1_p99_us", 150)
	r.set(HAProxy, "rr1_p99_us", 200)
	s := &Summary{Targets: []string{Direct, Halb, HAProxy}, Groups: []string{GroupRR}, Reps: 1, Runs: []Run{r}}
	s.summarize()
	var md, txt bytes.Buffer
	if err := s.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteText(&txt); err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{md.String(), txt.String()} {
		if strings.Contains(out, "bulk throughput") {
			t.Errorf("unmeasured bulk rows shown:\n%s", out)
		}
		if !strings.Contains(out, "1.50×") || !strings.Contains(out, "0.75×") {
			t.Errorf("want halb/direct 1.50× and halb/haproxy 0.75×:\n%s", out)
		}
	}
	if !strings.Contains(md.String(), "| p99 latency, 1 connection (halb / HAProxy) | ≤ 1 | 0.75 | met |") {
		t.Errorf("goal row missing:\n%s", md.String())
	}
}
