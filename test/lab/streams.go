package lab

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"halb/test/fakecp"
)

// StreamsOptions configure RunStreams.
type StreamsOptions struct {
	// Opened, if set, is called each time a stream has opened (from the
	// stream's goroutine; it must not block).
	Opened                func()
	API, Talos            netip.AddrPort // targets; invalid: none of that kind
	Watches, TalosStreams int            // streams held at once
	K8sCert, K8sKey       string         // Kubernetes client certificate files (PEM)
	TalosCert, TalosKey   string         // Talos client certificate files (PEM)
	ReopenPause           time.Duration  // pause before reopening an ended stream
	ConnectTimeout        time.Duration  // bound on opening one stream
	Stall                 time.Duration  // no data for this long counts a stream as stalled
}

// StreamEnd is one stream that ended other than by the client.
type StreamEnd struct {
	Kind   string    `json:"kind"` // watch or talos
	Server string    `json:"server"`
	At     time.Time `json:"at"`
	How    string    `json:"how"` // clean, cut or stalled
	Err    string    `json:"err,omitempty"`
	Lines  int       `json:"lines"` // lines read before the end
}

// StreamsReport is what `halb-lab streams` prints.
type StreamsReport struct {
	Opened        int            `json:"opened"`
	Clean         map[string]int `json:"clean"` // per server
	Cut           []StreamEnd    `json:"cut,omitempty"`
	FailedOpens   int            `json:"failed_opens"`
	FailedOpenErr map[string]int `json:"failed_open_errors,omitempty"`
	Lines         int            `json:"lines"`
}

type streamStats struct {
	mu  sync.Mutex
	rep StreamsReport
}

func (s *streamStats) opened() {
	s.mu.Lock()
	s.rep.Opened++
	s.mu.Unlock()
}

func (s *streamStats) failedOpen(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rep.FailedOpens++
	msg := err.Error()
	if len(msg) > 120 {
		msg = msg[:120]
	}
	s.rep.FailedOpenErr[msg]++
}

func (s *streamStats) ended(e StreamEnd) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rep.Lines += e.Lines
	if e.How == "clean" {
		s.rep.Clean[e.Server]++
		return
	}
	s.rep.Cut = append(s.rep.Cut, e)
}

// RunStreams holds the streams until ctx ends and reports how each ended.
// started, if set, is called once the streams are being opened.
func RunStreams(ctx context.Context, o StreamsOptions, started func()) (StreamsReport, error) {
	st := &streamStats{rep: StreamsReport{Clean: map[string]int{}, FailedOpenErr: map[string]int{}}}
	var wg sync.WaitGroup
	if o.API.IsValid() && o.Watches > 0 {
		target := o.API
		cfg, err := clientTLS(o.K8sCert, o.K8sKey)
		if err != nil {
			return st.rep, fmt.Errorf("kubernetes client certificate: %w", err)
		}
		for range o.Watches {
			wg.Go(func() {
				holdStreams(ctx, o, st, func(ctx context.Context) (StreamEnd, error) { return watchOnce(ctx, o, st, target, cfg) })
			})
		}
	}
	if o.Talos.IsValid() && o.TalosStreams > 0 {
		target := o.Talos
		cfg, err := clientTLS(o.TalosCert, o.TalosKey)
		if err != nil {
			return st.rep, fmt.Errorf("talos client certificate: %w", err)
		}
		cfg.MinVersion = tls.VersionTLS13
		cfg.NextProtos = []string{"h2"}
		for range o.TalosStreams {
			wg.Go(func() {
				holdStreams(ctx, o, st, func(ctx context.Context) (StreamEnd, error) { return talosOnce(ctx, o, st, target, cfg) })
			})
		}
	}
	if started != nil {
		started()
	}
	wg.Wait()
	st.mu.Lock()
	defer st.mu.Unlock()
	sort.Slice(st.rep.Cut, func(i, j int) bool { return st.rep.Cut[i].At.Before(st.rep.Cut[j].At) })
	return st.rep, nil
}

