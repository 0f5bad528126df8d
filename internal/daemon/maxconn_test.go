package daemon

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"halb/internal/config"
)

func TestReloadLogsMaxconnChanges(t *testing.T) {
	old := &config.Config{MaxConn: 10000, Frontends: []config.Frontend{{Name: "api", MaxConn: 0}, {Name: "talos", MaxConn: 50}}}
	next := &config.Config{MaxConn: 5000, Frontends: []config.Frontend{{Name: "api", MaxConn: 100}, {Name: "talos", MaxConn: 50}, {Name: "new", MaxConn: 7}}}
	want := []string{"maxconn 10000 -> 5000", "frontend api maxconn 0 -> 100"}
	if diff := cmp.Diff(want, maxconnChanges(old, next)); diff != "" {
		t.Fatalf("changes (-want +got):\n%s", diff)
	}
	if got := maxconnChanges(old, old); len(got) != 0 {
		t.Fatalf("no change logged as %v", got)
	}
}
