package tickle

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/net/bpf"
)

// segment builds a packet from client to vip with the given flags, TCP
// options of optLen bytes and payload, as a client's kernel would send it.
type segment struct {
	from, to      netip.AddrPort
	ack, rst, syn bool
	fin           bool
	payload       []byte
	timestamps    bool // 12 bytes of options, as Linux sends on an ACK
}

func (s segment) bytes(t *testing.T) []byte {
	t.Helper()
	tcp := &layers.TCP{
		SrcPort: layers.TCPPort(s.from.Port()), DstPort: layers.TCPPort(s.to.Port()),
		Seq: 1000, Ack: 2000, ACK: s.ack, RST: s.rst, SYN: s.syn, FIN: s.fin, Window: 500,
	}
	if s.timestamps {
		tcp.Options = []layers.TCPOption{
			{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop},
			{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: make([]byte, 8)},
		}
	}
	var ip gopacket.SerializableLayer
	if s.from.Addr().Is4() {
		ip4 := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: s.from.Addr().AsSlice(), DstIP: s.to.Addr().AsSlice()}
		_ = tcp.SetNetworkLayerForChecksum(ip4)
		ip = ip4
	} else {
		ip6 := &layers.IPv6{Version: 6, NextHeader: layers.IPProtocolTCP, HopLimit: 64, SrcIP: s.from.Addr().AsSlice(), DstIP: s.to.Addr().AsSlice()}
		_ = tcp.SetNetworkLayerForChecksum(ip6)
		ip = ip6
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip, tcp, gopacket.Payload(s.payload)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

var (
	vip4    = netip.MustParseAddrPort("192.0.2.10:6443")
	client4 = netip.MustParseAddrPort("198.51.100.7:40001")
	vip6    = netip.MustParseAddrPort("[2001:db8::10]:6443")
	client6 = netip.MustParseAddrPort("[2001:db8:1::7]:40001")
)

// The socket filter passes exactly the packets that can answer a tickle
// (TCP to the VIP without payload, with or without options) and keeps
// the proxy's data traffic and other hosts' packets in the kernel. It
// runs in x/net/bpf's VM, which executes classic BPF as the kernel does.
func TestAnswerFilter(t *testing.T) {
	other4 := netip.MustParseAddrPort("192.0.2.11:6443")
	other6 := netip.MustParseAddrPort("[2001:db8::11]:6443")
	tests := []struct {
		name string
		vip  netip.AddrPort
		seg  segment
		want bool
	}{
		{"v4 pure ACK", vip4, segment{from: client4, to: vip4, ack: true}, true},
		{"v4 ACK with timestamps", vip4, segment{from: client4, to: vip4, ack: true, timestamps: true}, true},
		{"v4 reset", vip4, segment{from: client4, to: vip4, rst: true}, true},
		{"v4 reset and ACK", vip4, segment{from: client4, to: vip4, rst: true, ack: true}, true},
		{"v4 SYN of a new connection", vip4, segment{from: client4, to: vip4, syn: true}, false},
		{"v4 FIN of a close", vip4, segment{from: client4, to: vip4, fin: true, ack: true}, false},
		{"v4 FIN with timestamps", vip4, segment{from: client4, to: vip4, fin: true, ack: true, timestamps: true}, false},
		{"v4 data", vip4, segment{from: client4, to: vip4, ack: true, payload: []byte("GET /")}, false},
		{"v4 data with timestamps", vip4, segment{from: client4, to: vip4, ack: true, timestamps: true, payload: []byte("x")}, false},
		{"v4 to another address", vip4, segment{from: client4, to: other4, ack: true}, false},
		{"v4 from the VIP", vip4, segment{from: vip4, to: client4, ack: true}, false},
		{"v6 pure ACK", vip6, segment{from: client6, to: vip6, ack: true}, true},
		{"v6 ACK with timestamps", vip6, segment{from: client6, to: vip6, ack: true, timestamps: true}, true},
		{"v6 data", vip6, segment{from: client6, to: vip6, ack: true, payload: []byte("GET /")}, false},
		{"v6 reset", vip6, segment{from: client6, to: vip6, rst: true}, true},
		{"v6 SYN of a new connection", vip6, segment{from: client6, to: vip6, syn: true}, false},
		{"v6 FIN of a close", vip6, segment{from: client6, to: vip6, fin: true, ack: true}, false},
		{"v6 to another address", vip6, segment{from: client6, to: other6, ack: true}, false},
		{"v6 packet on a v4 filter", vip4, segment{from: client6, to: vip6, ack: true}, false},
		{"v4 packet on a v6 filter", vip6, segment{from: client4, to: vip4, ack: true}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := answerFilter(tt.vip.Addr())
			if err != nil {
				t.Fatal(err)
			}
			prog, ok := bpf.Disassemble(raw)
			if !ok {
				t.Fatal("filter does not disassemble")
			}
			vm, err := bpf.NewVM(prog)
			if err != nil {
				t.Fatalf("filter rejected by the VM: %v", err)
			}
			n, err := vm.Run(tt.seg.bytes(t))
			if err != nil {
				t.Fatal(err)
			}
			if got := n > 0; got != tt.want {
				t.Errorf("filter passes %v, want %v", got, tt.want)
			}
		})
	}
}

