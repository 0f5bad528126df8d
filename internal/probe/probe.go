package probe

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"time"
)

// Modes of probing.
const (
	ModeTCP   = "tcp"   // connect, then close
	ModeTLS   = "tls"   // TLS handshake, then read what the server writes until it closes
	ModeHTTPS = "https" // TLS, then GET Path over a fresh connection; success is a 2xx status
)

// Defaults applied by Run to zero Options fields.
const (
	DefaultInterval = 10 * time.Millisecond
	DefaultTimeout  = 250 * time.Millisecond
	DefaultPath     = "/healthz"
)

// Options configure one probe run.
type Options struct {
	Target   netip.AddrPort
	Mode     string        // ModeTCP, ModeTLS or ModeHTTPS; "" means ModeTCP
	Interval time.Duration // time between the starts of two attempts
	Timeout  time.Duration // bound on one whole attempt (connect, handshake, request)
	Path     string        // https only
	// ResponderHeader names the response header that says which server
	// answered an https attempt (a test server's, say); without it, or
	// when a response lacks it, the first word after "ok" in the body is
	// used, and otherwise the answer counts without a name.
	ResponderHeader string
	// TLS is the client configuration of tls and https attempts, to
	// present a client certificate and verify the server as kubectl and
	// talosctl do; its ServerName defaults to the target's address. nil
	// verifies nothing and presents no certificate.
	TLS *tls.Config
	// Started, if set, is called once when the first attempt has finished,
	// so a caller can start the event it wants measured.
	Started func()
	// Succeeded, if set, is called after each successful attempt with its
	// end time, so a caller can place successes on its own timeline. It
	// runs on the probe's goroutine and must not block.
	Succeeded func(at time.Time)
}

// Report summarises a probe run. Times are wall-clock; durations are
// measured on the monotonic clock.
type Report struct {
	Target       string         `json:"target"`
	Mode         string         `json:"mode"`
	Start        time.Time      `json:"start"`
	End          time.Time      `json:"end"`
	Attempts     int            `json:"attempts"`
	Successes    int            `json:"successes"`
	Failures     int            `json:"failures"`
	LongestGap   time.Duration  `json:"longest_gap_ns"`
	GapStart     time.Time      `json:"gap_start"` // when LongestGap began
	FirstFailure time.Time      `json:"first_failure"`
	LastFailure  time.Time      `json:"last_failure"`
	Responders   map[string]int `json:"responders"` // successes per responder name (tls, https)
	Errors       map[string]int `json:"errors"`     // failures per short reason
	// Failed lists the first MaxFailureLog failures in full, saying at which
	// stage each broke (connect, tls handshake, read response, ...).
	Failed []Failure `json:"failed,omitempty"`
}

// MaxFailureLog bounds Report.Failed.
const MaxFailureLog = 20

// Failure is one failed attempt.
type Failure struct {
	At    time.Time `json:"at"`
	Error string    `json:"error"`
}

// String gives a one-line summary for logs.
func (r Report) String() string {
	return fmt.Sprintf("%s %s: %d attempts, %d failures, longest gap %s, responders %v, errors %v",
		r.Mode, r.Target, r.Attempts, r.Failures, r.LongestGap.Round(time.Millisecond), r.Responders, r.Errors)
}

