package cli

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReloadFailureSaysWhatHappened(t *testing.T) {
	tests := []struct{ msg, want string }{
		{
			"reload refused, nothing changed: frontend api: listen on 127.0.0.1:6443: bind: address already in use",
			"reload refused, nothing changed, halb runs as before:\nfrontend api: listen on 127.0.0.1:6443: bind: address already in use",
		},
		{
			"log changed: that needs a restart",
			"reload refused, nothing changed, halb runs as before:\nlog changed: that needs a restart",
		},
		{
			"config applied, but: frontend api: listen on 127.0.0.1:6443: bind: address already in use",
			"reload applied, but a frontend has no listener (see halb status):\nfrontend api: listen on 127.0.0.1:6443: bind: address already in use",
		},
	}
	for _, tt := range tests {
		if got := reloadFailure(tt.msg); got != tt.want {
			t.Errorf("reloadFailure(%q) =\n%s\nwant\n%s", tt.msg, got, tt.want)
		}
	}
}

// `systemctl reload halb` runs `halb reload --config FILE`: a FILE that does
// not load must fail the reload, saying so, though no daemon is asked.
func TestReloadWithBrokenConfigFails(t *testing.T) {
	file := filepath.Join(t.TempDir(), "halb.yaml")
	if err := os.WriteFile(file, []byte("frontends: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := run(context.Background(), newReloadCmd(), "--config", file)
	if code != 1 || !strings.Contains(errOut, "reload refused, the running halb was not asked") || !strings.Contains(errOut, file) {
		t.Errorf("reload --config with a broken file: exit %d, stderr:\n%s", code, errOut)
	}
}
