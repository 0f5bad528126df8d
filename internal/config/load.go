package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
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

// Errors lists every problem found in a file, in file order.
type Errors []*FieldError

func (es Errors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// Load reads and validates the config file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(data)
}

// Parse validates a config document. On failure the error is an Errors
// value naming every bad field with its line.
func Parse(data []byte) (*Config, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, Errors{{Err: fmt.Errorf("parse yaml: %w", err)}}
	}
	if len(doc.Content) == 0 {
		return nil, Errors{{Err: errors.New("config is empty: at least one frontend and backend are needed")}}
	}
	root := doc.Content[0]
	w := walker{lines: map[string]int{}}
	w.walk(root, reflect.TypeFor[rawConfig](), "")
	if len(w.errs) > 0 {
		return nil, w.sorted()
	}
	var raw rawConfig
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&raw); err != nil {
		return nil, w.typeErrors(err)
	}
	v := validator{lines: w.lines}
	cfg := v.config(&raw)
	if len(v.errs) > 0 {
		return nil, v.sorted()
	}
	sum := sha256.Sum256(data)
	cfg.Fingerprint = hex.EncodeToString(sum[:6])
	return cfg, nil
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
		es = append(es, &FieldError{Path: byLine[line], Line: line, Err: fmt.Errorf("wrong value type: %s", rest)})
	}
	return sortErrors(es)
}

// walker checks the document's keys against the raw structs, so unknown or
// misspelt keys are reported with their full path and line, and records the
// line of every path for later validation errors.
type walker struct {
	lines map[string]int
	errs  Errors
}

func (w *walker) walk(n *yaml.Node, t reflect.Type, path string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
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
			p := join(path, k.Value)
			w.lines[p] = k.Line
			if seen[k.Value] {
				w.errs = append(w.errs, &FieldError{Path: p, Line: k.Line, Err: errors.New("key appears twice")})
				continue
			}
			seen[k.Value] = true
			ft, ok := fields[k.Value]
			if !ok {
				w.errs = append(w.errs, &FieldError{Path: p, Line: k.Line, Err: fmt.Errorf("unknown key %q (known: %s)", k.Value, strings.Join(sortedKeys(fields), ", "))})
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
	return fmt.Sprintf("%q", n.Value)
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
