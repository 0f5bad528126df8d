package config

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// aliasBomb is a small file whose aliases expand quadratically: n
// backends each naming the same list of n servers. halb's key walk used to
// follow every alias unbounded (111 KB took 42 s and 1.5 GB).
func aliasBomb(n int) string {
	var b strings.Builder
	b.WriteString("frontends: [{name: api, bind: 127.0.0.1:6443, backend: b0}]\nbackends:\n  - name: b0\n    servers: &s\n")
	for i := range n {
		fmt.Fprintf(&b, "      - {name: s%d, address: 127.0.0.2:%d}\n", i, i+1)
	}
	for i := 1; i < n; i++ {
		fmt.Fprintf(&b, "  - {name: b%d, servers: *s}\n", i)
	}
	return b.String()
}

// nodes counts the nodes of a parsed document, an alias as one node.
func nodes(n *yaml.Node) int {
	c := 1
	for _, k := range n.Content {
		c += nodes(k)
	}
	return c
}

// walkBudget asserts the key walk over data visited no more nodes than
// the document has plus the alias budget: work grows with the file's size,
// not with how often its aliases repeat it.
func walkBudget(t *testing.T, data []byte) {
	t.Helper()
	_, visits, _ := parse(data)
	root, ferr := readDocument(data)
	if ferr != nil {
		if visits != 0 {
			t.Fatalf("walked %d nodes of a document that did not parse", visits)
		}
		return
	}
	if limit := nodes(root) + maxAliasNodes; visits > limit {
		t.Fatalf("walked %d nodes, more than the document's %d plus the alias budget %d", visits, nodes(root), maxAliasNodes)
	}
}

func TestAliasBombRefused(t *testing.T) {
	data := []byte(aliasBomb(300))
	walkBudget(t, data)
	_, err := Parse(data)
	var es Errors
	if !errors.As(err, &es) || len(es) != 1 {
		t.Fatalf("alias bomb: %v, want one error", err)
	}
	// The first *s to go over the budget is on the line of b34: 4 header
	// lines, 300 servers, then b1 on line 305.
	if e := es[0]; e.Line < 305 || !strings.Contains(e.Error(), "aliases expand to more than 10000 values") || !strings.Contains(e.Error(), "*s") {
		t.Fatalf("alias bomb error %q, want the line of an alias and the budget", e)
	}
}

// Sharing a block by alias a few times is ordinary YAML and still works.
func TestAliasWithinBudget(t *testing.T) {
	doc := `
frontends:
  - {name: api, bind: 127.0.0.1:6443, backend: a}
  - {name: talos, bind: 127.0.0.1:50000, backend: b}
backends:
  - name: a
    health: &h {type: tcp, interval: 1s, fall: 2}
    servers: [{name: s, address: 127.0.0.2:6443}]
  - name: b
    health: *h
    servers: [{name: s, address: 127.0.0.2:50000}]
`
	cfg, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if h := cfg.Backends[1].Health; h.Fall != 2 || h.Interval.String() != "1s" {
		t.Fatalf("aliased health = %+v, want the anchor's fall 2, interval 1s", h)
	}
}

func TestOneDocumentOnly(t *testing.T) {
	for _, tt := range []struct {
		name, tail string
		line       int // 0: accepted
		want       string
	}{
		{"second document", "---\nfrontends: []\n", 11, "a second YAML document starts here"},
		{"empty second document", "---\n", 11, "a second YAML document"},
		{"garbage after end marker", "...\n]]] not yaml\n", 12, "parse yaml"},
		{"end marker alone", "...\n", 0, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(minimal + tt.tail))
			if tt.line == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var es Errors
			if !errors.As(err, &es) || len(es) != 1 || es[0].Line != tt.line || !strings.Contains(es[0].Error(), tt.want) {
				t.Fatalf("error %v, want one at line %d saying %q", err, tt.line, tt.want)
			}
		})
	}
}

// The YAML library names the line where the enclosing block began (here
// the first server, line 9), not the mis-indented line.
func TestSyntaxErrorLine(t *testing.T) {
	for _, tt := range []struct {
		name, tail string
		line       int
	}{
		{"mis-indented key", "      - name: cp2\n     address: 127.0.0.3:6443\n", 12},
		{"mis-indented item", "     - name: cp2\n", 11},
		{"unclosed flow list", "maxconn: [1,\n  2\n", 12},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(minimal + tt.tail))
			var es Errors
			if !errors.As(err, &es) || len(es) != 1 || es[0].Line != tt.line || !strings.HasPrefix(es[0].Err.Error(), "parse yaml") {
				t.Fatalf("error %v, want a YAML error at line %d", err, tt.line)
			}
		})
	}
}

// A huge value is not repeated whole in the error.
func TestLongValuesClipped(t *testing.T) {
	huge := strings.Repeat("x", 1<<20)
	long := strings.Repeat("y", 1000) // YAML refuses longer plain keys itself
	for _, doc := range []string{
		strings.Replace(minimal, "127.0.0.1:6443", huge, 1),
		minimal + long + ": 1\n",
		minimal + "log: {level: *" + huge + "}\n",
		minimal + "log: {level: " + huge + "}\n",
	} {
		_, err := Parse([]byte(doc))
		if err == nil {
			t.Fatal("accepted")
		}
		if len(err.Error()) > 1000 || (!strings.Contains(err.Error(), "xxx…") && !strings.Contains(err.Error(), "yyy…")) {
			t.Errorf("error of %d bytes, want the value clipped with an ellipsis: %.300s", len(err.Error()), err)
		}
	}
}

// A refused interval falls back to its default; comparing the timeout
// with that default gave a second, misleading error (W11).
func TestNoFollowUpForARefusedInterval(t *testing.T) {
	doc := `frontends:
  - {name: api, bind: "127.0.0.1:6443", backend: cp}
backends:
  - name: cp
    health: {type: tcp, interval: 5 seconds, timeout: 3s}
    servers: [{name: s0, address: "127.0.0.2:6443"}]
`
	_, err := Parse([]byte(doc))
	var es Errors
	if !errors.As(err, &es) || len(es) != 1 || es[0].Path != "backends[0].health.interval" {
		t.Fatalf("errors %v, want only the interval's", err)
	}
}
