package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestProductImportsNoTooling keeps the labs, fakes and benchmarks under
// test/, and the fakes in internal/…/…test packages, out of the shipped
// binary: `go list -deps` of halb must name none of them (depguard in
// .golangci.yml says the same per file).
func TestProductImportsNoTooling(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "halb/cmd/halb").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps halb/cmd/halb: %v\n%s", err, out)
	}
	var own int
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "halb/test/") || pkg == "halb/test" {
			t.Errorf("halb imports test tooling %s: move what it needs into internal/ or drop the import", pkg)
		}
		if strings.HasPrefix(pkg, "halb/internal/") {
			own++
			// Fakes live in …test packages beside what they fake
			// (vip/viptest, health/healthtest); the binary carries none.
			if strings.HasSuffix(pkg, "test") {
				t.Errorf("halb imports the test fakes of %s: only tests may", pkg)
			}
		}
	}
	if own < 10 {
		t.Fatalf("go list -deps halb/cmd/halb named %d of halb's own packages; the check would pass vacuously:\n%s", own, out)
	}
}
