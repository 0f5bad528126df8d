package failbench

import (
	"log/slog"
	"slices"
	"testing"

	"halb/test/lab"
)

// Lines as `ip -o monitor address` prints them: a lifetime refresh of an
// address the node already has is not a move; adds and deletions are.
func TestAddrEventCountsMovesNotRefreshes(t *testing.T) {
	s := &soakLab{l: lab.New(lab.Options{}, slog.New(slog.DiscardHandler)), has: map[string]bool{"lb1": true}, initial: "lb1", phase: &SoakPhase{}}
	const (
		add     = `2: eth0    inet 192.168.66.160/24 scope global secondary eth0\       valid_lft 2sec preferred_lft 2sec`
		del     = `Deleted 2: eth0    inet 192.168.66.160/24 scope global secondary eth0\       valid_lft 1sec preferred_lft 1sec`
		other   = `2: eth0    inet 192.168.66.151/24 scope global eth0\       valid_lft forever preferred_lft forever`
		ipv6    = `2: eth0    inet6 fe80::1/64 scope link \       valid_lft forever preferred_lft forever`
		similar = `2: eth0    inet 192.168.66.16/24 scope global secondary eth0`
	)
	s.addrEvent("lb1", add) // refresh
	s.addrEvent("lb1", other)
	s.addrEvent("lb2", ipv6)
	s.addrEvent("lb2", similar)
	if s.phase.VIPChanges != 0 || s.phase.FalseFailovers != 0 {
		t.Fatalf("refreshes and other addresses counted: %+v", s.phase)
	}
	s.addrEvent("lb2", add)
	s.addrEvent("lb1", del)
	s.addrEvent("lb1", del) // repeated deletion notice
	if s.phase.VIPChanges != 2 || s.phase.FalseFailovers != 1 {
		t.Fatalf("VIPChanges = %d, FalseFailovers = %d, want 2 and 1: %+v", s.phase.VIPChanges, s.phase.FalseFailovers, s.phase.Moves)
	}
	s.addrEvent("lb1", add) // back to lb1: a change, not a false failover
	if s.phase.VIPChanges != 3 || s.phase.FalseFailovers != 1 {
		t.Fatalf("after the move back: VIPChanges = %d, FalseFailovers = %d, want 3 and 1", s.phase.VIPChanges, s.phase.FalseFailovers)
	}
	if got := s.phase.Moves; !slices.Equal(got[0].Holders, []string{"lb1", "lb2"}) || !slices.Equal(got[1].Holders, []string{"lb2"}) {
		t.Fatalf("moves %+v, want [lb1 lb2] then [lb2]", got)
	}
}
