package daemon

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"halb/internal/config"
)

// A member outside cluster.nodes is reported once, by name; configured
// members never are.
func TestStrangerWarnedOnce(t *testing.T) {
	var buf bytes.Buffer
	d := &Daemon{log: slog.New(slog.NewTextHandler(&buf, nil))}
	cfg := &config.Config{Cluster: &config.Cluster{Nodes: []config.Node{{Name: "lb1"}, {Name: "lb2"}}}}
	c := &controller{strangers: map[string]bool{}}
	for range 3 {
		d.warnStrangers(c, cfg, []string{"lb1", "lb2", "lb9"})
	}
	if n := strings.Count(buf.String(), "not in cluster.nodes"); n != 1 || !strings.Contains(buf.String(), "peer=lb9") {
		t.Fatalf("want one warning about lb9, got:\n%s", buf.String())
	}
}
