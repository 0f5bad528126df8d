package haproxy

import (
	"errors"
	"fmt"
	"strings"
)

// LineError is a problem at one line of the input.
type LineError struct {
	Line int // 0 when not tied to one line
	Err  error
}

func (e *LineError) Error() string {
	if e.Line == 0 {
		return e.Err.Error()
	}
	return fmt.Sprintf("line %d: %v", e.Line, e.Err)
}

func (e *LineError) Unwrap() error { return e.Err }

// Errors lists every problem that kept the input from being imported, in
// line order.
type Errors []*LineError

func (es Errors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// directive is one configuration line split into words.
type directive struct {
	line int
	args []string
}

// section is a "global", "defaults", "frontend", "backend", "listen" or
// other section with the directives that follow its header.
type section struct {
	kind string
	name string
	line int
	dirs []directive
}

// sectionKinds are the keywords HAProxy treats as section headers; any
// other first word belongs to the section above it.
var sectionKinds = map[string]bool{
	"global": true, "defaults": true, "frontend": true, "backend": true, "listen": true,
	"userlist": true, "peers": true, "resolvers": true, "mailers": true, "program": true,
	"http-errors": true, "ring": true, "cache": true, "log-forward": true, "fcgi-app": true,
	"crt-store": true, "traces": true, "acme": true,
}

// parseSections splits the input into sections. Comments, blank lines
// and the branches of .if blocks that HAProxy would not read are skipped;
// words follow HAProxy's quoting (double quotes, single quotes, backslash
// escapes).
func parseSections(data []byte, env map[string]string) ([]section, []Warning, Errors, []string) {
	var secs []section
	lines := strings.Split(string(data), "\n")
	keep, warns, errs, assumed := conditionals(lines, env)
	for i, raw := range lines {
		n := i + 1
		if !keep[i] {
			continue
		}
		words, err := splitWords(strings.TrimSuffix(raw, "\r"))
		if err != nil {
			errs = append(errs, &LineError{Line: n, Err: err})
			continue
		}
		if len(words) == 0 {
			continue
		}
		if sectionKinds[words[0]] {
			s := section{kind: words[0], line: n}
			if len(words) > 1 {
				s.name = words[1]
			}
			switch s.kind {
			case "frontend", "backend", "listen":
				if s.name == "" {
					errs = append(errs, &LineError{Line: n, Err: fmt.Errorf("%s section needs a name", s.kind)})
				}
			}
			secs = append(secs, s)
			continue
		}
		if len(secs) == 0 {
			errs = append(errs, &LineError{Line: n, Err: fmt.Errorf("%q is outside any section (start with global, defaults, frontend, backend or listen)", words[0])})
			continue
		}
		last := &secs[len(secs)-1]
		last.dirs = append(last.dirs, directive{line: n, args: words})
	}
	return secs, warns, errs, assumed
}

var errUnclosedQuote = errors.New("unclosed quote")

// splitWords cuts a line into words, dropping a trailing "#" comment.
func splitWords(line string) ([]string, error) {
	var (
		words  []string
		cur    strings.Builder
		inWord bool
		quote  byte
	)
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
				continue
			}
			if c == '\\' && quote == '"' && i+1 < len(line) {
				i++
				c = line[i]
			}
			cur.WriteByte(c)
		case c == '"' || c == '\'':
			quote = c
			inWord = true
		case c == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
			inWord = true
		case c == '#':
			i = len(line)
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, errUnclosedQuote
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}