// A tally counts each tickled connection once: acknowledged if the
// client sent a pure ACK (even if later rounds drew resets), closed if
// only resets came; packets of connections not tickled, data and other
// addresses do not count.
func TestTally(t *testing.T) {
	for _, fam := range []struct {
		name        string
		vip, client netip.AddrPort
	}{{"IPv4", vip4, client4}, {"IPv6", vip6, client6}} {
		t.Run(fam.name, func(t *testing.T) {
			c := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(fam.client.Addr(), port) }
			targets := []Target{
				{VIP: fam.vip, Client: c(1)}, // answers with ACK, then resets
				{VIP: fam.vip, Client: c(2)}, // only a reset: already closed
				{VIP: fam.vip, Client: c(3)}, // only data: not an answer
				{VIP: fam.vip, Client: c(4)}, // silent
				{VIP: fam.vip, Client: c(5)}, // ACK with timestamps
			}
			ta := NewTally(fam.vip.Addr(), targets)
			for _, s := range []segment{
				{from: c(1), to: fam.vip, ack: true},
				{from: c(1), to: fam.vip, rst: true},
				{from: c(2), to: fam.vip, rst: true, ack: true},
				{from: c(3), to: fam.vip, ack: true, payload: []byte("data")},
				{from: c(3), to: fam.vip, ack: true, fin: true},
				{from: c(5), to: fam.vip, ack: true, timestamps: true},
				{from: c(9), to: fam.vip, ack: true},                                                       // not tickled
				{from: c(1), to: netip.AddrPortFrom(fam.vip.Addr(), 50000), ack: true},                     // another frontend
				{from: fam.vip, to: c(4), ack: true},                                                       // our own tickle
				{from: c(4), to: netip.AddrPortFrom(fam.vip.Addr(), fam.vip.Port()), ack: true, syn: true}, // a new connection
			} {
				ta.Observe(s.bytes(t))
			}
			ta.Observe(nil)
			ta.Observe([]byte{0x45, 0})
			want := Answers{Acknowledged: 2, Closed: 1}
			if diff := cmp.Diff(want, ta.Answers()); diff != "" {
				t.Errorf("answers (-want +got):\n%s", diff)
			}
		})
	}
}

// A v4-mapped target counts the answers of its plain IPv4 connection:
// the proxy may report IPv4 clients of a dual-stack listener mapped.
func TestTallyMapped(t *testing.T) {
	mapped := netip.AddrPortFrom(netip.AddrFrom16(client4.Addr().As16()), client4.Port())
	ta := NewTally(netip.AddrFrom16(vip4.Addr().As16()), []Target{{VIP: netip.AddrPortFrom(netip.AddrFrom16(vip4.Addr().As16()), vip4.Port()), Client: mapped}})
	ta.Observe(segment{from: client4, to: vip4, ack: true}.bytes(t))
	if got := ta.Answers().Acknowledged; got != 1 {
		t.Errorf("acknowledged %d, want 1", got)
	}
}

