package haproxy

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// HAProxy 2.4 and later read ".if COND / .elif COND / .else / .endif"
// blocks before anything else on a line: only the branch HAProxy would
// take may be imported, or a server kept out with ".if 0" comes back live.
//
// What the importer can evaluate it does: numbers, "!", "&&", "||",
// parentheses, streq() and strneq(), and defined() and $VAR against
// Options.Env. The importer cannot see the environment HAProxy ran with,
// so a variable missing from Options.Env is taken as undefined (what
// HAProxy does on a host where nobody set it) with a warning naming it.
// Predicates about the HAProxy binary (version_atleast(), feature(), …)
// depend on a program halb replaces; an .if whose outcome hangs on one is
// refused with an error naming its line.

// Limits that keep a hostile input from exhausting the stack; HAProxy's
// own limits are of the same order.
const (
	maxCondNesting = 128
	maxCondDepth   = 64
)

// condFrame is one open .if block.
type condFrame struct {
	line    int // the .if
	state   branchState
	sawElse bool
	takenAt int // line of the branch taken, 0 if none yet

	// The branch being read, for the note about lines left out.
	branchLine int
	branchWhy  string
	dropped    int // directive lines left out in this branch
	lastDrop   int
}

type branchState uint8

const (
	branchTake branchState = iota // this branch is read
	branchDrop                    // this branch is false, a later one may be taken
	branchDone                    // an earlier branch was taken
	branchSkip                    // the whole block sits in a branch that is left out
)

// conditionals decides, line by line, whether HAProxy reads the line. It
// returns keep[i] for line i+1; the .if/.elif/.else/.endif lines and
// HAProxy's .diag/.notice/.warning lines are never kept.
func conditionals(lines []string, env map[string]string) (keep []bool, warns []Warning, errs Errors, assumed []string) {
	r := &condReader{env: env, keep: make([]bool, len(lines)), seenVar: map[string]bool{}}
	for i, raw := range lines {
		if !r.line(i+1, strings.TrimSuffix(raw, "\r")) {
			return r.keep, r.warns, r.errs, r.assumed
		}
	}
	for _, f := range slices.Backward(r.stack) {
		r.fail(f.line, ".if without a matching .endif")
	}
	return r.keep, r.warns, r.errs, r.assumed
}

// condReader is the state of conditionals between lines.
type condReader struct {
	env     map[string]string
	keep    []bool
	stack   []*condFrame // the open .if blocks, innermost last
	warns   []Warning
	errs    Errors
	assumed []string        // variables taken as undefined, in first-use order
	seenVar map[string]bool // the set of assumed
}

// active says whether HAProxy reads the current line.
func (r *condReader) active() bool {
	return len(r.stack) == 0 || r.stack[len(r.stack)-1].state == branchTake
}

func (r *condReader) fail(n int, format string, args ...any) {
	r.errs = append(r.errs, &LineError{Line: n, Err: fmt.Errorf(format, args...)})
}

// line reads line n; it returns false when the rest of the file cannot
// be read.
func (r *condReader) line(n int, line string) bool {
	kw, rest := dotDirective(line)
	switch kw {
	case "":
		r.plain(n, line)
	case ".if":
		return r.open(n, rest)
	case ".elif", ".else":
		r.branch(n, kw, rest)
	case ".endif":
		if len(r.stack) == 0 {
			r.fail(n, ".endif without a matching .if")
			return true
		}
		r.endBranch(r.stack[len(r.stack)-1])
		r.stack = r.stack[:len(r.stack)-1]
	case ".diag", ".notice", ".warning":
		if r.active() {
			r.warns = append(r.warns, Warning{Line: n, Directive: kw, Message: "HAProxy prints this message at startup; halb does not: " + strings.TrimSpace(rest), Effect: Dropped})
		}
	case ".alert":
		if r.active() {
			r.fail(n, ".alert: HAProxy refuses to start with this file here (%s); fix the conditions above it first", strings.TrimSpace(rest))
		}
	default:
		if r.active() {
			r.fail(n, "%s: not an HAProxy directive (want .if, .elif, .else, .endif, .diag, .notice, .warning or .alert)", kw)
		}
	}
	return true
}

