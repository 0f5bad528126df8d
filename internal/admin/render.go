package admin

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// ANSI colours, used only when Render is asked to.
const (
	red    = "\x1b[31m"
	green  = "\x1b[32m"
	yellow = "\x1b[33m"
	bold   = "\x1b[1m"
	reset  = "\x1b[0m"
)

// Render writes a compact human view of s: header, VIPs, members,
// frontends and backends. Times are shown relative to s.Time. With color,
// states and disagreements are coloured with ANSI escapes.
func Render(w io.Writer, s Snapshot, color bool) {
	var b bytes.Buffer
	r := renderer{buf: &b, s: s, color: color}
	r.header()
	r.vips()
	r.bgp()
	r.members()
	r.frontends()
	r.backends()
	_, _ = w.Write(b.Bytes())
}

type renderer struct {
	buf   *bytes.Buffer
	s     Snapshot
	color bool
}

func (r *renderer) paint(c, text string) string {
	if !r.color || c == "" {
		return text
	}
	return c + text + reset
}

func (r *renderer) header() {
	n := r.s.Node
	parts := []string{"node " + r.paint(bold, Printable(orDash(n.Name)))}
	if n.Version != "" {
		parts = append(parts, "version "+Printable(n.Version))
	}
	parts = append(parts, "up "+Duration(time.Duration(n.Uptime*float64(time.Second))))
	parts = append(parts, "config "+Printable(orDash(n.Fingerprint)))
	if n.Maintenance {
		parts = append(parts, r.paint(yellow, "MAINTENANCE"))
	}
	fmt.Fprintln(r.buf, strings.Join(parts, "  "))
}

func (r *renderer) vips() {
	if len(r.s.VIPs) == 0 {
		return
	}
	roles := map[string]VIPRole{}
	for _, ro := range r.s.Node.Roles {
		roles[BareIP(ro.VIP)] = ro
	}
	t := &table{}
	t.header("VIP", "IFACE", "HOLDER", "SINCE", "LAST GARP", "GARPS", "MOVES", "CONNS", "THIS NODE")
	for _, v := range r.s.VIPs {
		holder := cell{text: orNone(v.Holder)}
		if v.Holder == "" {
			holder.color = red
		} else if v.HeldHere {
			holder.text += " (here)"
			holder.color = green
		}
		role := "-"
		if ro, ok := roles[BareIP(v.Address)]; ok {
			role = ro.Role
			if ro.Why != "" {
				role += ": " + ro.Why
			}
		}
		// CONNS: the client connections the holder's shared table lists,
		// which the next holder tickles (docs/tickle.md).
		t.row(plain(v.Address), plain(orDash(v.Interface)), holder, plain(r.ago(v.Since)),
			plain(r.ago(v.LastGARP)), plain(fmt.Sprint(v.GARPsSent)), plain(fmt.Sprint(v.Transitions)),
			plain(fmt.Sprint(v.ConnTable)), plain(role))
		if !v.LastTakeover.IsZero() {
			t.note(plain(fmt.Sprintf("  last takeover here %s: %d client connection(s) of the previous holder tickled%s", r.ago(v.LastTakeover), v.LastTickled, TickleSummary(v.LastTickles))))
		}
		if h := v.Handoff; h != nil {
			t.note(plain("  " + handoffLine(r, h)))
		}
		if v.LastError != "" {
			t.note(cell{text: "  last error: " + v.LastError, color: red})
		}
	}
	r.section(t)
}

// bgp shows the VIPs announced by BGP (whether this node announces each,
// and why) and this node's sessions with its BGP peers.
func (r *renderer) bgp() {
	b := r.s.BGP
	if b == nil {
		return
	}
	if len(b.VIPs) > 0 {
		t := &table{}
		t.header("BGP VIP", "IFACE", "MODE", "THIS NODE", "SINCE", "WHY")
		for _, v := range b.VIPs {
			state := cell{text: "withdrawn", color: yellow}
			switch {
			case v.Announced:
				state = cell{text: "announces", color: green}
			case v.Draining:
				state.text = "withdrawn, draining"
			}
			t.row(plain(v.Address), plain(orDash(v.Interface)), plain(orDash(v.Mode)), state, plain(r.ago(v.Since)), plain(orDash(v.Why)))
			if v.LastError != "" {
				t.note(cell{text: "  last error: " + v.LastError, color: red})
			}
		}
		r.section(t)
	}
	t := &table{}
	t.header("BGP PEER", "ASN", "SESSION", "SINCE")
	for _, p := range b.Peers {
		st := cell{text: orDash(p.State), color: yellow}
		if p.State == "established" {
			st.color = green
		}
		t.row(plain(p.Address), plain(strconv.FormatUint(uint64(p.ASN), 10)), st, plain(r.ago(p.Since)))
	}
	r.section(t)
}

