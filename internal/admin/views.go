package admin

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Helpers that read a Snapshot the way `halb status` does, shared with the
// stats dashboard and the metrics so all three judge agreement alike.

// MemberView is m's view of v's holder; this node's own view is its
// election result. ok is false when the member gossips no view of v.
func MemberView(m Member, v VIP) (view string, ok bool) {
	if m.Local {
		return v.Holder, true
	}
	for k, owner := range m.HolderView {
		if BareIP(k) == BareIP(v.Address) {
			return owner, true
		}
	}
	return "", false
}

// ReferenceViews picks, per VIP, the view a member is compared with: the
// strict majority of alive members' views, or this node's when there is
// no majority.
func ReferenceViews(s Snapshot) map[string]string {
	ref := map[string]string{}
	for _, v := range s.VIPs {
		count := map[string]int{}
		alive := 0
		for _, m := range s.Members {
			if !m.Alive {
				continue
			}
			if view, ok := MemberView(m, v); ok {
				count[view]++
				alive++
			}
		}
		ref[v.Address] = v.Holder
		for view, c := range count {
			// A strict majority is unique, so map order cannot matter.
			if 2*c > alive {
				ref[v.Address] = view
			}
		}
	}
	return ref
}

// UnhealthyFrontends names, sorted, the frontends m reports without a
// healthy server: why it is not eligible.
func UnhealthyFrontends(m Member) []string {
	var bad []string
	for f, ok := range m.Frontends {
		if !ok {
			bad = append(bad, f)
		}
	}
	sort.Strings(bad)
	return bad
}

// HeldByMany marks the VIPs (bare IPs) that more than one alive member
// holds. A dead member's last gossip is left out: it says nothing about
// who answers for the VIP now.
func HeldByMany(members []Member) map[string]bool {
	held := map[string]int{}
	for _, m := range members {
		for _, h := range m.Holds {
			if m.Alive {
				held[BareIP(h)]++
			}
		}
	}
	many := map[string]bool{}
	for a, n := range held {
		many[a] = n > 1
	}
	return many
}

// HoldsShared reports whether m is alive and holds a VIP that many, from
// HeldByMany, marks as held by another alive member too.
func HoldsShared(m Member, many map[string]bool) bool {
	for _, h := range m.Holds {
		if m.Alive && many[BareIP(h)] {
			return true
		}
	}
	return false
}

// BareIP drops a prefix length, so "192.168.66.160/24" and
// "192.168.66.160" name the same VIP.
func BareIP(a string) string {
	if i := strings.IndexByte(a, '/'); i >= 0 {
		return a[:i]
	}
	return a
}

// Duration is a short human duration: 45s, 3m12s, 2h5m, 3d4h.
func Duration(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}
