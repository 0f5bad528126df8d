package support

import (
	"os"
	"testing"
)

// RequireNetnsEnv is the variable that turns skips for lack of root into
// failures, so CI, which runs as root, cannot silently skip the tests that
// need it.
const RequireNetnsEnv = "HALB_REQUIRE_NETNS"

// RequireRoot skips t unless the process runs as root, naming why in
// because ("create network namespaces"); with HALB_REQUIRE_NETNS=1 it fails
// t instead.
func RequireRoot(t testing.TB, because string) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv(RequireNetnsEnv) == "1" {
		t.Fatalf("%s=1 but not running as root: the test needs root to %s", RequireNetnsEnv, because)
	}
	t.Skipf("needs root to %s (set %s=1 to make this a failure)", because, RequireNetnsEnv)
}
