package admin

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// A check the server rejects for credentials is a problem of its own,
// named with its fix, even while other servers keep the backend healthy.
func TestVerdictCheckRejected(t *testing.T) {
	s := healthyPair()
	sv := &s.Backends[0].Servers[1]
	sv.State, sv.LastCheckOK, sv.CheckFailure = StateDown, false, CheckRejected
	sv.LastCheck = "401 Unauthorized: kube-apiserver rejects anonymous requests"
	code, problems := Verdict(s)
	if code != CodeDegraded {
		t.Fatalf("code %d, want %d", code, CodeDegraded)
	}
	if len(problems) != 1 || !strings.Contains(problems[0], "check rejected: credentials: 401 Unauthorized") || !strings.Contains(problems[0], sv.Name) {
		t.Fatalf("problems %q, want one naming %s and the rejected check", problems, sv.Name)
	}
	var buf bytes.Buffer
	Render(&buf, s, false)
	if !strings.Contains(buf.String(), "check rejected: credentials: 401 Unauthorized") {
		t.Fatalf("status does not show the rejected check:\n%s", buf.String())
	}
}

func TestVerdictPanic(t *testing.T) {
	s := healthyPair()
	b := &s.Backends[0]
	b.Panic, b.Healthy = true, false
	for i := range b.Servers {
		b.Servers[i].State = StateDown
	}
	code, problems := Verdict(s)
	if code != CodeDegraded || len(problems) == 0 || !strings.Contains(strings.Join(problems, "\n"), "PANIC") {
		t.Fatalf("code %d problems %q, want a PANIC problem", code, problems)
	}
	var buf bytes.Buffer
	Render(&buf, s, false)
	if !strings.Contains(buf.String(), "PANIC: forwarding to servers that checks marked down") {
		t.Fatalf("status does not flag the panic:\n%s", buf.String())
	}
}

// A server's HTTP reason phrase comes from the network: escape sequences
// in it must reach the terminal as text, not as commands (D9).
func TestRenderEscapesNetworkText(t *testing.T) {
	s := healthyPair()
	sv := &s.Backends[0].Servers[0]
	sv.LastCheck = "200 \x1b[2J\x1b]0;pwned\x07OK\x9b\xff"
	sv.LastCheckOK = true
	s.Members[1].Name = "lb2\x1b[31m"
	var buf bytes.Buffer
	Render(&buf, s, false)
	out := buf.String()
	for _, bad := range []string{"\x1b", "\x07", "\x9b", "\xff"} {
		if strings.Contains(out, bad) {
			t.Fatalf("status passes %q through to the terminal:\n%q", bad, out)
		}
	}
	if !strings.Contains(out, `200 \x1b[2J\x1b]0;pwned\aOK\x9b\xff`) {
		t.Fatalf("escaped reason not shown as text:\n%s", out)
	}
	s.Backends[0].Servers[0].CheckFailure = CheckRejected
	s.Backends[0].Servers[0].LastCheckOK = false
	_, problems := Verdict(s)
	for _, p := range problems {
		if strings.ContainsAny(p, "\x1b\x07") {
			t.Fatalf("problem %q carries control characters", p)
		}
	}
}

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"plain text":       "plain text",
		"talos-lon-cp01 ✓": "talos-lon-cp01 ✓",
		"a\tb\nc":          `a\tb\nc`,
		"\x1b[2J":          `\x1b[2J`,
		"\u009b":           `\u009b`,
		"bad\xffutf8":      `bad\xffutf8`,
	} {
		if got := Printable(in); got != want {
			t.Errorf("Printable(%q) = %q, want %q", in, got, want)
		}
	}
}

// The connection table and the last takeover's tickles are in the status
// text, not only in the JSON (issue 17).
func TestRenderShowsTickles(t *testing.T) {
	s := healthyPair()
	s.VIPs[0].ConnTable = 212
	s.VIPs[0].LastTickled = 198
	s.VIPs[0].LastTakeover = s.Time.Add(-3 * time.Second)
	var buf bytes.Buffer
	Render(&buf, s, false)
	out := buf.String()
	for _, want := range []string{"CONNS", " 212 ", "last takeover here 3s ago: 198 client connection(s) of the previous holder tickled"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}

// The answers and reconnections of the last takeover follow its count:
// what "tickled 198" achieved.
func TestTickleSummary(t *testing.T) {
	for _, tt := range []struct {
		name string
		o    *TickleOutcome
		want string
	}{
		{"nothing known", nil, ""},
		{"counted, all back", &TickleOutcome{Counted: true, Acknowledged: 197, AlreadyClosed: 1, Clients: 12, Reconnected: 12, ReconnectedWithin: 0.4},
			", 197 acknowledged (reset), 1 already closed; all 12 client(s) reconnected within 400ms"},
		{"not counted, some back", &TickleOutcome{Clients: 12, Reconnected: 5, ReconnectedWithin: 1.25},
			"; 5 of 12 client(s) reconnected within 1.25s"},
		{"none back yet", &TickleOutcome{Counted: true, Acknowledged: 3, Clients: 2},
			", 3 acknowledged (reset); none of 2 client(s) reconnected yet"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := TickleSummary(tt.o); got != tt.want {
				t.Errorf("TickleSummary = %q, want %q", got, tt.want)
			}
		})
	}
}
