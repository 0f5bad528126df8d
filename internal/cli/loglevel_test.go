package cli

import (
	"context"
	"strings"
	"testing"
)

// A mistyped --log-level is an error naming the levels, not info.
func TestRunRefusesUnknownLogLevel(t *testing.T) {
	_, errOut, code := run(context.Background(), newRunCmd(), "--config", "/nonexistent/halb.yaml", "--log-level", "bogus")
	if code != 1 || !strings.Contains(errOut, `--log-level "bogus"`) || !strings.Contains(errOut, "debug, info, warn or error") {
		t.Fatalf("exit %d, stderr %q; want the valid levels named", code, errOut)
	}
}