func (r *renderer) members() {
	if len(r.s.Members) == 0 {
		return
	}
	ref := ReferenceViews(r.s)
	multi := HeldByMany(r.s.Members)
	t := &table{}
	t.header("MEMBER", "ADDRESS", "ALIVE", "PRIO", "ELIGIBLE", "HOLDS", "VIEW", "CONFIG", "VERSION", "NOTES")
	for _, m := range r.s.Members {
		name := m.Name
		if m.Local {
			name += " *"
		}
		view, disagrees := r.memberView(m, ref)
		cfgDiffers := m.Fingerprint != "" && r.s.Node.Fingerprint != "" && m.Fingerprint != r.s.Node.Fingerprint
		cfg := cell{text: orDash(m.Fingerprint)}
		if cfgDiffers {
			cfg.color = red
		}
		t.row(plain(name), plain(orDash(m.Address)), r.memberAlive(m), plain(fmt.Sprint(m.Priority)), memberEligible(m),
			memberHolds(m, multi), view, cfg, plain(orDash(m.Version)), memberNotes(m, disagrees, cfgDiffers))
	}
	r.section(t)
}

// memberAlive shows whether m is alive and, if not, when it was last heard.
func (r *renderer) memberAlive(m Member) cell {
	if m.Alive {
		return cell{text: "yes", color: green}
	}
	alive := cell{text: "no", color: red}
	if !m.LastHeard.IsZero() {
		alive.text += ", heard " + r.ago(m.LastHeard)
	}
	return alive
}

// memberEligible shows whether m may hold a VIP and, if not, which
// frontends have no healthy server there.
func memberEligible(m Member) cell {
	if m.Eligible {
		return cell{text: "yes"}
	}
	eligible := cell{text: "no", color: yellow}
	if bad := strings.Join(UnhealthyFrontends(m), ","); bad != "" {
		eligible.text += " (" + bad + ")"
	}
	return eligible
}

// memberHolds lists the VIPs m holds, red when an alive m shares one
// with another alive member.
func memberHolds(m Member, multi map[string]bool) cell {
	holds := cell{text: orDash(strings.Join(m.Holds, ","))}
	if HoldsShared(m, multi) {
		holds.color = red
	}
	return holds
}

// memberView shows whom m elected for each VIP ("?" when its state
// cannot tell), prefixed with the VIP when there are several; disagrees
// says an alive m elected someone other than the reference view.
func (r *renderer) memberView(m Member, ref map[string]string) (view cell, disagrees bool) {
	single := len(r.s.VIPs) == 1
	var views []string
	for _, v := range r.s.VIPs {
		elected, ok := MemberView(m, v)
		text := orNone(elected)
		if !ok {
			text = "?"
		}
		if !single {
			text = v.Address + "=" + text
		}
		views = append(views, text)
		if m.Alive && ok && elected != ref[v.Address] {
			disagrees = true
		}
	}
	view = cell{text: strings.Join(views, ",")}
	if disagrees {
		view.color = red
	}
	return view, disagrees
}

// memberNotes lists what is unusual about m: red for what makes members
// elect differently, yellow for what an operator chose or the network did.
func memberNotes(m Member, disagrees, cfgDiffers bool) cell {
	var notes []string
	if disagrees {
		notes = append(notes, "DISAGREES")
	}
	if cfgDiffers {
		notes = append(notes, "CONFIG DIFFERS")
	}
	if m.Maintenance {
		notes = append(notes, "maintenance")
	}
	if m.StateErr != "" {
		notes = append(notes, "state: "+m.StateErr)
	}
	if m.HeardVia != "" {
		notes = append(notes, "UNREACHABLE FROM HERE, heard by "+m.HeardVia)
	}
	if m.Disputed {
		notes = append(notes, "gossip says failed, heartbeats say alive")
	}
	note := cell{text: strings.Join(notes, ", ")}
	if disagrees || cfgDiffers || m.StateErr != "" {
		note.color = red
	} else if m.Maintenance || m.HeardVia != "" || m.Disputed {
		note.color = yellow
	}
	return note
}

