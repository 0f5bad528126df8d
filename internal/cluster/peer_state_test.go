package cluster

import (
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/hashicorp/memberlist"

	"halb/test/support"
)

// A peer with the right key can still gossip metadata this node cannot
// read: a newer halb with another state format, or a corrupt one. Its
// member entry must then say why and carry no facts at all — not the
// previous state, not half of a decode — so the election sees a member that
// is neither eligible nor holding anything.
func TestUnreadablePeerStateCarriesNoFacts(t *testing.T) {
	rec := support.NewLog()
	c, err := New(Config{NodeName: "lb1", BindAddr: netip.MustParseAddr("127.0.0.1"), Insecure: true}, rec.Logger())
	if err != nil {
		t.Fatal(err)
	}
	d := &delegate{c: c}
	good := State{Priority: 900, Eligible: true, Stable: true, Holds: []string{"10.0.0.160"}, Frontends: map[string]bool{"api": true}}
	valid, err := EncodeState(good)
	if err != nil {
		t.Fatal(err)
	}
	newer := append([]byte{stateFormat + 1}, valid[1:]...) // the same facts in a format this node does not speak
	node := func(meta []byte) *memberlist.Node {
		return &memberlist.Node{Name: "lb9", Addr: net.IPv4(127, 0, 0, 9), Port: 7946, Meta: meta}
	}
	peer := func() Member {
		t.Helper()
		for _, m := range c.Members() {
			if m.Name == "lb9" {
				return m
			}
		}
		t.Fatal("lb9 is not a member")
		return Member{}
	}
	steps := []struct {
		name    string
		meta    []byte
		join    bool
		wantErr string // "" : the state decodes
	}{
		{name: "joins speaking a newer format", meta: newer, join: true, wantErr: "unknown format version 2"},
		{name: "upgrades to this format", meta: valid},
		{name: "truncated", meta: valid[:len(valid)-3], wantErr: "decode state"},
		{name: "readable again", meta: valid},
		{name: "empty", meta: nil, wantErr: "empty"},
		{name: "garbage", meta: []byte(strings.Repeat("\xff", 40)), wantErr: "unknown format version 255"},
	}
	for _, s := range steps {
		if s.join {
			d.NotifyJoin(node(s.meta))
		} else {
			d.NotifyUpdate(node(s.meta))
		}
		m := peer()
		if s.wantErr == "" {
			if m.StateErr != "" {
				t.Fatalf("%s: state error %q", s.name, m.StateErr)
			}
			if diff := cmp.Diff(good, m.State, cmpopts.EquateEmpty()); diff != "" {
				t.Fatalf("%s: state (-want +got):\n%s", s.name, diff)
			}
			continue
		}
		if !strings.Contains(m.StateErr, s.wantErr) {
			t.Fatalf("%s: state error %q, want one containing %q", s.name, m.StateErr, s.wantErr)
		}
		if diff := cmp.Diff(State{}, m.State, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("%s: an unreadable state still carries facts (-want +got):\n%s", s.name, diff)
		}
		if !m.Alive {
			t.Fatalf("%s: a peer with an unreadable state is still a live member", s.name)
		}
	}
	// Each distinct problem is logged once, naming the peer.
	if n := rec.Count(slog.LevelWarn, "peer state unreadable", "peer=lb9"); n != 4 {
		t.Errorf("%d warnings about lb9's state, want 4 (one per change of problem)", n)
	}
}
