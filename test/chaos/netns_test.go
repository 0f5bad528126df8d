package chaos

import (
	"strings"
	"testing"
)

func TestParseMetrics(t *testing.T) {
	text := `# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 42
go_gc_duration_seconds{quantile="0.5"} 1.2e-05
process_resident_memory_bytes 3.3554432e+07
`
	g, rss, err := parseMetrics(strings.NewReader(text))
	if err != nil || g != 42 || rss != 32<<20 {
		t.Fatalf("parseMetrics = %d, %d, %v; want 42, %d, nil", g, rss, err, 32<<20)
	}
	if _, _, err := parseMetrics(strings.NewReader("process_resident_memory_bytes 1\n")); err == nil {
		t.Fatal("metrics without go_goroutines were accepted")
	}
}
