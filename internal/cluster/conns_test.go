package cluster

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// A holder's table chunk reaches the peer on the connection-table queue,
// named with its sender, and not on the queue drills read.
func TestSendConnsReachesPeer(t *testing.T) {
	a, b, _, _ := pair(t, "127.0.0.25", "127.0.0.26")
	want := ConnsMsg{From: "lb1", Kind: ConnsChunk, Payload: []byte("ht-chunk")}
	// Best effort: UDP on loopback is not lost in practice, but resend a
	// few times rather than flake.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		if err := a.c.SendConns("lb2", ConnsMsg{Kind: ConnsChunk, Payload: []byte("ht-chunk")}); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-b.c.ConnsMessages():
			if diff := cmp.Diff(want, m); diff != "" {
				t.Fatalf("message (-want +got):\n%s", diff)
			}
			select {
			case m := <-b.c.Messages():
				t.Fatalf("the drill queue got %q too", m)
			default:
			}
			if err := a.c.SendConns("lb9", want); err == nil || !strings.Contains(err.Error(), "not a member") {
				t.Errorf("send to a stranger: %v", err)
			}
			return
		case <-tick.C:
			if i == 50 {
				t.Fatal("lb2 never got the message")
			}
		}
	}
}

func TestDecodeConns(t *testing.T) {
	good := ConnsMsg{From: "lb-2", Kind: ConnsRequest, Payload: []byte{10, 0, 0, 1}}
	got, err := decodeConns(encodeConns(good))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(good, got); diff != "" {
		t.Fatalf("round trip (-want +got):\n%s", diff)
	}
	for name, b := range map[string][]byte{
		"no header":    connsMagic[:],
		"unknown kind": append(connsMagic[:], 7, 1, 'a'),
		"empty name":   append(connsMagic[:], 0, 0),
		"short name":   append(connsMagic[:], 0, 9, 'a', 'b'),
	} {
		if _, err := decodeConns(b); err == nil {
			t.Errorf("%s: decoded %x without an error", name, b)
		}
	}
}
