package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"halb/internal/smallfile"
)

// FieldError is one problem in a config file, located by field path and line.
type FieldError struct {
	Path string // e.g. "frontends[0].bind"; empty for file-level errors
	Line int    // 0 when unknown
	Err  error
}

func (e *FieldError) Error() string {
	switch {
	case e.Path == "" && e.Line == 0:
		return e.Err.Error()
	case e.Path == "":
		return fmt.Sprintf("line %d: %v", e.Line, e.Err)
	case e.Line == 0:
		return fmt.Sprintf("%s: %v", e.Path, e.Err)
	}
	return fmt.Sprintf("%s (line %d): %v", e.Path, e.Line, e.Err)
}

func (e *FieldError) Unwrap() error { return e.Err }

// maxQuoted is how much of a value an error message repeats: enough to
// recognise it, and a 50 MB value does not become a 50 MB error.
const maxQuoted = 100

// clip shortens s to maxQuoted bytes, cut at a character boundary, with an
// ellipsis saying it was cut.
func clip(s string) string {
	if len(s) <= maxQuoted {
		return s
	}
	cut := maxQuoted
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// Errors lists every problem found in a file, in file order.
type Errors []*FieldError

func (es Errors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// MaxFileSize bounds a config file: a real one is a few KiB, and reading
// stops here rather than exhausting memory on a wrong path.
const MaxFileSize = 4 << 20

// Load reads and validates the config file at path.
func Load(path string) (*Config, error) {
	data, err := smallfile.Read(path, MaxFileSize)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(data)
}

// Parse validates a config document. On failure the error is an Errors
// value naming every bad field with its line.
func Parse(data []byte) (*Config, error) {
	cfg, _, err := parse(data)
	return cfg, err
}

// parse is Parse, also returning how many YAML nodes the key walk visited,
// so tests can hold the work to a budget.
func parse(data []byte) (*Config, int, error) {
	root, ferr := readDocument(data)
	if ferr != nil {
		return nil, 0, Errors{ferr}
	}
	w := walker{lines: map[string]int{}}
	w.walk(root, reflect.TypeFor[rawConfig](), "")
	if len(w.errs) > 0 {
		return nil, w.visits, w.sorted()
	}
	var raw rawConfig
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&raw); err != nil {
		return nil, w.visits, w.typeErrors(err)
	}
	v := validator{lines: w.lines}
	cfg := v.config(&raw)
	if len(v.errs) > 0 {
		return nil, w.visits, v.sorted()
	}
	sum := sha256.Sum256(data)
	cfg.Fingerprint = hex.EncodeToString(sum[:6])
	return cfg, w.visits, nil
}

// readDocument parses data as exactly one YAML document and returns its
// root node. A second document is refused rather than ignored: whatever
// follows "---" would otherwise never be read, nor even checked.
func readDocument(data []byte) (*yaml.Node, *FieldError) {
	first, err := decodeDocuments(data)
	if err != nil {
		return nil, err
	}
	if first == nil || len(first.Content) == 0 {
		return nil, &FieldError{Err: errors.New("config is empty: at least one frontend and backend are needed")}
	}
	return first.Content[0], nil
}

// decodeDocuments returns the first document of data, or an error for a
// syntax error in any document or for a second document.
func decodeDocuments(data []byte) (*yaml.Node, *FieldError) {
	first, second, err := decodeTwo(data)
	switch {
	case err != nil:
		return nil, syntaxError(data, err)
	case second != nil:
		return nil, &FieldError{Line: second.Line, Err: errors.New("a second YAML document starts here: halb reads one document per file, so remove this '---' and what follows, or merge it into the first")}
	}
	return first, nil
}

// decodeTwo parses the first two documents of data; nil for one absent.
func decodeTwo(data []byte) (first, second *yaml.Node, err error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for _, n := range []**yaml.Node{&first, &second} {
		var doc yaml.Node
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, nil, err
		}
		*n = &doc
	}
	return first, second, nil
}

// syntaxError turns the YAML library's "yaml: line N: problem" into an
// error at the line of the problem. The library often names another line:
// where the enclosing block or flow began, counted from 0 or from 1
// depending on the kind of error, which can be far above the mistake (a
// mis-indented item at the end of a long backend is reported at the
// backend's start). The mistake is on the first line whose prefix of the
// file fails exactly as the whole file does, found by bisection: a broken
// file costs a few more parses, not one per line.
func syntaxError(data []byte, err error) *FieldError {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	var reported int
	ends := lineEnds(data)
	if n, _ := fmt.Sscanf(msg, "line %d:", &reported); n != 1 || reported < 1 || reported > len(ends) {
		return &FieldError{Err: fmt.Errorf("parse yaml: %s", clip(msg))}
	}
	_, problem, _ := strings.Cut(msg, ": ")
	fails := func(lines int) bool {
		_, _, perr := decodeTwo(data[:ends[lines-1]])
		return perr != nil && perr.Error() == err.Error()
	}
	// Invariant: the first lo lines parse, or fail otherwise than the
	// file; the first hi lines fail as the file does.
	lo, hi := 0, len(ends)
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		if fails(mid) {
			hi = mid
		} else {
			lo = mid
		}
	}
	// "unknown anchor '…'" repeats the file's text.
	return &FieldError{Line: hi, Err: fmt.Errorf("parse yaml: %s", clip(problem))}
}

