package cli

import (
	"bytes"
	"strings"
	"testing"
)

// mainOutput runs Main as the binary would and returns its exit status and
// what it printed.
func mainOutput(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = Main(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestVersionFlagMatchesVersionCommand(t *testing.T) {
	code, flagOut, stderr := mainOutput("--version")
	if code != 0 {
		t.Fatalf("halb --version: exit %d, stderr %q", code, stderr)
	}
	code, cmdOut, stderr := mainOutput("version")
	if code != 0 {
		t.Fatalf("halb version: exit %d, stderr %q", code, stderr)
	}
	want := "halb " + buildVersion() + "\n"
	if flagOut != want {
		t.Fatalf("halb --version printed %q, want %q", flagOut, want)
	}
	first, rest, _ := strings.Cut(cmdOut, "\n")
	if first+"\n" != flagOut {
		t.Fatalf("halb version's first line %q differs from halb --version %q", first, flagOut)
	}
	if !strings.Contains(rest, "built with go") {
		t.Fatalf("halb version does not name the toolchain: %q", cmdOut)
	}
}