func FuzzParseAnswer(f *testing.F) {
	f.Add([]byte{0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6})
	f.Add(make([]byte, 60))
	f.Fuzz(func(t *testing.T, b []byte) {
		tg, kind, _, ok := parseAnswer(b)
		if !ok && kind != noAnswer {
			t.Fatalf("not an answer but kind %d", kind)
		}
		if ok && (!tg.VIP.IsValid() || !tg.Client.IsValid()) {
			t.Fatalf("answer %v without addresses", tg)
		}
	})
}

// A connection is settled for the repeats once its client answered: for
// good after a reset (no socket left), and for all but the last round
// after an ACK (the last covers a lost reset). Silence, data and packets
// of other connections settle nothing.
func TestTallySettled(t *testing.T) {
	c := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(client4.Addr(), port) }
	targets := []Target{{VIP: vip4, Client: c(1)}, {VIP: vip4, Client: c(2)}, {VIP: vip4, Client: c(3)}, {VIP: vip4, Client: c(4)}}
	ta := NewTally(vip4.Addr(), targets)
	for _, s := range []segment{
		{from: c(1), to: vip4, ack: true},
		{from: c(2), to: vip4, rst: true},
		{from: c(3), to: vip4, ack: true, payload: []byte("data")},
		{from: c(9), to: vip4, rst: true},
	} {
		ta.Observe(s.bytes(t))
	}
	for _, tt := range []struct {
		port             uint16
		midRound, lastRd bool
	}{{1, true, false}, {2, true, true}, {3, false, false}, {4, false, false}, {9, false, false}} {
		tg := Target{VIP: vip4, Client: c(tt.port)}
		if got := ta.Settled(tg, false); got != tt.midRound {
			t.Errorf("client port %d settled before the last round: %v, want %v", tt.port, got, tt.midRound)
		}
		if got := ta.Settled(tg, true); got != tt.lastRd {
			t.Errorf("client port %d settled in the last round: %v, want %v", tt.port, got, tt.lastRd)
		}
	}
}

// The count is complete once every tickled connection answered, with an
// ACK or a reset; strangers, data and repeats change nothing.
func TestTallyComplete(t *testing.T) {
	c := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(client4.Addr(), port) }
	ta := NewTally(vip4.Addr(), []Target{{VIP: vip4, Client: c(1)}, {VIP: vip4, Client: c(2)}})
	steps := []struct {
		seg  segment
		want bool
	}{
		{segment{from: c(9), to: vip4, ack: true}, false},                       // not tickled
		{segment{from: c(1), to: vip4, ack: true, payload: []byte("x")}, false}, // data
		{segment{from: c(1), to: vip4, ack: true}, false},                       // one of two
		{segment{from: c(1), to: vip4, rst: true}, false},                       // the same one again
		{segment{from: c(2), to: vip4, rst: true}, true},                        // the other: all answered
		{segment{from: c(2), to: vip4, ack: true}, true},                        // stays complete
	}
	for i, st := range steps {
		ta.Observe(st.seg.bytes(t))
		if got := ta.Complete(); got != st.want {
			t.Fatalf("after packet %d: complete %v, want %v", i, got, st.want)
		}
	}
	// The acknowledgement number of the first ACK answer (segment's 2000)
	// is kept for the reset; strangers have none.
	if seq, ok := ta.Acked(Target{VIP: vip4, Client: c(1)}); !ok || seq != 2000 {
		t.Errorf("acked = %d, %v for the target that answered with an ACK acknowledging 2000, want 2000", seq, ok)
	}
	if _, ok := ta.Acked(Target{VIP: vip4, Client: c(9)}); ok {
		t.Error("a target never tickled counts as acked")
	}
	if NewTally(vip4.Addr(), nil).Complete() != true {
		t.Error("a tally of no targets is not complete")
	}
}