// lineEnds returns the offset just past each line of data, counting lines
// as YAML does: a line ends at "\n", "\r\n" or a lone "\r".
func lineEnds(data []byte) []int {
	var ends []int
	for i := 0; i < len(data); i++ {
		switch data[i] {
		case '\n':
			ends = append(ends, i+1)
		case '\r':
			if i+1 < len(data) && data[i+1] == '\n' {
				i++
			}
			ends = append(ends, i+1)
		}
	}
	// The last line needs no line break; YAML still counts one line past
	// a final break (an error "at the end of the stream").
	return append(ends, len(data))
}

// typeErrors turns yaml's "line 12: cannot unmarshal !!str `lots` into
// int" into errors that name the field, found by its line, like the rest.
func (w *walker) typeErrors(err error) Errors {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return Errors{{Err: err}}
	}
	byLine := map[int]string{}
	for p, l := range w.lines {
		// The longest path on a line is the field itself, not its parent item.
		if len(p) > len(byLine[l]) {
			byLine[l] = p
		}
	}
	var es Errors
	for _, msg := range te.Errors {
		var line int
		rest := msg
		if n, _ := fmt.Sscanf(msg, "line %d:", &line); n == 1 {
			_, rest, _ = strings.Cut(msg, ": ")
		}
		es = append(es, &FieldError{Path: byLine[line], Line: line, Err: fmt.Errorf("wrong value type: %s", clip(rest))})
	}
	return sortErrors(es)
}

// maxAliasNodes bounds the nodes visited through aliases (*name) in one
// file. Sharing a health block among a few dozen backends stays far below
// it; an "alias bomb", a small file whose aliases nest into billions of
// nodes, stops here instead of taking minutes and gigabytes.
const maxAliasNodes = 10000

// walker checks the document's keys against the raw structs, so unknown or
// misspelt keys are reported with their full path and line, and records the
// line of every path for later validation errors.
type walker struct {
	lines map[string]int
	errs  Errors

	visits      int        // nodes visited, aliased ones once per use
	aliasVisits int        // of those, nodes reached through an alias
	inAlias     int        // depth of aliases being expanded
	outerAlias  *yaml.Node // the outermost alias being expanded
	stopped     bool       // the alias budget is spent: walk nothing more
}

func (w *walker) walk(n *yaml.Node, t reflect.Type, path string) {
	if w.stopped {
		return
	}
	w.visits++
	if w.inAlias > 0 {
		w.aliasVisits++
		if w.aliasVisits > maxAliasNodes {
			a := w.outerAlias
			w.errs = append(w.errs, &FieldError{Line: a.Line, Err: fmt.Errorf("aliases expand to more than %d values in all (here *%s): write the values out instead", maxAliasNodes, clip(a.Value))})
			w.stopped = true
			return
		}
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		if w.inAlias == 0 {
			w.outerAlias = n
		}
		w.inAlias++
		defer func() { w.inAlias-- }()
		n = n.Alias
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			if n.Tag != "!!null" {
				w.errs = append(w.errs, &FieldError{Path: path, Line: n.Line, Err: fmt.Errorf("want a mapping of keys, got %s", kindName(n))})
			}
			return
		}
		fields := yamlFields(t)
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			p := join(path, clip(k.Value))
			w.lines[p] = k.Line
			if seen[k.Value] {
				w.errs = append(w.errs, &FieldError{Path: p, Line: k.Line, Err: errors.New("key appears twice")})
				continue
			}
			seen[k.Value] = true
			ft, ok := fields[k.Value]
			if !ok {
				w.errs = append(w.errs, &FieldError{Path: p, Line: k.Line, Err: fmt.Errorf("unknown key %q (known: %s)", clip(k.Value), strings.Join(sortedKeys(fields), ", "))})
				continue
			}
			w.walk(val, ft, p)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			if n.Tag != "!!null" {
				w.errs = append(w.errs, &FieldError{Path: path, Line: n.Line, Err: fmt.Errorf("want a list, got %s", kindName(n))})
			}
			return
		}
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			w.lines[p] = item.Line
			w.walk(item, t.Elem(), p)
		}
	default:
		if n.Kind != yaml.ScalarNode {
			w.errs = append(w.errs, &FieldError{Path: path, Line: n.Line, Err: fmt.Errorf("want a single value, got %s", kindName(n))})
		}
	}
}

func (w *walker) sorted() Errors { return sortErrors(w.errs) }

func sortErrors(es Errors) Errors {
	slices.SortStableFunc(es, func(a, b *FieldError) int { return a.Line - b.Line })
	return es
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return fmt.Sprintf("%q", clip(n.Value))
}

func yamlFields(t reflect.Type) map[string]reflect.Type {
	m := map[string]reflect.Type{}
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name != "" && name != "-" {
			m[name] = f.Type
		}
	}
	return m
}

func sortedKeys(m map[string]reflect.Type) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