// Run probes opts.Target until ctx ends and returns what it saw; an attempt
// under way when ctx ends still finishes, within its Timeout.
//
// Attempts do not overlap: one starts every Interval, or at once when the
// previous one took longer, so a stalled endpoint costs one Timeout per
// attempt. LongestGap is the longest stretch without a success, counting
// from the start of the run and up to its end, so an endpoint that never
// answers has a gap as long as the run.
func Run(ctx context.Context, opts Options) Report {
	if opts.Mode == "" {
		opts.Mode = ModeTCP
	}
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Path == "" {
		opts.Path = DefaultPath
	}
	r := Report{
		Target:     opts.Target.String(),
		Mode:       opts.Mode,
		Start:      time.Now(),
		Responders: map[string]int{},
		Errors:     map[string]int{},
	}
	lastOK := r.Start
	gap := func(now time.Time) {
		if d := now.Sub(lastOK); d > r.LongestGap {
			r.LongestGap, r.GapStart = d, lastOK
		}
	}
	tick := time.NewTicker(opts.Interval)
	defer tick.Stop()
	for ctx.Err() == nil {
		responder, err := attempt(ctx, opts)
		now := time.Now()
		r.Attempts++
		if err != nil {
			r.Failures++
			r.Errors[reason(err)]++
			if r.FirstFailure.IsZero() {
				r.FirstFailure = now
			}
			r.LastFailure = now
			if len(r.Failed) < MaxFailureLog {
				r.Failed = append(r.Failed, Failure{At: now, Error: err.Error()})
			}
		} else {
			r.Successes++
			if responder != "" {
				r.Responders[responder]++
			}
			gap(now)
			lastOK = now
			if opts.Succeeded != nil {
				opts.Succeeded(now)
			}
		}
		if r.Attempts == 1 && opts.Started != nil {
			opts.Started()
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
	r.End = time.Now()
	gap(r.End)
	return r
}

// attempt makes one connection and returns the responder's name, if any.
func attempt(ctx context.Context, opts Options) (string, error) {
	// The end of the run does not cut an attempt short: it finishes within
	// its own Timeout. A cut one says nothing about the target, and the
	// server would see a client vanish mid-handshake (a failed handshake
	// in its log, which tests count).
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opts.Timeout)
	defer cancel()
	ctx = actx
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", opts.Target.String())
	if err != nil {
		return "", fmt.Errorf("connect: %w", err)
	}
	defer func() { _ = conn.Close() }()
	if dl, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(dl); err != nil {
			return "", fmt.Errorf("set deadline: %w", err)
		}
	}
	if opts.Mode == ModeTCP {
		return "", nil
	}
	tc := tls.Client(conn, clientTLS(opts))
	if err := tc.HandshakeContext(ctx); err != nil {
		return "", fmt.Errorf("tls handshake: %w", err)
	}
	switch opts.Mode {
	case ModeTLS:
		b, err := io.ReadAll(io.LimitReader(tc, 256))
		if err != nil {
			return "", fmt.Errorf("read: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	case ModeHTTPS:
		return get(tc, opts)
	}
	return "", fmt.Errorf("unknown mode %q", opts.Mode)
}

func clientTLS(opts Options) *tls.Config {
	if opts.TLS == nil {
		// Without credentials the probe measures reachability, not identity.
		return &tls.Config{InsecureSkipVerify: true, ServerName: opts.Target.Addr().String()} //nolint:gosec // see above
	}
	conf := opts.TLS.Clone()
	if conf.ServerName == "" {
		conf.ServerName = opts.Target.Addr().String()
	}
	return conf
}

func get(conn net.Conn, opts Options) (string, error) {
	req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nUser-Agent: halb-probe\r\n\r\n", opts.Path, opts.Target)
	if _, err := io.WriteString(conn, req); err != nil {
		return "", fmt.Errorf("write request: %w", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return "", fmt.Errorf("read response: %w", err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1024))
	_ = resp.Body.Close()
	if err != nil {
		return "", fmt.Errorf("read body: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		return "", fmt.Errorf("status %d", resp.StatusCode)
	}
	if name := resp.Header.Get(opts.ResponderHeader); opts.ResponderHeader != "" && name != "" {
		return name, nil
	}
	f := strings.Fields(string(body))
	if len(f) >= 2 && f[0] == "ok" {
		return f[1], nil
	}
	return "", nil
}

// reason turns an error into a short, bounded label for Report.Errors.
func reason(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "reset"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "unreachable"
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return "prohibited"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	case strings.HasPrefix(err.Error(), "status "):
		return err.Error()
	case strings.Contains(err.Error(), "remote error: tls: "):
		// The server refused the handshake: a missing or untrusted client
		// certificate, or a TLS version it does not speak.
		return "tls rejected"
	case strings.Contains(err.Error(), "tls: failed to verify certificate"):
		return "tls untrusted server"
	}
	return "other"
}