// holdStreams keeps one stream open until ctx ends, reopening it after
// each end. Bounded by ctx: every step waits on it.
func holdStreams(ctx context.Context, o StreamsOptions, st *streamStats, once func(context.Context) (StreamEnd, error)) {
	for ctx.Err() == nil {
		end, err := once(ctx)
		switch {
		case ctx.Err() != nil:
			return // ended by us
		case err != nil:
			st.failedOpen(err)
		default:
			st.ended(end)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(o.ReopenPause):
		}
	}
}

func clientTLS(certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{InsecureSkipVerify: true} //nolint:gosec // the lab measures reachability; halb's checks verify
	if certFile == "" {
		return cfg, nil
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	if cert.Leaf == nil && len(cert.Certificate) > 0 {
		cert.Leaf, _ = x509.ParseCertificate(cert.Certificate[0])
	}
	cfg.Certificates = []tls.Certificate{cert}
	return cfg, nil
}

// dialTLS opens a TLS connection within the connect timeout; the
// deadline is lifted once the stream is open.
func dialTLS(ctx context.Context, o StreamsOptions, target netip.AddrPort, cfg *tls.Config) (*tls.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, o.ConnectTimeout)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(dctx, "tcp", target.String())
	if err != nil {
		return nil, err
	}
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(dctx); err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("tls handshake: %w", err)
	}
	return tc, nil
}

