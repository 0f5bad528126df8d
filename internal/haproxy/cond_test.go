package haproxy

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestEvalCondition(t *testing.T) {
	env := map[string]string{"SITE": "lon", "EMPTY": ""}
	tests := []struct {
		cond      string
		want      bool
		undefined []string
	}{
		{"", false, nil},
		{"0", false, nil},
		{"1", true, nil},
		{"-1", true, nil},
		{"00", false, nil},
		{"0x10", true, nil},
		{"0x0", false, nil},
		{"!0", true, nil},
		{"! ! 1", true, nil},
		{"1 && 0", false, nil},
		{"0 || 1", true, nil},
		{"1 || 0 && 0", true, nil}, // && binds tighter
		{"(1 || 0) && 0", false, nil},
		{"!(0 || 0)", true, nil},
		{"streq(a,a)", true, nil},
		{"streq(a, b)", false, nil},
		{"strneq(a,b)", true, nil},
		{`streq("$SITE",lon)`, true, nil},
		{`streq("${SITE}",lon)`, true, nil},
		{`streq('$SITE',lon)`, false, nil}, // single quotes do not expand
		{`streq("$ZONE",)`, true, []string{"ZONE"}},
		{`streq("${ZONE-a}",a)`, true, nil},
		{"defined(SITE)", true, nil},
		{"defined(EMPTY)", true, nil},
		{"defined(ZONE)", false, []string{"ZONE"}},
		{"!defined(ZONE) && defined(SITE)", true, []string{"ZONE"}},
		{"0 && version_atleast(2.4)", false, nil},
		{"1 || feature(OPENSSL)", true, nil},
		{"strstr(haproxy,pro)", true, nil},
		{"1 # a comment", true, nil},
	}
	for _, tt := range tests {
		got, undef, err := evalCondition(tt.cond, env)
		if err != nil {
			t.Errorf("%q: %v", tt.cond, err)
			continue
		}
		if got != tt.want {
			t.Errorf("%q = %t, want %t", tt.cond, got, tt.want)
		}
		if diff := cmp.Diff(tt.undefined, undef); diff != "" {
			t.Errorf("%q undefined variables (-want +got):\n%s", tt.cond, diff)
		}
	}
}

func TestEvalConditionErrors(t *testing.T) {
	for cond, want := range map[string]string{
		"version_atleast(2.4)":         "version_atleast(2.4)",
		"1 && feature(OPENSSL)":        "feature(OPENSSL)",
		"!enabled(POLL)":               "enabled(POLL)",
		"nosuch(1)":                    "unknown predicate",
		"defined()x":                   "unexpected",
		"defined(A,B)":                 "takes 1 argument",
		"streq(a)":                     "takes 2 argument",
		"(1":                           "missing )",
		"1 &&":                         "missing",
		"&& 1":                         "unexpected",
		"1)":                           "unexpected",
		`streq("a,b`:                   "unclosed quote",
		strings.Repeat("(", 200) + "1": "nested too deeply",
	} {
		_, _, err := evalCondition(cond, nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v, want one with %q", cond, err, want)
		}
	}
}
