package lab

import (
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	// A command name with a space and a parenthesis must not shift the
	// fields: utime 250 and stime 50 ticks are 3 s.
	stat := "4242 (ha lb) x) S 1 4242 4242 0 -1 4194560 1200 0 0 0 250 50 0 0 20 0 9 0 100 1000000 500 18446744073709551615\n"
	got, err := parseStatCPU(stat)
	if err != nil {
		t.Fatal(err)
	}
	if got != 3*time.Second {
		t.Fatalf("CPU = %s, want 3s", got)
	}
	if _, err := parseStatCPU("4242 (halb) S 1 2"); err == nil {
		t.Fatal("a short stat line parsed without error")
	}
}
