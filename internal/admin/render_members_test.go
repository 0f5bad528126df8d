package admin

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// A VIP counts as held twice only when two alive members hold it: a dead
// member's last gossip says nothing about who answers ARP now, and the
// prefix length does not make two claims different.
func TestHeldByMany(t *testing.T) {
	members := []Member{
		{Name: "a", Alive: true, Holds: []string{"10.0.0.1/24", "10.0.0.2/24"}},
		{Name: "b", Alive: true, Holds: []string{"10.0.0.1/32"}},
		{Name: "c", Alive: false, Holds: []string{"10.0.0.2/24"}},
	}
	want := map[string]bool{"10.0.0.1": true, "10.0.0.2": false}
	if diff := cmp.Diff(want, HeldByMany(members)); diff != "" {
		t.Fatalf("held by many (-want +got):\n%s", diff)
	}
	for _, m := range members {
		if got, want := HoldsShared(m, HeldByMany(members)), m.Name == "a" || m.Name == "b"; got != want {
			t.Errorf("HoldsShared(%s) = %v, want %v", m.Name, got, want)
		}
	}
}

// Notes are red for what makes members elect differently and yellow for
// an operator's choice or a network fault, so the eye finds the former.
func TestMemberNotesColour(t *testing.T) {
	tests := []struct {
		name                  string
		m                     Member
		disagrees, cfgDiffers bool
		want                  cell
	}{
		{"nothing to say", Member{}, false, false, cell{}},
		{"maintenance", Member{Maintenance: true}, false, false, cell{text: "maintenance", color: yellow}},
		{"disagreement wins over maintenance", Member{Maintenance: true}, true, false,
			cell{text: "DISAGREES, maintenance", color: red}},
		{"config differs", Member{}, false, true, cell{text: "CONFIG DIFFERS", color: red}},
		{"unreadable state", Member{StateErr: "bad"}, false, false, cell{text: "state: bad", color: red}},
		{"heard via a peer", Member{HeardVia: "n2", Disputed: true}, false, false,
			cell{text: "UNREACHABLE FROM HERE, heard by n2, gossip says failed, heartbeats say alive", color: yellow}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, memberNotes(tt.m, tt.disagrees, tt.cfgDiffers), cmp.AllowUnexported(cell{})); diff != "" {
				t.Fatalf("notes (-want +got):\n%s", diff)
			}
		})
	}
}
