package events

import (
	"testing"
	"time"
)

func TestRingKeepsLastAndSinceFilters(t *testing.T) {
	b := New(3)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 5 {
		b.Publish(Event{Kind: ServerUp, Server: string(rune('a' + i)), Time: t0.Add(time.Duration(i) * time.Second)})
	}
	got := b.Since(time.Time{})
	if len(got) != 3 || got[0].Server != "c" || got[2].Server != "e" {
		t.Fatalf("ring = %+v, want c, d, e", got)
	}
	if got[0].Seq != 3 || got[2].Seq != 5 {
		t.Fatalf("seqs = %d..%d, want 3..5", got[0].Seq, got[2].Seq)
	}
	got = b.Since(t0.Add(4 * time.Second))
	if len(got) != 1 || got[0].Server != "e" {
		t.Fatalf("since 4s = %+v, want only e", got)
	}
}

func TestSubscribeNoGapNoRepeat(t *testing.T) {
	b := New(10)
	b.Publish(Event{Kind: VIPClaimed, VIP: "10.0.0.1"})
	past, s := b.Subscribe(time.Unix(1, 0))
	defer s.Close()
	b.Publish(Event{Kind: VIPReleased, VIP: "10.0.0.1"})
	if len(past) != 1 || past[0].Kind != VIPClaimed {
		t.Fatalf("past = %+v, want the claim", past)
	}
	e := <-s.C()
	if e.Kind != VIPReleased || e.Seq != 2 {
		t.Fatalf("live = %+v, want the release with seq 2", e)
	}
	select {
	case e := <-s.C():
		t.Fatalf("unexpected extra event %+v", e)
	default:
	}
}

func TestSlowSubscriberDoesNotBlockPublisher(t *testing.T) {
	b := New(10)
	_, s := b.Subscribe(time.Time{})
	defer s.Close()
	for range subBuffer + 5 {
		b.Publish(Event{Kind: ServerDown})
	}
	if n := s.Dropped(); n != 5 {
		t.Fatalf("dropped = %d, want 5", n)
	}
	s.Close()
	b.Publish(Event{Kind: ServerDown}) // a closed subscriber gets nothing and costs nothing
	if len(b.subs) != 0 {
		t.Fatalf("subscribers after close = %d", len(b.subs))
	}
}

func TestParseKind(t *testing.T) {
	if k, err := ParseKind("member_failed"); err != nil || k != MemberFailed {
		t.Fatalf("ParseKind = %q, %v", k, err)
	}
	if _, err := ParseKind("vip_up"); err == nil {
		t.Fatal("ParseKind accepted an unknown kind")
	}
}