// watchOnce opens one watch and reads it until it ends.
func watchOnce(ctx context.Context, o StreamsOptions, st *streamStats, target netip.AddrPort, cfg *tls.Config) (StreamEnd, error) {
	conn, err := dialTLS(ctx, o, target, cfg)
	if err != nil {
		return StreamEnd{}, err
	}
	defer func() { _ = conn.Close() }()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	req := fmt.Sprintf("GET /api/v1/namespaces/default/pods?watch=true HTTP/1.1\r\nHost: %s\r\nUser-Agent: halb-lab-streams\r\n\r\n", target)
	_ = conn.SetDeadline(time.Now().Add(o.ConnectTimeout))
	if _, err := io.WriteString(conn, req); err != nil {
		return StreamEnd{}, fmt.Errorf("write request: %w", err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return StreamEnd{}, fmt.Errorf("read response: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return StreamEnd{}, fmt.Errorf("status %d", resp.StatusCode)
	}
	st.opened()
	if o.Opened != nil {
		o.Opened()
	}
	end := StreamEnd{Kind: "watch", Server: resp.Header.Get("X-Fakecp")}
	return readLines(conn, o, bufio.NewReader(resp.Body), end), nil
}

// talosOnce opens one Talos-like stream and reads it until it ends.
func talosOnce(ctx context.Context, o StreamsOptions, st *streamStats, target netip.AddrPort, cfg *tls.Config) (StreamEnd, error) {
	conn, err := dialTLS(ctx, o, target, cfg)
	if err != nil {
		return StreamEnd{}, err
	}
	defer func() { _ = conn.Close() }()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	if conn.ConnectionState().NegotiatedProtocol != "h2" {
		return StreamEnd{}, errors.New("server did not agree to ALPN h2: no stream")
	}
	br := bufio.NewReader(conn)
	_ = conn.SetReadDeadline(time.Now().Add(o.ConnectTimeout))
	first, err := br.ReadString('\n')
	if err != nil {
		return StreamEnd{}, fmt.Errorf("read first line: %w", err)
	}
	st.opened()
	if o.Opened != nil {
		o.Opened()
	}
	end := StreamEnd{Kind: "talos", Server: strings.Fields(first + " ?")[0], Lines: 1}
	return readLines(conn, o, br, end), nil
}

// readLines reads until the stream ends and says how it ended: io.EOF is
// the server's own end of a watch (the chunked terminator); anything else
// broke the stream under the client.
//
// A TLS stream has no such marker of its own (a FIN at a record boundary
// reads as io.EOF too), so Talos streams end with an "END" line, as a gRPC
// stream ends with its status trailers.
func readLines(conn net.Conn, o StreamsOptions, r *bufio.Reader, end StreamEnd) StreamEnd {
	last := ""
	for {
		_ = conn.SetReadDeadline(time.Now().Add(o.Stall))
		line, err := r.ReadString('\n')
		if err == nil {
			end.Lines++
			last = line
			continue
		}
		end.At = time.Now()
		var ne net.Error
		switch {
		case errors.Is(err, io.EOF) && end.Kind == "talos" && !strings.HasPrefix(last, "END"):
			end.How, end.Err = "cut", "connection closed without the end of the stream"
		case errors.Is(err, io.EOF):
			end.How = "clean"
		case errors.As(err, &ne) && ne.Timeout():
			end.How, end.Err = "stalled", err.Error()
		default:
			end.How, end.Err = "cut", err.Error()
		}
		return end
	}
}

// StreamsRun is `halb-lab streams` running in the client namespace.
type StreamsRun struct {
	p   *Process
	out string
	log string
}

// StartStreams holds watches through the VIP's Kubernetes API and Talos
// streams through its Talos API from the client, with the administrator's
// certificates, as kubelet and talosctl would, until Stop or max.
func (l *Lab) StartStreams(ctx context.Context, watches, talosStreams int, max time.Duration) (*StreamsRun, error) {
	l.mu.Lock()
	l.probes++
	name := fmt.Sprintf("streams%d", l.probes)
	l.mu.Unlock()
	out := filepath.Join(l.dir, name+".json")
	kc, kk, _ := fakecp.ClientFiles(l.PKIDir(), fakecp.KubeAdmin)
	tc, tk, _ := fakecp.ClientFiles(l.PKIDir(), fakecp.TalosAdmin)
	p, err := l.Spawn(name, "cl", l.opts.LabBin, "streams",
		"--api", netip.AddrPortFrom(VIP(), 6443).String(), "--talos", netip.AddrPortFrom(VIP(), 50000).String(),
		"--watches", fmt.Sprint(watches), "--talos-streams", fmt.Sprint(talosStreams),
		"--k8s-cert", kc, "--k8s-key", kk, "--talos-cert", tc, "--talos-key", tk,
		"--duration", max.String(), "--out", out)
	if err != nil {
		return nil, err
	}
	r := &StreamsRun{p: p, out: out, log: filepath.Join(l.dir, name+".log")}
	err = poll(ctx, 10*time.Second, func() (bool, error) {
		if p.Exited() {
			return false, fmt.Errorf("%s exited: %v: %s", name, p.Err(), l.LogTail(name, 5))
		}
		b, _ := os.ReadFile(filepath.Join(l.dir, name+".log"))
		return strings.Contains(string(b), "started"), nil
	})
	if err != nil {
		_ = p.Stop(syscall.SIGKILL, time.Second)
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return r, nil
}

// WaitAllOpen waits until each stream has opened once: a move made
// before then finds some of them still connecting, through either node.
func (r *StreamsRun) WaitAllOpen(ctx context.Context, within time.Duration) error {
	return poll(ctx, within, func() (bool, error) {
		if r.p.Exited() {
			return false, fmt.Errorf("streams exited: %v", r.p.Err())
		}
		b, _ := os.ReadFile(r.log)
		return strings.Contains(string(b), "all open"), nil
	})
}

// Stop ends the streams now (SIGTERM) and returns the report.
func (r *StreamsRun) Stop() (StreamsReport, error) {
	var rep StreamsReport
	if r.p.Exited() {
		// It ran out its --duration and wrote the report itself.
	} else if err := r.p.Stop(syscall.SIGTERM, 10*time.Second); err != nil {
		return rep, err
	}
	b, err := os.ReadFile(r.out)
	if err != nil {
		return rep, fmt.Errorf("read streams report: %w", err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		return rep, fmt.Errorf("parse streams report %s: %w", r.out, err)
	}
	return rep, nil
}
