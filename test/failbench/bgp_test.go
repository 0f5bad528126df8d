package failbench

import (
	"strings"
	"testing"
	"time"
)

// TestBGPSummary: the table shows the shares of established flows that
// lived over all repetitions, the leaving node's apart from the others',
// and a dash where a system has no other node (ARP: all on the holder).
func TestBGPSummary(t *testing.T) {
	plain := &BGPScenarioResult{Reps: []BGPRep{
		{Failed: 2, FailWindow: 900 * time.Millisecond, Outage: 300 * time.Millisecond, Own: 20, Other: 40, OtherLived: 30},
		{Failed: 4, FailWindow: 100 * time.Millisecond, Outage: 100 * time.Millisecond, Own: 20, OwnLived: 0, Other: 40, OtherLived: 34},
	}}
	plain.summarize()
	if plain.OtherLived != 0.8 || plain.OwnLived != 0 || plain.Failed.Median != 3 || plain.FailWindow.Max != 900 {
		t.Fatalf("summary %+v", plain)
	}
	arp := &BGPScenarioResult{Reps: []BGPRep{{Own: 60}}}
	arp.summarize()
	r := &BGPResult{Systems: map[string]map[string]*BGPScenarioResult{
		SysBGPPlain: {BGPCrash: plain},
		SysARP:      {BGPCrash: arp},
	}}
	md := r.Markdown()
	for _, want := range []string{
		"| crash | halb-bgp-plain | 3, 4 | 500, 900 | 200 | 0% | 80% |",
		"| crash | halb-arp | 0, 0 | 0, 0 | 0 | 0% | — |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("table lacks %q:\n%s", want, md)
		}
	}
}
