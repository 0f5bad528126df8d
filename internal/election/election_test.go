package election

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/google/go-cmp/cmp"

	"halb/internal/config"
)

var (
	preempt = Options{Policy: config.Preempt}
	sticky  = Options{Policy: config.Sticky}
)

// m builds a member; flags is a subset of "e" (eligible), "s" (stable), "h"
// (holds), "l" (leaving).
func m(name string, prio int, flags string) Member {
	mem := Member{Name: name, Priority: prio}
	for _, f := range flags {
		switch f {
		case 'e':
			mem.Eligible = true
		case 's':
			mem.Stable = true
		case 'h':
			mem.Holds = true
		case 'l':
			mem.Leaving = true
		}
	}
	return mem
}

func TestOwner(t *testing.T) {
	tests := []struct {
		name    string
		members []Member
		opt     Options
		want    string
	}{
		{name: "no members", opt: preempt, want: ""},
		{name: "no members sticky", opt: sticky, want: ""},
		{name: "lone healthy node takes it", members: []Member{m("lb1", 100, "e")}, opt: preempt, want: "lb1"},

		// Priority and tie-breaks.
		{name: "higher priority wins", members: []Member{m("lb1", 200, "e"), m("lb2", 100, "e")}, opt: preempt, want: "lb1"},
		{name: "higher priority wins regardless of name", members: []Member{m("lb1", 100, "e"), m("lb2", 200, "e")}, opt: preempt, want: "lb2"},
		{name: "equal priority: smaller name", members: []Member{m("lb2", 100, "e"), m("lb1", 100, "e")}, opt: preempt, want: "lb1"},
		{name: "equal priority: lexical not numeric order", members: []Member{m("lb10", 100, "e"), m("lb9", 100, "e")}, opt: sticky, want: "lb10"},
		{name: "negative priorities", members: []Member{m("a", -5, "e"), m("b", -1, "e")}, opt: preempt, want: "b"},

		// Eligibility.
		{name: "ineligible higher priority loses", members: []Member{m("lb1", 200, ""), m("lb2", 100, "e")}, opt: preempt, want: "lb2"},
		{name: "ineligible holder loses to eligible at once (preempt)", members: []Member{m("lb1", 200, "h"), m("lb2", 100, "e")}, opt: preempt, want: "lb2"},
		{name: "ineligible holder loses to eligible at once (sticky)", members: []Member{m("lb1", 200, "h"), m("lb2", 100, "e")}, opt: sticky, want: "lb2"},
		{name: "failover does not wait for stable", members: []Member{m("lb1", 200, "sh"), m("lb2", 100, "e")}, opt: preempt, want: "lb2"},

		// Nobody eligible.
		{name: "all unhealthy: holder keeps it", members: []Member{m("lb1", 200, ""), m("lb2", 100, "h")}, opt: preempt, want: "lb2"},
		{name: "all unhealthy: holder keeps it (sticky)", members: []Member{m("lb1", 200, ""), m("lb2", 100, "h")}, opt: sticky, want: "lb2"},
		{name: "all unhealthy, two holders: best holder", members: []Member{m("lb1", 100, "h"), m("lb2", 200, "h"), m("lb3", 300, "")}, opt: preempt, want: "lb2"},
		{name: "all unhealthy, nobody holds: bootstrap best of all", members: []Member{m("lb2", 100, ""), m("lb1", 200, "")}, opt: preempt, want: "lb1"},
		{name: "all unhealthy, nobody holds: bootstrap tie by name", members: []Member{m("lb2", 100, ""), m("lb1", 100, "")}, opt: sticky, want: "lb1"},
		{name: "lone unhealthy node bootstraps", members: []Member{m("lb1", 100, "")}, opt: preempt, want: "lb1"},

		// Nobody eligible and a member leaving (maintenance or stopping):
		// it drops the VIP whatever it is told, so a staying member is
		// preferred, else a graceful stop leaves the VIP on nobody.
		{name: "all unhealthy: staying holder beats a better leaving holder", members: []Member{m("lb1", 200, "hl"), m("lb2", 100, "h")}, opt: preempt, want: "lb2"},
		{name: "all unhealthy: staying member takes it from a leaving holder", members: []Member{m("lb1", 200, "hl"), m("lb2", 100, "")}, opt: sticky, want: "lb2"},
		{name: "all unhealthy: best staying member, holders leaving", members: []Member{m("lb1", 200, "hl"), m("lb2", 100, ""), m("lb3", 150, "")}, opt: preempt, want: "lb3"},
		{name: "all unhealthy, nobody holds: bootstrap passes over a leaving node", members: []Member{m("lb1", 200, "l"), m("lb2", 100, "")}, opt: preempt, want: "lb2"},
		{name: "all leaving: holder keeps it", members: []Member{m("lb1", 200, "l"), m("lb2", 100, "hl")}, opt: preempt, want: "lb2"},
		{name: "all leaving, nobody holds: best of all", members: []Member{m("lb2", 100, "l"), m("lb1", 200, "l")}, opt: preempt, want: "lb1"},

		// Sticky.
		{name: "sticky: lower holder keeps it", members: []Member{m("lb1", 200, "es"), m("lb2", 100, "eh")}, opt: sticky, want: "lb2"},
		{name: "sticky: nobody holds, best eligible", members: []Member{m("lb1", 200, "e"), m("lb2", 100, "e")}, opt: sticky, want: "lb1"},
		{name: "sticky: both hold after heal, best keeps it", members: []Member{m("lb1", 100, "eh"), m("lb2", 200, "eh")}, opt: sticky, want: "lb2"},
		{name: "sticky: both hold after heal, tie by name", members: []Member{m("lb2", 100, "esh"), m("lb1", 100, "esh")}, opt: sticky, want: "lb1"},
		{name: "sticky: ineligible holder and eligible holder", members: []Member{m("lb1", 200, "h"), m("lb2", 100, "eh")}, opt: sticky, want: "lb2"},

		// Preempt.
		{name: "preempt: unstable higher priority does not preempt", members: []Member{m("lb1", 200, "e"), m("lb2", 100, "eh")}, opt: preempt, want: "lb2"},
		{name: "preempt: stable higher priority preempts", members: []Member{m("lb1", 200, "es"), m("lb2", 100, "eh")}, opt: preempt, want: "lb1"},
		{name: "preempt: stable but ineligible does not preempt", members: []Member{m("lb1", 200, "s"), m("lb2", 100, "eh")}, opt: preempt, want: "lb2"},
		{name: "preempt: stable equal priority does not preempt", members: []Member{m("lb1", 100, "es"), m("lb2", 100, "eh")}, opt: preempt, want: "lb2"},
		{name: "preempt: stable lower priority does not preempt", members: []Member{m("lb1", 50, "es"), m("lb2", 100, "eh")}, opt: preempt, want: "lb2"},
		{name: "preempt: best of several stable challengers", members: []Member{m("lb1", 200, "es"), m("lb2", 100, "eh"), m("lb3", 300, "es"), m("lb4", 400, "e")}, opt: preempt, want: "lb3"},
		{name: "preempt: stable challengers tie by name", members: []Member{m("lb3", 200, "es"), m("lb2", 100, "eh"), m("lb1", 200, "es")}, opt: preempt, want: "lb1"},
		{name: "preempt: both hold after heal, best keeps it", members: []Member{m("lb1", 100, "esh"), m("lb2", 200, "esh")}, opt: preempt, want: "lb2"},
		{name: "preempt: both hold after heal, unstable better holder still wins", members: []Member{m("lb1", 100, "esh"), m("lb2", 200, "eh")}, opt: preempt, want: "lb2"},
		{name: "preempt: both hold after heal, tie by name", members: []Member{m("lb2", 100, "eh"), m("lb1", 100, "eh")}, opt: preempt, want: "lb1"},
		{name: "unknown policy behaves as preempt", members: []Member{m("lb1", 200, "es"), m("lb2", 100, "eh")}, opt: Options{}, want: "lb1"},

		// Joins and leaves, seen as successive inputs.
		{name: "join: better unstable node joins a holder", members: []Member{m("lb2", 100, "eh"), m("lb1", 200, "")}, opt: preempt, want: "lb2"},
		{name: "join: newcomer becomes eligible but not yet stable", members: []Member{m("lb2", 100, "eh"), m("lb1", 200, "e")}, opt: preempt, want: "lb2"},
		{name: "join: newcomer stable takes over", members: []Member{m("lb2", 100, "eh"), m("lb1", 200, "es")}, opt: preempt, want: "lb1"},
		{name: "leave: holder gone, survivor takes it", members: []Member{m("lb2", 100, "e")}, opt: preempt, want: "lb2"},
		{name: "leave: holder gone, best survivor takes it", members: []Member{m("lb3", 50, "e"), m("lb2", 100, "e")}, opt: sticky, want: "lb2"},

		// Quorum with three configured nodes: two needed.
		{name: "quorum 3: alone gets nothing", members: []Member{m("lb1", 200, "esh")}, opt: Options{Policy: config.Preempt, Quorum: 3}, want: ""},
		{name: "quorum 3: alone gets nothing even unhealthy bootstrap", members: []Member{m("lb1", 200, "")}, opt: Options{Policy: config.Sticky, Quorum: 3}, want: ""},
		{name: "quorum 3: two is enough", members: []Member{m("lb1", 200, "e"), m("lb2", 100, "eh")}, opt: Options{Policy: config.Preempt, Quorum: 3}, want: "lb2"},
		{name: "quorum 3: three is enough", members: []Member{m("lb1", 200, "es"), m("lb2", 100, "eh"), m("lb3", 50, "e")}, opt: Options{Policy: config.Preempt, Quorum: 3}, want: "lb1"},
		{name: "quorum off: alone keeps it", members: []Member{m("lb1", 200, "esh")}, opt: Options{Policy: config.Preempt}, want: "lb1"},
		{name: "quorum 2: both needed", members: []Member{m("lb1", 200, "e")}, opt: Options{Policy: config.Preempt, Quorum: 2}, want: ""},
		{name: "quorum 4: two is not a majority", members: []Member{m("lb1", 200, "e"), m("lb2", 100, "e")}, opt: Options{Policy: config.Preempt, Quorum: 4}, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Every order of the input must give the same owner.
			forEachPermutation(tt.members, func(p []Member) {
				if diff := cmp.Diff(tt.want, Owner(p, tt.opt)); diff != "" {
					t.Fatalf("owner of %+v (-want +got):\n%s", p, diff)
				}
			})
		})
	}
}