func (r *renderer) frontends() {
	if len(r.s.Frontends) == 0 {
		return
	}
	t := &table{}
	t.header("FRONTEND", "BIND", "BACKEND", "CONNS", "TOTAL", "RATE", "REJECTED", "IN", "OUT")
	for _, f := range r.s.Frontends {
		conns := fmt.Sprint(f.Current)
		if f.MaxConn > 0 {
			conns += fmt.Sprintf("/%d", f.MaxConn)
		}
		rej := cell{text: fmt.Sprint(f.Rejected)}
		if f.Rejected > 0 {
			rej.color = yellow
		}
		t.row(plain(f.Name), plain(f.Bind), plain(f.Backend), plain(conns), plain(fmt.Sprint(f.Total)),
			plain(fmt.Sprintf("%.1f/s", f.Rate)), rej, plain(bytesIEC(f.BytesIn)), plain(bytesIEC(f.BytesOut)))
	}
	r.section(t)
}

func (r *renderer) backends() {
	for _, b := range r.s.Backends {
		up := 0
		for _, sv := range b.Servers {
			if sv.State == StateUp {
				up++
			}
		}
		summary := cell{text: fmt.Sprintf("%d/%d up", up, len(b.Servers))}
		switch {
		case b.Panic:
			summary = cell{text: summary.text + ", PANIC: forwarding to servers that checks marked down", color: red}
		case !backendHealthy(b):
			summary = cell{text: summary.text + ", NO HEALTHY SERVER", color: red}
		}
		fmt.Fprintf(r.buf, "\n%s %s (%s): %s\n", r.paint(bold, "BACKEND"), Printable(b.Name), Printable(orDash(b.Balance)), r.paint(summary.color, summary.text))
		if len(b.Servers) == 0 {
			continue
		}
		t := &table{indent: "  "}
		t.header("SERVER", "ADDRESS", "STATE", "SINCE", "LAST CHECK", "LATENCY", "CONNS", "TOTAL", "IN", "OUT", "FAILS")
		for _, sv := range b.Servers {
			name := sv.Name
			if sv.Backup {
				name += " (backup)"
			}
			check := cell{text: orDash(sv.LastCheck)}
			if sv.LastCheck != "" && !sv.LastCheckOK {
				check.color = red
				if label := checkFailureLabel(sv.CheckFailure); label != "" {
					check.text = label + ": " + check.text
				}
			}
			lat := "-"
			if sv.CheckLatencyMS > 0 {
				lat = fmt.Sprintf("%.1fms", sv.CheckLatencyMS)
			}
			t.row(plain(name), plain(sv.Address), cell{text: orDash(sv.State), color: stateColor(sv.State)},
				plain(r.ago(sv.Since)), check, plain(lat), plain(fmt.Sprint(sv.Current)), plain(fmt.Sprint(sv.Total)),
				plain(bytesIEC(sv.BytesIn)), plain(bytesIEC(sv.BytesOut)), plain(fmt.Sprint(sv.ConnectFailures)))
		}
		t.write(r.buf, r.color)
	}
}

// checkFailureLabel names a failed check's kind the way operators read it.
func checkFailureLabel(kind string) string {
	switch kind {
	case CheckRejected:
		return "check rejected: credentials"
	case CheckNotReady:
		return "not ready"
	}
	return ""
}

func (r *renderer) section(t *table) {
	fmt.Fprintln(r.buf)
	t.write(r.buf, r.color)
}

// ago shows t relative to the snapshot's time, or as a clock time when
// the snapshot has none.
func (r *renderer) ago(t time.Time) string {
	switch {
	case t.IsZero():
		return "-"
	case r.s.Time.IsZero():
		return t.Format("15:04:05")
	}
	d := r.s.Time.Sub(t)
	if d < 0 {
		d = 0
	}
	return Duration(d) + " ago"
}

func stateColor(state string) string {
	switch state {
	case StateUp:
		return green
	case StateDown:
		return red
	}
	return yellow
}