// plain keeps a line that is not a dot directive if HAProxy reads it, and
// otherwise counts it for the note about lines left out.
func (r *condReader) plain(n int, line string) {
	if r.active() {
		r.keep[n-1] = true
		return
	}
	if f := dropper(r.stack); f != nil {
		if w, err := splitWords(line); err == nil && len(w) > 0 {
			f.dropped++
			f.lastDrop = n
		}
	}
}

// open starts an .if block; it returns false when blocks nest too deeply
// to read on.
func (r *condReader) open(n int, rest string) bool {
	if len(r.stack) >= maxCondNesting {
		r.fail(n, ".if: more than %d nested blocks", maxCondNesting)
		return false
	}
	f := &condFrame{line: n, state: branchSkip}
	if r.active() {
		if v, ok := r.eval(n, ".if", rest); ok {
			f.state = branchDrop
			if v {
				f.state, f.takenAt = branchTake, n
			}
		}
	}
	f.startBranch(n, ".if "+strings.TrimSpace(rest)+" (false)")
	r.stack = append(r.stack, f)
	return true
}

// branch moves the innermost block on to its .elif or .else branch.
func (r *condReader) branch(n int, kw, rest string) {
	if len(r.stack) == 0 {
		r.fail(n, "%s without a matching .if", kw)
		return
	}
	f := r.stack[len(r.stack)-1]
	if f.sawElse {
		r.fail(n, "%s after .else (line %d) of the .if at line %d", kw, f.branchLine, f.line)
		return
	}
	r.endBranch(f)
	why := kw
	if kw == ".elif" {
		why = ".elif " + strings.TrimSpace(rest)
	}
	switch f.state {
	case branchTake:
		f.state = branchDone
		why += fmt.Sprintf(" (an earlier branch, line %d, is taken)", f.takenAt)
	case branchDone:
		why += fmt.Sprintf(" (an earlier branch, line %d, is taken)", f.takenAt)
	case branchDrop:
		take := true
		if kw == ".elif" {
			v, ok := r.eval(n, kw, rest)
			if !ok {
				// Refused: read nothing more of this block, so one
				// error does not cascade into others.
				f.state = branchSkip
				return
			}
			take = v
		}
		if take {
			f.state, f.takenAt = branchTake, n
		} else {
			why += " (false)"
		}
	}
	if kw == ".else" {
		f.sawElse = true
	}
	f.startBranch(n, why)
}

// eval evaluates the condition of an .if or .elif; ok is false when it
// was refused.
func (r *condReader) eval(n int, kw, raw string) (v, ok bool) {
	v, vars, err := evalCondition(raw, r.env)
	for _, name := range vars {
		r.warns = append(r.warns, Warning{Line: n, Directive: kw + " " + strings.TrimSpace(raw),
			Message: fmt.Sprintf("environment variable %s taken as undefined: the importer cannot see the environment HAProxy ran with, so this condition is %t here; if %s is set on your LB hosts, import again with --define %s=VALUE", name, v, name, name), Effect: Confirm})
		if !r.seenVar[name] {
			r.seenVar[name] = true
			r.assumed = append(r.assumed, name)
		}
	}
	if err != nil {
		r.fail(n, "%s %s: %v", kw, strings.TrimSpace(raw), err)
		return false, false
	}
	return v, true
}

// endBranch notes the directive lines a false branch left out.
func (r *condReader) endBranch(f *condFrame) {
	if f.dropped > 0 {
		r.warns = append(r.warns, Warning{Line: f.branchLine, Directive: f.branchWhy,
			Message: fmt.Sprintf("%d line(s) up to line %d not imported: HAProxy does not read this branch", f.dropped, f.lastDrop), Effect: Dropped})
	}
	f.dropped, f.lastDrop = 0, 0
}

