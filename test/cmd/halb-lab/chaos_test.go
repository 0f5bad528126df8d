package main

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"halb/test/chaos"
)

func TestParseKinds(t *testing.T) {
	got, err := parseKinds(" kill-restart,, netem ")
	if err != nil {
		t.Fatalf("parseKinds: %v", err)
	}
	if diff := cmp.Diff([]chaos.Kind{chaos.KillRestart, chaos.Netem}, got); diff != "" {
		t.Fatalf("kinds (-want +got):\n%s", diff)
	}
	if got, err := parseKinds(""); err != nil || got != nil {
		t.Fatalf("no --kinds gave %v, %v; want none (all kinds)", got, err)
	}
	if _, err := parseKinds("netem,meteor"); err == nil || !strings.Contains(err.Error(), `"meteor"`) {
		t.Fatalf("an unknown kind gave %v; want an error naming it", err)
	}
}