// backendHealthy trusts the daemon's flag but also any server it reports
// up, so a Source that leaves Healthy unset is not called broken.
func backendHealthy(b Backend) bool {
	if b.Healthy {
		return true
	}
	for _, sv := range b.Servers {
		if sv.State == StateUp {
			return true
		}
	}
	return false
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func bytesIEC(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	v := float64(n)
	for _, suffix := range []string{"KiB", "MiB", "GiB", "TiB"} {
		v /= unit
		if v < unit || suffix == "TiB" {
			return fmt.Sprintf("%.1f%s", v, suffix)
		}
	}
	return fmt.Sprintf("%dB", n)
}

// cell is table text with an optional colour; widths count the text only,
// so escapes never break alignment.
type cell struct {
	text  string
	color string
}

func plain(s string) cell { return cell{text: s} }

type table struct {
	indent string
	rows   [][]cell
	notes  map[int]cell // a full-width line after row i
}

func (t *table) header(names ...string) {
	row := make([]cell, len(names))
	for i, n := range names {
		row[i] = cell{text: n, color: bold}
	}
	t.rows = append(t.rows, row)
}

// row adds cells; their text may come from the network (a server's HTTP
// reason phrase, a peer's gossiped name), so it is made printable.
func (t *table) row(cells ...cell) {
	for i := range cells {
		cells[i].text = Printable(cells[i].text)
	}
	t.rows = append(t.rows, cells)
}

func (t *table) note(c cell) {
	if t.notes == nil {
		t.notes = map[int]cell{}
	}
	c.text = Printable(c.text)
	t.notes[len(t.rows)-1] = c
}

// Printable escapes what a terminal would act on instead of print: control
// characters (C0, DEL, C1: clear screen, set title, move the cursor) and
// invalid UTF-8 become Go escapes such as \x1b. Text from the network must
// pass through it before it reaches a terminal.
func Printable(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || unicode.IsControl(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unicode.IsControl(r):
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

func (t *table) write(w *bytes.Buffer, color bool) {
	var widths []int
	for _, row := range t.rows {
		for i, c := range row {
			if i >= len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], utf8.RuneCountInString(c.text))
		}
	}
	paint := func(c cell) string {
		if !color || c.color == "" {
			return c.text
		}
		return c.color + c.text + reset
	}
	for ri, row := range t.rows {
		// Trailing empty cells would only add trailing spaces.
		for len(row) > 0 && row[len(row)-1].text == "" {
			row = row[:len(row)-1]
		}
		w.WriteString(t.indent)
		for i, c := range row {
			w.WriteString(paint(c))
			if i < len(row)-1 {
				w.WriteString(strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c.text)+2))
			}
		}
		w.WriteByte('\n')
		if n, ok := t.notes[ri]; ok {
			w.WriteString(t.indent + paint(n) + "\n")
		}
	}
}

// TickleSummary says what a takeover's tickles achieved, as a clause
// to follow "N tickled": how many the clients acknowledged and how soon
// the clients were back. Empty when nothing is known.
func TickleSummary(o *TickleOutcome) string {
	if o == nil {
		return ""
	}
	var b strings.Builder
	if o.Counted {
		fmt.Fprintf(&b, ", %d acknowledged (reset)", o.Acknowledged)
		if o.AlreadyClosed > 0 {
			fmt.Fprintf(&b, ", %d already closed", o.AlreadyClosed)
		}
	}
	return b.String() + "; " + o.ReconnectSummary()
}

// ReconnectSummary says how many of the tickled clients are back and how
// soon: "all 12 client(s) reconnected within 400ms".
func (o *TickleOutcome) ReconnectSummary() string {
	within := time.Duration(o.ReconnectedWithin * float64(time.Second)).Round(time.Millisecond)
	switch o.Reconnected {
	case 0:
		return fmt.Sprintf("none of %d client(s) reconnected yet", o.Clients)
	case o.Clients:
		return fmt.Sprintf("all %d client(s) reconnected within %s", o.Clients, within)
	}
	return fmt.Sprintf("%d of %d client(s) reconnected within %s", o.Reconnected, o.Clients, within)
}

// handoffLine says what this node's last flow hand-off of a VIP did.
func handoffLine(r *renderer, h *Handoff) string {
	switch h.Role {
	case "forwarding":
		return fmt.Sprintf("hand-off since %s: forwarding the connections of %s to it: %d handed off, %d still open there",
			r.ago(h.Since), h.Peer, h.HandedOff, h.Forwarded)
	case "handing off":
		return fmt.Sprintf("hand-off since %s: serving %d of %d handed-off connection(s) until they close or the drain ends",
			r.ago(h.Since), h.Forwarded, h.HandedOff)
	}
	return fmt.Sprintf("last hand-off %s: %d connection(s) handed off, %d closed at the end of drain; ended %s: %s",
		r.ago(h.Since), h.HandedOff, h.ClosedAtDrain, r.ago(h.Ended), h.EndReason)
}