// forEachPermutation calls f with every ordering of ms (Heap's algorithm);
// inputs here have at most a handful of members.
func forEachPermutation(ms []Member, f func([]Member)) {
	p := append([]Member(nil), ms...)
	var gen func(k int)
	gen = func(k int) {
		if k <= 1 {
			f(append([]Member(nil), p...))
			return
		}
		gen(k - 1)
		for i := 0; i < k-1; i++ {
			if k%2 == 0 {
				p[i], p[k-1] = p[k-1], p[i]
			} else {
				p[0], p[k-1] = p[k-1], p[0]
			}
			gen(k - 1)
		}
	}
	gen(len(p))
}

func TestForEachPermutationCount(t *testing.T) {
	seen := map[string]bool{}
	forEachPermutation([]Member{m("a", 0, ""), m("b", 0, ""), m("c", 0, ""), m("d", 0, "")}, func(p []Member) {
		seen[fmt.Sprint(p)] = true
	})
	if len(seen) != 24 {
		t.Fatalf("distinct permutations of 4 = %d, want 24", len(seen))
	}
}

// TestOwnerRandom checks on random clusters that the owner is order-independent,
// is a member (or nobody only under quorum loss), and is eligible whenever any
// member is.
func TestOwnerRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	names := []string{"a", "b", "c", "d", "e"}
	for iter := 0; iter < 2000; iter++ {
		n := r.IntN(len(names) + 1)
		members := make([]Member, 0, n)
		for _, i := range r.Perm(len(names))[:n] {
			members = append(members, Member{
				Name:     names[i],
				Priority: r.IntN(3), // few values so ties are common
				Eligible: r.IntN(2) == 0,
				Stable:   r.IntN(2) == 0,
				Holds:    r.IntN(3) == 0,
				Leaving:  r.IntN(4) == 0,
			})
		}
		opt := Options{Policy: []config.Policy{config.Preempt, config.Sticky}[r.IntN(2)], Quorum: r.IntN(5)}
		want := Owner(members, opt)

		for shuffle := 0; shuffle < 10; shuffle++ {
			p := append([]Member(nil), members...)
			r.Shuffle(len(p), func(i, j int) { p[i], p[j] = p[j], p[i] })
			if got := Owner(p, opt); got != want {
				t.Fatalf("iteration %d: owner of %+v = %q, of %+v = %q", iter, members, want, p, got)
			}
		}

		quorumLost := opt.Quorum > 0 && n < opt.Quorum/2+1
		if want == "" {
			if n > 0 && !quorumLost {
				t.Fatalf("iteration %d: nobody owns with %d members and quorum %d", iter, n, opt.Quorum)
			}
			continue
		}
		if quorumLost {
			t.Fatalf("iteration %d: %q owns without quorum", iter, want)
		}
		var owner *Member
		anyEligible := false
		for i := range members {
			if members[i].Name == want {
				owner = &members[i]
			}
			anyEligible = anyEligible || members[i].Eligible
		}
		if owner == nil {
			t.Fatalf("iteration %d: owner %q is not a member of %+v", iter, want, members)
		}
		if anyEligible && !owner.Eligible {
			t.Fatalf("iteration %d: ineligible %q owns though an eligible member exists in %+v", iter, want, members)
		}
		if !anyEligible && owner.Leaving && anyStaying(members) {
			t.Fatalf("iteration %d: leaving %q owns though a staying member exists in %+v", iter, want, members)
		}
	}
}

func anyStaying(ms []Member) bool {
	for _, m := range ms {
		if !m.Leaving {
			return true
		}
	}
	return false
}
