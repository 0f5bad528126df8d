package haproxy

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// serverNames imports cfg and returns the servers of each backend as
// "backend/server".
func serverNames(t *testing.T, cfg string, opts Options) ([]string, []Warning, string) {
	t.Helper()
	c, ws, y := importText(t, cfg, opts)
	var got []string
	for _, b := range c.Backends {
		for _, s := range b.Servers {
			got = append(got, b.Name+"/"+s.Name)
		}
	}
	return got, ws, y
}

// Only the branch HAProxy reads may be imported: a server kept out with
// ".if 0" must not come back live behind the VIP.
func TestConditionalBranches(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
		env   map[string]string
		want  []string
		warn  string // in some warning, if set
	}{
		{"if 0 / else", []string{
			".if 0",
			"  server old 10.1.1.9:6443 check",
			".else",
			"  server new 10.1.1.1:6443 check",
			".endif",
		}, nil, []string{"be/new"}, "1 line(s) up to line 8 not imported"},
		{"if 1 / else", []string{
			".if 1",
			"  server a 10.1.1.1:6443 check",
			".else",
			"  server b 10.1.1.2:6443 check",
			".endif",
		}, nil, []string{"be/a"}, "an earlier branch, line 7, is taken"},
		{"elif", []string{
			".if 0",
			"  server a 10.1.1.1:6443 check",
			".elif !0 && (0 || 2)",
			"  server b 10.1.1.2:6443 check",
			".elif 1",
			"  server c 10.1.1.3:6443 check",
			".else",
			"  server d 10.1.1.4:6443 check",
			".endif",
		}, nil, []string{"be/b"}, ""},
		{"nested in a dropped branch is not evaluated", []string{
			"server a 10.1.1.1:6443 check",
			".if 0",
			"  .if version_atleast(2.5)",
			"  server b 10.1.1.2:6443 check",
			"  .else",
			"  server c 10.1.1.3:6443 check",
			"  .endif",
			".endif",
		}, nil, []string{"be/a"}, "2 line(s) up to line 12 not imported"},
		{"nested taken", []string{
			".if 1",
			"  .if 0",
			"  server a 10.1.1.1:6443 check",
			"  .endif",
			"  server b 10.1.1.2:6443 check",
			".endif",
		}, nil, []string{"be/b"}, ""},
		{"defined without env: taken as undefined", []string{
			"server a 10.1.1.1:6443 check",
			".if defined(CP04)",
			"  server cp04 10.1.1.4:6443 check",
			".endif",
		}, nil, []string{"be/a"}, "environment variable CP04 taken as undefined"},
		{"defined with env", []string{
			"server a 10.1.1.1:6443 check",
			".if defined(CP04)",
			"  server cp04 10.1.1.4:6443 check",
			".endif",
		}, map[string]string{"CP04": ""}, []string{"be/a", "be/cp04"}, ""},
		{"streq on an expanded variable", []string{
			".if streq(\"$SITE\",lon)",
			"  server lon 10.1.1.1:6443 check",
			".else",
			"  server other 10.1.1.2:6443 check",
			".endif",
		}, map[string]string{"SITE": "lon"}, []string{"be/lon"}, ""},
		{"a decided && needs no version", []string{
			".if 0 && version_atleast(2.5)",
			"  server a 10.1.1.1:6443 check",
			".endif",
			"server b 10.1.1.2:6443 check",
		}, nil, []string{"be/b"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ws, _ := serverNames(t, tcpPair(tt.lines...), Options{Env: tt.env})
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("servers (-want +got):\n%s", diff)
			}
			if tt.warn != "" && lineOf(ws, tt.warn) < 0 {
				t.Errorf("no warning with %q: %v", tt.warn, ws)
			}
			for _, w := range ws {
				if strings.Contains(w.Directive, ".if") && strings.Contains(w.Message, "not an HAProxy directive") {
					t.Errorf("a conditional was read as a directive: %s", w.Format("f"))
				}
			}
		})
	}
}

