package admin

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

func TestRenderGolden(t *testing.T) {
	cases := []struct {
		name string
		snap Snapshot
	}{
		{"healthy_pair", healthyPair()},
		{"split_brain", splitBrain()},
		{"down_server", downServer()},
	}
	for _, tc := range cases {
		for _, color := range []bool{false, true} {
			name := tc.name
			if color {
				name += "_color"
			}
			t.Run(name, func(t *testing.T) {
				var b bytes.Buffer
				Render(&b, tc.snap, color)
				golden := filepath.Join("testdata", name+".golden")
				if *update {
					if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("%v (run go test -update to create it)", err)
				}
				if got := b.String(); got != string(want) {
					t.Errorf("Render differs from %s (go test -update rewrites it):\n--- got\n%s\n--- want\n%s", golden, got, want)
				}
				if !color && strings.Contains(b.String(), "\x1b") {
					t.Errorf("uncoloured output has escape sequences")
				}
			})
		}
	}
}

// line returns the line of out that starts (after indentation) with prefix.
func line(t *testing.T, out, prefix string) string {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(strings.TrimLeft(l, " "), prefix) {
			return l
		}
	}
	t.Fatalf("no line starting with %q in:\n%s", prefix, out)
	return ""
}

func TestRenderFlagsSplitBrain(t *testing.T) {
	var b bytes.Buffer
	Render(&b, splitBrain(), false)
	out := b.String()
	// With no majority, the member that differs from this node is flagged.
	if l := line(t, out, "lb2 "); !strings.Contains(l, "DISAGREES") {
		t.Errorf("lb2 not flagged: %q", l)
	}
	if l := line(t, out, "lb1 *"); strings.Contains(l, "DISAGREES") {
		t.Errorf("this node flagged against itself: %q", l)
	}

	var c bytes.Buffer
	Render(&c, splitBrain(), true)
	if !strings.Contains(c.String(), red+"DISAGREES"+reset) {
		t.Errorf("DISAGREES not red in coloured output:\n%s", c.String())
	}
}

func TestRenderFlagsMinorityAndConfig(t *testing.T) {
	// Three members: lb2 and lb3 agree on lb2, this node alone says lb1 —
	// this node is the odd one out.
	s := healthyPair()
	s.Members[1].HolderView[vip] = "lb2"
	lb3 := member("lb3", "192.168.66.153", 50, false, "lb2")
	lb3.Fingerprint = "99999999"
	s.Members = append(s.Members, lb3)
	var b bytes.Buffer
	Render(&b, s, false)
	out := b.String()
	if l := line(t, out, "lb1 *"); !strings.Contains(l, "DISAGREES") {
		t.Errorf("minority node not flagged: %q", l)
	}
	if l := line(t, out, "lb2 "); strings.Contains(l, "DISAGREES") {
		t.Errorf("majority member flagged: %q", l)
	}
	if l := line(t, out, "lb3 "); !strings.Contains(l, "CONFIG DIFFERS") {
		t.Errorf("fingerprint mismatch not flagged: %q", l)
	}
}

// A partial partition and a disputed gossip verdict are spelled out on
// the member's line.
func TestRenderFlagsPartialPartition(t *testing.T) {
	s := healthyPair()
	s.Members[1].HeardVia = "lb3"
	s.Members[1].Disputed = true
	var b bytes.Buffer
	Render(&b, s, true)
	l := line(t, b.String(), "lb2 ")
	for _, want := range []string{"UNREACHABLE FROM HERE, heard by lb3", "gossip says failed, heartbeats say alive", yellow} {
		if !strings.Contains(l, want) {
			t.Errorf("lb2's line lacks %q: %q", want, l)
		}
	}
}

func TestRenderServerStateColours(t *testing.T) {
	var b bytes.Buffer
	Render(&b, downServer(), true)
	out := b.String()
	for _, want := range []string{green + "up" + reset, red + "down" + reset, yellow + "drain" + reset} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
}

func TestRenderAlignsColouredColumns(t *testing.T) {
	var plain, coloured bytes.Buffer
	Render(&plain, downServer(), false)
	Render(&coloured, downServer(), true)
	stripped := strings.NewReplacer(red, "", green, "", yellow, "", bold, "", reset, "").Replace(coloured.String())
	if stripped != plain.String() {
		t.Errorf("colour changes layout:\n--- coloured, stripped\n%s\n--- plain\n%s", stripped, plain.String())
	}
}

func TestDuration(t *testing.T) {
	for _, tc := range []struct {
		secs float64
		want string
	}{{0, "0s"}, {59.4, "59s"}, {61, "1m1s"}, {7384, "2h3m"}, {3*86400 + 4*3600 + 5, "3d4h"}} {
		if got := Duration(secondsDur(tc.secs)); got != tc.want {
			t.Errorf("duration(%vs) = %q, want %q", tc.secs, got, tc.want)
		}
	}
}

func TestBytesIEC(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{{0, "0B"}, {1023, "1023B"}, {1536, "1.5KiB"}, {15 << 20, "15.0MiB"}, {3 << 40, "3.0TiB"}} {
		if got := bytesIEC(tc.n); got != tc.want {
			t.Errorf("bytesIEC(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}
