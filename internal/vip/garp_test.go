package vip

import (
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/arp"
)

var testMAC = net.HardwareAddr{0x02, 0x42, 0xc0, 0xa8, 0x42, 0x97}

func TestGARPFramesGolden(t *testing.T) {
	req, rep, err := garpFrames(testMAC, netip.MustParseAddr("192.168.66.160"))
	if err != nil {
		t.Fatal(err)
	}
	pad := make([]byte, 18) // 28-byte ARP payload padded to Ethernet's 46-byte minimum
	wantReq := concat(
		[]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, // dst: broadcast
		[]byte{0x02, 0x42, 0xc0, 0xa8, 0x42, 0x97}, // src: our MAC
		[]byte{0x08, 0x06},                         // EtherType ARP
		[]byte{0x00, 0x01},                         // hardware type Ethernet
		[]byte{0x08, 0x00},                         // protocol IPv4
		[]byte{0x06, 0x04},                         // address lengths
		[]byte{0x00, 0x01},                         // op: request
		[]byte{0x02, 0x42, 0xc0, 0xa8, 0x42, 0x97}, // sender MAC
		[]byte{0xc0, 0xa8, 0x42, 0xa0},             // sender IP 192.168.66.160
		[]byte{0x00, 0x00, 0x00, 0x00, 0x00, 0x00}, // target MAC: zero
		[]byte{0xc0, 0xa8, 0x42, 0xa0},             // target IP = sender IP
		pad,
	)
	wantRep := concat(
		[]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		[]byte{0x02, 0x42, 0xc0, 0xa8, 0x42, 0x97},
		[]byte{0x08, 0x06},
		[]byte{0x00, 0x01},
		[]byte{0x08, 0x00},
		[]byte{0x06, 0x04},
		[]byte{0x00, 0x02}, // op: reply
		[]byte{0x02, 0x42, 0xc0, 0xa8, 0x42, 0x97},
		[]byte{0xc0, 0xa8, 0x42, 0xa0},
		[]byte{0x02, 0x42, 0xc0, 0xa8, 0x42, 0x97}, // target MAC = sender MAC, as Linux requires
		[]byte{0xc0, 0xa8, 0x42, 0xa0},
		pad,
	)
	if diff := cmp.Diff(wantReq, req); diff != "" {
		t.Errorf("request frame (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantRep, rep); diff != "" {
		t.Errorf("reply frame (-want +got):\n%s", diff)
	}
}

func TestNAFrameGolden(t *testing.T) {
	got, err := naFrame(testMAC, netip.MustParseAddr("fd00:66::160"))
	if err != nil {
		t.Fatal(err)
	}
	vip := []byte{0xfd, 0x00, 0x00, 0x66, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x60}
	allNodes := []byte{0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01}
	want := concat(
		[]byte{0x33, 0x33, 0x00, 0x00, 0x00, 0x01}, // dst: all-nodes multicast MAC
		[]byte{0x02, 0x42, 0xc0, 0xa8, 0x42, 0x97}, // src: our MAC
		[]byte{0x86, 0xdd},                         // EtherType IPv6
		[]byte{0x60, 0x00, 0x00, 0x00},             // version 6, class 0, flow 0
		[]byte{0x00, 0x20},                         // payload length 32
		[]byte{58, 255},                            // next header ICMPv6, hop limit 255
		vip,                                        // source: the VIP
		allNodes,                                   // destination: ff02::1
		[]byte{136, 0},                             // neighbour advertisement, code 0
		[]byte{0x53, 0x90},                         // checksum (computed independently)
		[]byte{0x20, 0, 0, 0},                      // flags: override only
		vip,                                        // target
		[]byte{2, 1},                               // option: target link-layer address, 8 bytes
		[]byte{0x02, 0x42, 0xc0, 0xa8, 0x42, 0x97},
	)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("neighbour advertisement (-want +got):\n%s", diff)
	}
}

func TestFramesRejectBadInput(t *testing.T) {
	v4, v6 := netip.MustParseAddr("192.168.66.160"), netip.MustParseAddr("fd00::1")
	if _, _, err := garpFrames(testMAC, v6); err == nil {
		t.Error("garpFrames accepted an IPv6 address")
	}
	if _, _, err := garpFrames(net.HardwareAddr{1, 2, 3}, v4); err == nil {
		t.Error("garpFrames accepted a 3-byte MAC")
	}
	if _, err := naFrame(testMAC, v4); err == nil {
		t.Error("naFrame accepted an IPv4 address")
	}
}

func TestLabel(t *testing.T) {
	for _, tt := range []struct{ ifname, want string }{
		{"eth0", "eth0:halb"},
		{"enp0s31f6", "enp0s31f6:halb"},
		{"enp0s20f0u1u2", "enp0s20f0u:halb"},
		{"verylonginterfa", "verylongin:halb"},
	} {
		got := Label(tt.ifname)
		if got != tt.want || len(got) > 15 {
			t.Errorf("Label(%q) = %q, want %q (at most 15 bytes)", tt.ifname, got, tt.want)
		}
	}
}

func concat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func TestForeignSender(t *testing.T) {
	ip := netip.MustParseAddr("192.168.66.160")
	own := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	peer := net.HardwareAddr{2, 0, 0, 0, 0, 2}
	req, rep, err := garpFrames(peer, ip)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range [][]byte{req, rep} {
		if got := foreignSender(f, ip, own); !bytes.Equal(got, peer) {
			t.Errorf("a peer's gratuitous ARP: got sender %v, want %v", got, peer)
		}
	}
	ownReq, _, err := garpFrames(own, ip)
	if err != nil {
		t.Fatal(err)
	}
	if got := foreignSender(ownReq, ip, own); got != nil {
		t.Errorf("our own announcement counted as foreign: %v", got)
	}
	// A client asking who has the VIP names it as the target, not the sender.
	ask, err := arpFrame(arp.OperationRequest, peer, netip.MustParseAddr("192.168.66.100"), net.HardwareAddr{0, 0, 0, 0, 0, 0})
	if err != nil {
		t.Fatal(err)
	}
	if got := foreignSender(ask, ip, own); got != nil {
		t.Errorf("an ARP from another address counted: %v", got)
	}
	if got := foreignSender([]byte{1, 2, 3}, ip, own); got != nil {
		t.Errorf("garbage counted: %v", got)
	}
}
