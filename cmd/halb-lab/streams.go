package main

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
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
)

// streamsOptions configure `halb-lab streams`.
type streamsOptions struct {
	api, talos             string
	watches, talosStreams  int
	k8sCert, k8sKey        string
	talosCert, talosKey    string
	duration, reopenPause  time.Duration
	connectTimeout, stallT time.Duration
}

func newStreamsCmd() *cobra.Command {
	var o streamsOptions
	cmd := &cobra.Command{
		Use:   "streams --api IP:PORT --talos IP:PORT --duration D",
		Short: "Hold long-lived watches and Talos streams through the VIP and report how each ended",
		Long: `Streams holds --watches Kubernetes watch requests (GET ...?watch=true over
HTTPS, a chunked body the server writes to every 100 ms) and --talos-streams
Talos-API-like streams (TLS 1.3 with ALPN h2, a line every 100 ms), each with
the lab's admin client certificates, as kubelet, kubectl -w and talosctl logs -f
do. A stream that ends is opened again at once.

Each end is classified:
  clean   the server ended it (end of the chunked body; TLS close_notify)
  cut     the connection broke under it (reset, EOF without the end marker)
  stalled no data for --stall although the server writes every 100 ms
A reopen that fails is a failed request. On --duration or SIGTERM it prints a
JSON report (per server: clean ends, cuts; failed reopens) and exits 0.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if o.duration > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, o.duration)
				defer cancel()
			}
			rep, err := runStreams(ctx, o, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(rep)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.api, "api", "", "Kubernetes-API-like target IP:PORT (watches)")
	f.StringVar(&o.talos, "talos", "", "Talos-API-like target IP:PORT (TLS streams)")
	f.IntVar(&o.watches, "watches", 5, "watch requests held at once")
	f.IntVar(&o.talosStreams, "talos-streams", 5, "Talos streams held at once")
	f.StringVar(&o.k8sCert, "k8s-cert", "", "Kubernetes client certificate (PEM)")
	f.StringVar(&o.k8sKey, "k8s-key", "", "Kubernetes client key (PEM)")
	f.StringVar(&o.talosCert, "talos-cert", "", "Talos client certificate (PEM)")
	f.StringVar(&o.talosKey, "talos-key", "", "Talos client key (PEM)")
	f.DurationVar(&o.duration, "duration", time.Minute, "how long to hold streams")
	f.DurationVar(&o.reopenPause, "reopen-pause", 20*time.Millisecond, "pause before reopening an ended stream")
	f.DurationVar(&o.connectTimeout, "timeout", 2*time.Second, "bound on opening one stream")
	f.DurationVar(&o.stallT, "stall", 3*time.Second, "no data for this long counts the stream as stalled")
	return cmd
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

func runStreams(ctx context.Context, o streamsOptions, log io.Writer) (StreamsReport, error) {
	st := &streamStats{rep: StreamsReport{Clean: map[string]int{}, FailedOpenErr: map[string]int{}}}
	var wg sync.WaitGroup
	if o.api != "" && o.watches > 0 {
		target, err := netip.ParseAddrPort(o.api)
		if err != nil {
			return st.rep, fmt.Errorf("--api %q: %w", o.api, err)
		}
		cfg, err := clientTLS(o.k8sCert, o.k8sKey)
		if err != nil {
			return st.rep, fmt.Errorf("kubernetes client certificate: %w", err)
		}
		for range o.watches {
			wg.Go(func() {
				holdStreams(ctx, o, st, func(ctx context.Context) (StreamEnd, error) { return watchOnce(ctx, o, target, cfg) })
			})
		}
	}
	if o.talos != "" && o.talosStreams > 0 {
		target, err := netip.ParseAddrPort(o.talos)
		if err != nil {
			return st.rep, fmt.Errorf("--talos %q: %w", o.talos, err)
		}
		cfg, err := clientTLS(o.talosCert, o.talosKey)
		if err != nil {
			return st.rep, fmt.Errorf("talos client certificate: %w", err)
		}
		cfg.MinVersion = tls.VersionTLS13
		cfg.NextProtos = []string{"h2"}
		for range o.talosStreams {
			wg.Go(func() {
				holdStreams(ctx, o, st, func(ctx context.Context) (StreamEnd, error) { return talosOnce(ctx, o, target, cfg) })
			})
		}
	}
	_, _ = fmt.Fprintln(log, "started")
	wg.Wait()
	st.mu.Lock()
	defer st.mu.Unlock()
	sort.Slice(st.rep.Cut, func(i, j int) bool { return st.rep.Cut[i].At.Before(st.rep.Cut[j].At) })
	return st.rep, nil
}

// holdStreams keeps one stream open until ctx ends, reopening it after
// each end. Bounded by ctx: every step waits on it.
func holdStreams(ctx context.Context, o streamsOptions, st *streamStats, once func(context.Context) (StreamEnd, error)) {
	for ctx.Err() == nil {
		end, err := once(ctx)
		switch {
		case ctx.Err() != nil:
			return // ended by us
		case err != nil:
			st.failedOpen(err)
		default:
			st.opened()
			st.ended(end)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(o.reopenPause):
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
func dialTLS(ctx context.Context, o streamsOptions, target netip.AddrPort, cfg *tls.Config) (*tls.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, o.connectTimeout)
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
func watchOnce(ctx context.Context, o streamsOptions, target netip.AddrPort, cfg *tls.Config) (StreamEnd, error) {
	conn, err := dialTLS(ctx, o, target, cfg)
	if err != nil {
		return StreamEnd{}, err
	}
	defer func() { _ = conn.Close() }()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	req := fmt.Sprintf("GET /api/v1/namespaces/default/pods?watch=true HTTP/1.1\r\nHost: %s\r\nUser-Agent: halb-lab-streams\r\n\r\n", target)
	_ = conn.SetDeadline(time.Now().Add(o.connectTimeout))
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
	end := StreamEnd{Kind: "watch", Server: resp.Header.Get("X-Fakecp")}
	return readLines(conn, o, bufio.NewReader(resp.Body), end), nil
}

// talosOnce opens one Talos-like stream and reads it until it ends.
func talosOnce(ctx context.Context, o streamsOptions, target netip.AddrPort, cfg *tls.Config) (StreamEnd, error) {
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
	_ = conn.SetReadDeadline(time.Now().Add(o.connectTimeout))
	first, err := br.ReadString('\n')
	if err != nil {
		return StreamEnd{}, fmt.Errorf("read first line: %w", err)
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
func readLines(conn net.Conn, o streamsOptions, r *bufio.Reader, end StreamEnd) StreamEnd {
	last := ""
	for {
		_ = conn.SetReadDeadline(time.Now().Add(o.stallT))
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
