package failbench

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"

	"halb/test/benchresult"
	"halb/test/lab"
)

func TestSummarize(t *testing.T) {
	tests := []struct {
		name string
		in   []float64
		want Summary
	}{
		{"empty", nil, Summary{}},
		{"one", []float64{7}, Summary{7, 7, 7, 7}},
		{"ten unsorted", []float64{10, 1, 9, 2, 8, 3, 7, 4, 6, 5}, Summary{1, 5.5, 9, 10}},
		{"three", []float64{300, 100, 200}, Summary{100, 200, 300, 300}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := summarize(tt.in); got != tt.want {
				t.Fatalf("summarize(%v) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

// A run of one scenario keeps the other scenarios and systems measured
// earlier the same day, in the file and in the tables.
func TestMergeKeepsEarlierScenarios(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)
	runs := func(outages ...time.Duration) []rep {
		var rs []rep
		for _, o := range outages {
			rs = append(rs, rep{Outage: o, Failed: 2, Takeover: o / 2})
		}
		return rs
	}
	first := &FailoverResult{}
	first.merge(HalbLAN, &SystemResult{Title: "halb lan", WindowMS: 200, Scenarios: map[string]*ScenarioResult{
		Kill:    scenarioResult("kill", false, "1.0", now, runs(time.Second, 2*time.Second, 3*time.Second), nil),
		Planned: scenarioResult("planned", false, "1.0", now, runs(10*time.Millisecond), nil),
	}})
	first.merge(KeepalivedDef, &SystemResult{Title: "keepalived", WindowMS: 1000, Scenarios: map[string]*ScenarioResult{
		Kill: scenarioResult("kill", false, "1.0", now, runs(3*time.Second), nil),
	}})
	if _, err := benchresult.Merge(dir, "failover", benchresult.Machine{}, first, now); err != nil {
		t.Fatal(err)
	}

	var again FailoverResult
	if err := loadPart(dir, "failover", now, &again); err != nil {
		t.Fatal(err)
	}
	again.merge(HalbLAN, &SystemResult{Title: "halb lan", WindowMS: 200, Scenarios: map[string]*ScenarioResult{
		Kill: scenarioResult("kill", true, "2.0", now, runs(500*time.Millisecond), []string{"boom"}),
	}})
	if got := again.Systems[HalbLAN].Scenarios[Kill]; got.Reps != 1 || got.OutageMS.Median != 500 || !got.Quick {
		t.Errorf("kill on halb-lan was not replaced: %+v", got)
	}
	if got := again.Systems[HalbLAN].Scenarios[Planned]; got == nil || got.OutageMS.Median != 10 {
		t.Errorf("planned on halb-lan was lost: %+v", got)
	}
	if again.Systems[KeepalivedDef] == nil {
		t.Error("keepalived-default was lost")
	}

	md := again.Markdown()
	for _, want := range []string{"| hard kill of the holder", "| halb-lan | 1 (quick) + 1 not measured | 500 / 500 / 500 / 500 |", "| keepalived-default | 1 |"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	var tb bytes.Buffer
	again.WriteTable(&tb)
	if lines := strings.Split(strings.TrimSpace(tb.String()), "\n"); len(lines) != 4 {
		t.Errorf("table has %d lines, want a header and 3 rows:\n%s", len(lines), tb.String())
	}
}

func TestLoadPartMissingFile(t *testing.T) {
	var f FailoverResult
	if err := loadPart(t.TempDir(), "failover", time.Now(), &f); err != nil || f.Systems != nil {
		t.Fatalf("missing file: %v %+v", err, f)
	}
}

// Each held connection counts from the cut; one never told, or never
// replaced, counts at the bound, so a system that leaves its clients
// blind shows the bound, not a flattering median of the few it told. The
// steps of a reconnection come from the attempt that worked.
func TestLongLivedOutcome(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	reset := fmt.Errorf("read: %w", syscall.ECONNRESET)
	res := []lab.LongLivedConn{
		// failed at 200, first try at 210 refused, the one at 310 worked:
		// connected at 320, TLS done at 380, answered at 400.
		{Failed: at(200), Err: reset, Attempts: 2, FirstTry: at(210), Try: at(310), Connected: at(320), Handshook: at(380), Recovered: at(400)},
		{Failed: at(250), Err: io.EOF, Attempts: 1, FirstTry: at(250), Try: at(250), Connected: at(260), Handshook: at(300), Recovered: at(330)},
		{Failed: at(900), Err: reset}, // never replaced
		{},                            // never told
	}
	got := longLivedOutcome(t0, res, 15*time.Second)
	want := &longLivedRep{
		Conns: 4, StillOpen: 1, NotRecovered: 1, Resets: 2,
		FailedMS:    Summary{Min: 200, Median: 575, P90: 15000, Max: 15000},
		RecoveredMS: Summary{Min: 330, Median: 7700, P90: 15000, Max: 15000},
		QueueMS:     Summary{Min: 0, Median: 5, P90: 10, Max: 10},
		RetryMS:     Summary{Min: 0, Median: 55, P90: 110, Max: 110},
		ConnectMS:   Summary{Min: 10, Median: 10, P90: 10, Max: 10},
		TLSMS:       Summary{Min: 40, Median: 50, P90: 60, Max: 60},
		RequestMS:   Summary{Min: 20, Median: 25, P90: 30, Max: 30},
		Attempts:    Summary{Min: 1, Median: 1.5, P90: 2, Max: 2},
	}
	if *got != *want {
		t.Errorf("outcome\n%+v\nwant\n%+v", *got, *want)
	}
	got.CPU = &cpuUse{WallMS: 1000, ClientMS: 300, ProxyMS: 200, ServersMS: 400}
	s := summarizeLongLived([]rep{{LongLived: got}, {LongLived: got}})
	if s.StillOpen != 2 || s.Resets != 4 || s.FailedMax.Max != 15000 || s.RecoveredMed.Median != 7700 || s.TLSMed.Median != 50 || s.CPU.ServersMS != 800 {
		t.Errorf("summary %+v", *s)
	}
}

// The tickle column keeps the counts and the duration of the last
// tickle line in the new holder's log.
func TestTickleLine(t *testing.T) {
	log := `time=2026-12-07T08:00:00Z level=INFO msg="tickled the previous holder's connections" component=tickle vip=192.168.66.160 iface=eth0 tickled=3 acknowledged=2 already_closed=1 sent=6 failed=0 took=1ms
time=2026-12-07T08:00:01Z level=INFO msg="VIP claimed" component=vip
time=2026-12-07T08:00:02Z level=INFO msg="tickled the previous holder's connections" component=tickle vip=192.168.66.160 iface=eth0 tickled=1001 acknowledged=1000 already_closed=1 sent=2002 failed=0 took=41ms
`
	if got, want := tickleLine(log), "tickled=1001 acknowledged=1000 already_closed=1 took=41ms"; got != want {
		t.Errorf("tickleLine = %q, want %q", got, want)
	}
	if got := tickleLine("time=x msg=\"VIP claimed\"\n"); got != "" {
		t.Errorf("tickleLine of a log without tickles = %q, want empty", got)
	}
}

// The long-lived scenarios inject the same failures as kill and
// linkdown, measured on held connections, and run at most
// longLivedReps times.
func TestLongLivedScenarios(t *testing.T) {
	r := &runner{}
	for _, name := range longLivedScenarios() {
		sc, err := r.scenario(name)
		if err != nil || !sc.longLived || sc.inject == nil || sc.repair == nil || sc.to != standby {
			t.Errorf("scenario %s: %+v, %v; want a long-lived failure of %s moving to %s", name, sc, err, preferred, standby)
		}
		if want := strings.Contains(name, "echo"); sc.echo != want {
			t.Errorf("scenario %s: echo %v, want %v", name, sc.echo, want)
		}
		// A planned move is done when the standby has the VIP, even while
		// the old holder keeps the address for its handed-off connections.
		if strings.HasSuffix(name, "-drill") || strings.HasSuffix(name, "-stop") {
			if !sc.done([]string{preferred, standby}) || sc.done([]string{preferred}) {
				t.Errorf("scenario %s: done does not wait for %s alone", name, standby)
			}
		}
	}
	if _, err := r.scenario("longlived-reboot"); err == nil {
		t.Error("an unknown long-lived mode was accepted")
	}
	if sc, _ := r.scenario(Kill); sc.longLived {
		t.Error("kill measures long-lived connections, want probes")
	}
	if got := longLivedRepsFor(LongKill, 10); got != longLivedReps {
		t.Errorf("reps of %s = %d, want %d", LongKill, got, longLivedReps)
	}
	if got := longLivedRepsFor(Kill, 10); got != 10 {
		t.Errorf("reps of %s = %d, want 10", Kill, got)
	}
}
