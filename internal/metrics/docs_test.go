package metrics

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// exported is the name of every metric family halb itself exports, from
// the collectors' descriptions, so a metric without a sample in some
// fixture still counts.
func exported(t *testing.T) []string {
	t.Helper()
	fq := regexp.MustCompile(`fqName: "([^"]+)"`)
	m := New(fakeSource{pair()})
	ch := make(chan *prometheus.Desc, 256)
	for _, c := range []prometheus.Collector{newSnapshotCollector(fakeSource{pair()}), m.checks} {
		c.Describe(ch)
	}
	close(ch)
	var names []string
	for d := range ch {
		match := fq.FindStringSubmatch(d.String())
		if match == nil {
			t.Fatalf("no name in %s", d)
		}
		names = append(names, match[1])
	}
	slices.Sort(names)
	return slices.Compact(names)
}

func repoFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", path))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// mentioned is every halb_ metric name in text, histogram series suffixes
// dropped.
func mentioned(text string) []string {
	var out []string
	for _, n := range regexp.MustCompile(`\bhalb_[a-z_]+[a-z]`).FindAllString(text, -1) {
		for _, suffix := range []string{"_bucket", "_count", "_sum"} {
			if strings.HasSuffix(n, "_seconds"+suffix) {
				n = strings.TrimSuffix(n, suffix)
			}
		}
		out = append(out, n)
	}
	return out
}

// Every exported metric has a line in docs/metrics.md, and the page names
// no metric that does not exist.
func TestMetricsDocumented(t *testing.T) {
	doc := repoFile(t, "docs/metrics.md")
	names := exported(t)
	for _, n := range names {
		if !strings.Contains(doc, "| `"+n+"` |") {
			t.Errorf("metric %s is exported but has no row in docs/metrics.md", n)
		}
	}
	for _, n := range mentioned(doc) {
		if !slices.Contains(names, n) {
			t.Errorf("docs/metrics.md names %s, which halb does not export", n)
		}
	}
}

// The alert rules and the Grafana dashboard use only metrics that exist,
// and the dashboard is valid JSON.
func TestRulesAndDashboardUseExportedMetrics(t *testing.T) {
	names := exported(t)
	rules := repoFile(t, "deploy/prometheus/halb-rules.yml")
	dash := repoFile(t, "deploy/grafana/halb.json")
	var parsed struct {
		Panels []struct {
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal([]byte(dash), &parsed); err != nil {
		t.Fatalf("deploy/grafana/halb.json: %v", err)
	}
	exprs := 0
	for _, p := range parsed.Panels {
		exprs += len(p.Targets)
	}
	if exprs == 0 {
		t.Fatal("deploy/grafana/halb.json has no queries")
	}
	for file, text := range map[string]string{"deploy/prometheus/halb-rules.yml": rules, "deploy/grafana/halb.json": dash} {
		for _, n := range mentioned(text) {
			if !slices.Contains(names, n) {
				t.Errorf("%s uses %s, which halb does not export", file, n)
			}
		}
	}
	if !strings.Contains(rules, "halb_status_verdict") || !strings.Contains(dash, "halb_status_verdict") {
		t.Error("the rules or the dashboard do not use the status verdict")
	}
}

// promtool checks the rules and runs their tests, when it is installed
// (Debian: apt-get install prometheus); HALB_REQUIRE_PROMTOOL=1 makes its
// absence a failure.
func TestPromtoolRules(t *testing.T) {
	bin, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("HALB_REQUIRE_PROMTOOL") == "1" {
			t.Fatal("no promtool in PATH and HALB_REQUIRE_PROMTOOL=1")
		}
		t.Skip("no promtool in PATH (apt-get install prometheus); set HALB_REQUIRE_PROMTOOL=1 to fail instead")
	}
	dir := filepath.Join("..", "..", "deploy", "prometheus")
	for _, args := range [][]string{{"check", "rules", "halb-rules.yml"}, {"test", "rules", "halb-rules.test.yml"}} {
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