func (f *condFrame) startBranch(n int, why string) {
	f.branchLine, f.branchWhy = n, why
}

// dropper is the innermost block whose own condition leaves the current
// line out, nil when an error did.
func dropper(stack []*condFrame) *condFrame {
	for _, f := range slices.Backward(stack) {
		switch f.state {
		case branchDrop, branchDone:
			return f
		case branchTake:
			return nil
		}
	}
	return nil
}

// dotDirective returns the keyword of a line that starts with a dot
// (".if") and the text after it, or "" when the line is anything else.
func dotDirective(line string) (string, string) {
	t := strings.TrimLeft(line, " \t")
	if !strings.HasPrefix(t, ".") {
		return "", ""
	}
	end := strings.IndexAny(t, " \t")
	if end < 0 {
		return t, ""
	}
	return t[:end], t[end:]
}

// evalCondition evaluates the text after .if or .elif. vars lists the
// environment variables it used that env does not define, which were
// taken as undefined.
func evalCondition(raw string, env map[string]string) (bool, []string, error) {
	text, vars, err := expandCondition(raw, env)
	if err != nil {
		return false, vars, err
	}
	p := &condParser{s: text, env: env}
	p.skipSpace()
	if p.done() {
		// HAProxy: an empty condition is false.
		return false, vars, nil
	}
	e, err := p.expr(0)
	if err != nil {
		return false, vars, err
	}
	p.skipSpace()
	if !p.done() {
		return false, vars, fmt.Errorf("unexpected %q at position %d", p.s[p.i:], p.i+1)
	}
	for _, name := range p.undefined {
		if !slices.Contains(vars, name) {
			vars = append(vars, name)
		}
	}
	switch e.v {
	case triTrue:
		return true, vars, nil
	case triFalse:
		return false, vars, nil
	}
	return false, vars, fmt.Errorf("cannot be evaluated here: %s; %s", strings.Join(e.unknown, ", "), whyUnknown)
}

const whyUnknown = "it depends on the HAProxy binary halb replaces, not on this file. Keep the branch your LB hosts use, delete the other branches and the .if/.else/.endif lines, and import again"

// expandCondition removes HAProxy's quoting and replaces $NAME and
// ${NAME} (outside single quotes) from env, joining the words with one
// space as HAProxy does before it parses the condition.
func expandCondition(raw string, env map[string]string) (string, []string, error) {
	var (
		words []string
		cur   strings.Builder
		in    bool
		quote byte
		vars  []string
	)
	flush := func() {
		if in {
			words = append(words, cur.String())
			cur.Reset()
			in = false
		}
	}
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case quote == '\'':
			if c == '\'' {
				quote = 0
				continue
			}
			cur.WriteByte(c)
		case c == '$' && i+1 < len(raw):
			v, next := expandVar(raw, i, env, &vars)
			cur.WriteString(v)
			in = true
			i = next - 1
		case quote == '"':
			if c == '"' {
				quote = 0
				continue
			}
			if c == '\\' && i+1 < len(raw) {
				i++
				c = raw[i]
			}
			cur.WriteByte(c)
		case c == '"' || c == '\'':
			quote = c
			in = true
		case c == '\\' && i+1 < len(raw):
			i++
			cur.WriteByte(raw[i])
			in = true
		case c == '#':
			i = len(raw)
		case c == ' ' || c == '\t':
			flush()
		default:
			cur.WriteByte(c)
			in = true
		}
	}
	if quote != 0 {
		return "", vars, errUnclosedQuote
	}
	flush()
	return strings.Join(words, " "), vars, nil
}