// A whole section inside ".if defined(…)" is left out unless the
// variable is known to be set, and the output's header says so.
func TestConditionalSection(t *testing.T) {
	cfg := tcpPair("server s1 10.1.1.1:6443 check") +
		".if defined(WITH_TALOS)\n" +
		"frontend talos\n  bind 10.1.1.10:50000\n  default_backend talos\n" +
		"backend talos\n  server t1 10.1.1.1:50000 check\n" +
		".endif\n"
	c, ws, y := importText(t, cfg, Options{})
	if len(c.Frontends) != 1 || len(c.Backends) != 1 {
		t.Errorf("frontends %v, backends %v: the .if defined(WITH_TALOS) block was imported", c.Frontends, c.Backends)
	}
	if !warningAt(ws, 8, "WITH_TALOS taken as undefined") {
		t.Errorf("no warning at line 8 naming WITH_TALOS: %v", ws)
	}
	if !strings.Contains(y, "with WITH_TALOS taken as undefined") {
		t.Errorf("the header does not name the assumption:\n%s", y)
	}
	c, _, _ = importText(t, cfg, Options{Env: map[string]string{"WITH_TALOS": "1"}})
	if len(c.Frontends) != 2 || len(c.Backends) != 2 {
		t.Errorf("with WITH_TALOS set: frontends %v, backends %v; want both sections", c.Frontends, c.Backends)
	}
}

// What the importer cannot evaluate, or HAProxy would reject, is refused
// with an error at its line.
func TestConditionalErrors(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
		line  int
		want  string
	}{
		{"version", []string{".if version_atleast(2.5)", "server a 10.1.1.1:6443", ".endif"}, 7, "version_atleast(2.5)"},
		{"feature in elif", []string{".if 0", ".elif feature(OPENSSL)", ".endif", "server a 10.1.1.1:6443"}, 8, "feature(OPENSSL)"},
		{"undecided or", []string{".if 0 || version_before(3.0)", ".endif", "server a 10.1.1.1:6443"}, 7, "cannot be evaluated"},
		{"unknown predicate", []string{".if exists(/etc/x)", ".endif", "server a 10.1.1.1:6443"}, 7, "unknown predicate"},
		{"else without if", []string{"server a 10.1.1.1:6443", ".else"}, 8, ".else without a matching .if"},
		{"endif without if", []string{"server a 10.1.1.1:6443", ".endif"}, 8, ".endif without a matching .if"},
		{"if without endif", []string{"server a 10.1.1.1:6443", ".if 1"}, 8, ".if without a matching .endif"},
		{"elif after else", []string{".if 0", ".else", ".elif 1", ".endif", "server a 10.1.1.1:6443"}, 9, "after .else"},
		{"dangling &&", []string{".if 1 &&", ".endif", "server a 10.1.1.1:6443"}, 7, "missing"},
		{"unclosed paren", []string{".if (1", ".endif", "server a 10.1.1.1:6443"}, 7, "missing )"},
		{"trailing junk", []string{".if 1 2", ".endif", "server a 10.1.1.1:6443"}, 7, "unexpected"},
		{"alert in a taken branch", []string{".if 1", ".alert \"too old\"", ".endif", "server a 10.1.1.1:6443"}, 8, "HAProxy refuses to start"},
		{"unknown dot directive", []string{".include x.cfg", "server a 10.1.1.1:6443"}, 7, "not an HAProxy directive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Import([]byte(tcpPair(tt.lines...)), Options{})
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("err = %v, want Errors", err)
			}
			if !slices.ContainsFunc(es, func(e *LineError) bool { return e.Line == tt.line && strings.Contains(e.Error(), tt.want) }) {
				t.Errorf("no error at line %d with %q: %v", tt.line, tt.want, err)
			}
		})
	}
}

// Lines in a branch HAProxy skips are not read at all, so an alert or a
// broken quote there changes nothing.
func TestConditionalDroppedBranchIgnored(t *testing.T) {
	got, _, _ := serverNames(t, tcpPair(".if 0", ".alert \"unsupported\"", "  option httpchk GET \"/oops", ".endif", "server a 10.1.1.1:6443"), Options{})
	if diff := cmp.Diff([]string{"be/a"}, got); diff != "" {
		t.Errorf("servers (-want +got):\n%s", diff)
	}
}
