package cli

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestRaiseFileLimit(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	raiseFileLimit(10, log)
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur != lim.Max {
		t.Errorf("soft limit %d, want raised to the hard limit %d", lim.Cur, lim.Max)
	}
	if buf.Len() != 0 {
		t.Errorf("warned for a maxconn that fits: %s", buf.String())
	}
	raiseFileLimit(int(lim.Max), log)
	if !strings.Contains(buf.String(), "maxconn does not fit the open-file limit") || !strings.Contains(buf.String(), "fd_limit=") {
		t.Errorf("no warning with the numbers for a maxconn that cannot fit: %q", buf.String())
	}
}