// expandVar returns the value of the variable reference at the '$' at
// raw[i], or the '$' itself when none follows, and the index after it.
// A variable env does not define and that has no default is added to
// *undefined.
func expandVar(raw string, i int, env map[string]string, undefined *[]string) (string, int) {
	name, def, hasDef, next := varRef(raw, i+1)
	if name == "" {
		return "$", i + 1
	}
	v, ok := env[name]
	switch {
	case ok:
	case hasDef:
		v = def
	case !slices.Contains(*undefined, name):
		*undefined = append(*undefined, name)
	}
	return v, next
}

// varRef reads a variable reference after a '$' at s[i:]: NAME, {NAME}
// or {NAME-default}. next is the index after it; name is "" when there
// is none.
func varRef(s string, i int) (name, def string, hasDef bool, next int) {
	if s[i] == '{' {
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			return "", "", false, i
		}
		body := s[i+1 : i+end]
		name, def, hasDef = strings.Cut(body, "-")
		for j := 0; j < len(name); j++ {
			if !isNameByte(name[j]) {
				return "", "", false, i
			}
		}
		return name, def, hasDef, i + end + 1
	}
	j := i
	for j < len(s) && isNameByte(s[j]) {
		j++
	}
	return s[i:j], "", false, j
}

// isNameByte says whether c may be part of a variable or predicate name.
func isNameByte(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// tri is a truth value that may be unknown to the importer; "&&" and "||"
// need only the operands that decide them, as in HAProxy's left-to-right
// evaluation.
type tri uint8

const (
	triFalse tri = iota
	triTrue
	triUnknown
)

type condValue struct {
	v       tri
	unknown []string // the predicates that could not be evaluated
}

type condParser struct {
	s         string
	i         int
	env       map[string]string
	undefined []string
}

func (p *condParser) done() bool { return p.i >= len(p.s) }

func (p *condParser) skipSpace() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

var errCondTooDeep = errors.New("nested too deeply")

// expr reads terms joined by && and ||, && binding tighter.
func (p *condParser) expr(depth int) (condValue, error) {
	return p.chain(depth, "||", triTrue, func(d int) (condValue, error) {
		return p.chain(d, "&&", triFalse, p.term)
	})
}

// chain reads operands joined by op, whose result one operand equal to
// decisive settles.
func (p *condParser) chain(depth int, op string, decisive tri, operand func(int) (condValue, error)) (condValue, error) {
	left, err := operand(depth)
	if err != nil {
		return left, err
	}
	for {
		p.skipSpace()
		if !strings.HasPrefix(p.s[p.i:], op) {
			return left, nil
		}
		p.i += len(op)
		right, err := operand(depth)
		if err != nil {
			return right, err
		}
		left = combine(left, right, decisive)
	}
}

// combine joins two operands of an operator whose result is decided by
// one operand equal to decisive (true for ||, false for &&).
func combine(a, b condValue, decisive tri) condValue {
	switch {
	case a.v == decisive || b.v == decisive:
		return condValue{v: decisive}
	case a.v == triUnknown || b.v == triUnknown:
		return condValue{v: triUnknown, unknown: append(slices.Clip(a.unknown), b.unknown...)}
	}
	return condValue{v: 1 - decisive}
}

func (p *condParser) term(depth int) (condValue, error) {
	if depth >= maxCondDepth {
		return condValue{}, errCondTooDeep
	}
	p.skipSpace()
	neg := false
	for p.i < len(p.s) && p.s[p.i] == '!' {
		neg = !neg
		p.i++
		p.skipSpace()
	}
	v, err := p.operand(depth)
	if err != nil {
		return v, err
	}
	if neg && v.v != triUnknown {
		v.v = 1 - v.v
	}
	return v, nil
}

func (p *condParser) operand(depth int) (condValue, error) {
	if p.done() {
		return condValue{}, fmt.Errorf("a condition is missing at position %d", p.i+1)
	}
	start := p.i
	if p.s[p.i] == '(' {
		p.i++
		v, err := p.expr(depth + 1)
		if err != nil {
			return v, err
		}
		p.skipSpace()
		if p.done() || p.s[p.i] != ')' {
			return v, fmt.Errorf("missing ) for the ( at position %d", start+1)
		}
		p.i++
		return v, nil
	}
	if n, ok := p.number(); ok {
		if n {
			return condValue{v: triTrue}, nil
		}
		return condValue{v: triFalse}, nil
	}
	return p.call()
}

// call reads a predicate, with its arguments in parentheses if it has
// any, and evaluates it.
func (p *condParser) call() (condValue, error) {
	start, j := p.i, p.i
	for j < len(p.s) && isNameByte(p.s[j]) {
		j++
	}
	name := p.s[p.i:j]
	if name == "" {
		return condValue{}, fmt.Errorf("unexpected %q at position %d", p.s[p.i:], p.i+1)
	}
	p.i = j
	var args []string
	if p.i < len(p.s) && p.s[p.i] == '(' {
		end := strings.IndexByte(p.s[p.i:], ')')
		if end < 0 {
			return condValue{}, fmt.Errorf("%s: missing )", name)
		}
		for a := range strings.SplitSeq(p.s[p.i+1:p.i+end], ",") {
			args = append(args, strings.TrimSpace(a))
		}
		p.i += end + 1
	}
	return p.predicate(name, args, p.s[start:p.i])
}

// number reads an integer as C's strtol with base 0 would (decimal, 0x
// hex, 0 octal) and says whether it is non-zero.
func (p *condParser) number() (bool, bool) {
	j := p.i
	if j < len(p.s) && (p.s[j] == '+' || p.s[j] == '-') {
		j++
	}
	digits := j
	if strings.HasPrefix(p.s[j:], "0x") || strings.HasPrefix(p.s[j:], "0X") {
		k := j + 2
		for k < len(p.s) && strings.IndexByte("0123456789abcdefABCDEF", p.s[k]) >= 0 {
			k++
		}
		if k > j+2 {
			nonzero := strings.Trim(p.s[j+2:k], "0") != ""
			p.i = k
			return nonzero, true
		}
	}
	for j < len(p.s) && p.s[j] >= '0' && p.s[j] <= '9' {
		j++
	}
	if j == digits {
		return false, false
	}
	nonzero := strings.Trim(p.s[digits:j], "0") != ""
	p.i = j
	return nonzero, true
}

func (p *condParser) predicate(name string, args []string, text string) (condValue, error) {
	want := func(n int) error {
		if len(args) != n {
			return fmt.Errorf("%s takes %d argument(s), got %d", text, n, len(args))
		}
		return nil
	}
	switch name {
	case "defined":
		if err := want(1); err != nil {
			return condValue{}, err
		}
		if _, ok := p.env[args[0]]; ok {
			return condValue{v: triTrue}, nil
		}
		if !slices.Contains(p.undefined, args[0]) {
			p.undefined = append(p.undefined, args[0])
		}
		return condValue{v: triFalse}, nil
	case "streq", "strneq":
		if err := want(2); err != nil {
			return condValue{}, err
		}
		if (args[0] == args[1]) == (name == "streq") {
			return condValue{v: triTrue}, nil
		}
		return condValue{v: triFalse}, nil
	case "feature", "version_atleast", "version_before", "openssl_version_atleast",
		"openssl_version_before", "ssllib_name_startswith", "awslc_api_atleast",
		"awslc_api_before", "enabled", "strstr":
		if name == "strstr" {
			if err := want(2); err != nil {
				return condValue{}, err
			}
			if strings.Contains(args[0], args[1]) {
				return condValue{v: triTrue}, nil
			}
			return condValue{v: triFalse}, nil
		}
		return condValue{v: triUnknown, unknown: []string{text}}, nil
	}
	return condValue{}, fmt.Errorf("unknown predicate %s (HAProxy has defined, feature, streq, strneq, strstr, version_atleast, version_before, …)", text)
}
