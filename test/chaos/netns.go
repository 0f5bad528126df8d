package chaos

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
	"strconv"
	"strings"
	"syscall"
	"time"

	"halb/internal/admin"
	"halb/test/fakecp"
	"halb/test/lab"
)

// metricsAddr is where the lab's nodes serve /metrics on their own
// loopback; StatsSection turns it on.
const metricsAddr = "127.0.0.1:9601"

// NetnsLab is the namespace lab (test/lab) as a run's Lab.
type NetnsLab struct {
	l    *lab.Lab
	halb string // absolute path of the halb binary, for the CLI
	// Client credentials through the VIP, as kubectl and talosctl present them.
	apiTLS, talosTLS *tls.Config
}

var _ Lab = (*NetnsLab)(nil)

// NewNetnsLab wraps l, whose nodes run the halb binary at halbBin; the
// client presents apiTLS on the API port and talosTLS on Talos's.
func NewNetnsLab(l *lab.Lab, halbBin string, apiTLS, talosTLS *tls.Config) *NetnsLab {
	return &NetnsLab{l: l, halb: halbBin, apiTLS: apiTLS, talosTLS: talosTLS}
}

// StatsSection is the config text that turns on /metrics on each node's
// loopback, where Metrics reads goroutines and RSS; the password is random.
func StatsSection(hash []byte) string {
	return fmt.Sprintf("stats:\n  bind: 127.0.0.1:9600\n  metrics_bind: %s\n  users:\n    - name: chaos\n      password_hash: %q\n", metricsAddr, hash)
}

// Signal implements Processes.
func (n *NetnsLab) Signal(node string, sig syscall.Signal) error { return n.l.StopHalb(node, sig) }

// StartHalb implements Processes.
func (n *NetnsLab) StartHalb(ctx context.Context, node string) error {
	return n.l.StartHalb(ctx, node)
}

// SetCP implements Processes.
func (n *NetnsLab) SetCP(ctx context.Context, cp string, s fakecp.State) error {
	i, err := strconv.Atoi(strings.TrimPrefix(cp, "cp"))
	if err != nil {
		return fmt.Errorf("control plane %q: want cp<n>", cp)
	}
	return n.l.CP(i).SetState(ctx, s)
}

// LogTail implements Processes.
func (n *NetnsLab) LogTail(node string, lines int) string { return n.l.LogTail(node, lines) }

// SetLink implements Network.
func (n *NetnsLab) SetLink(ctx context.Context, host string, up bool) error {
	if up {
		return n.l.LinkUp(ctx, host)
	}
	return n.l.LinkDown(ctx, host)
}

// SetPartition implements Network.
func (n *NetnsLab) SetPartition(ctx context.Context, a, b string, cut bool) error {
	if cut {
		return n.l.Partition(ctx, a, b)
	}
	return n.l.Heal(ctx, a, b)
}

// Netem implements Network.
func (n *NetnsLab) Netem(ctx context.Context, host string, lossPct int, delay time.Duration) (string, error) {
	return n.l.Netem(ctx, host, lossPct, delay)
}

// ClearNetem implements Network.
func (n *NetnsLab) ClearNetem(ctx context.Context, host string) error {
	return n.l.ClearNetem(ctx, host)
}

// Status implements Admin.
func (n *NetnsLab) Status(ctx context.Context, node string) (admin.Snapshot, error) {
	return n.l.Status(ctx, node)
}

// Halb implements Admin.
func (n *NetnsLab) Halb(ctx context.Context, node string, args ...string) (string, int) {
	argv := append([]string{n.halb}, args...)
	argv = append(argv, "--socket", n.l.AdminSocket(node))
	out, code, _ := n.l.Exec(ctx, node, argv...)
	return string(out), code
}

// ReadConfig implements Admin.
func (n *NetnsLab) ReadConfig(node string) (string, error) { return n.l.ConfigText(node) }

// WriteConfig implements Admin.
func (n *NetnsLab) WriteConfig(node, text string) error { return n.l.WriteRawConfig(node, text) }

// Holders implements Observer.
func (n *NetnsLab) Holders(ctx context.Context) ([]string, error) { return n.l.Holder(ctx) }

// PID implements Observer.
func (n *NetnsLab) PID(node string) int { return n.l.PID(node) }

// MAC implements Observer.
func (n *NetnsLab) MAC(ctx context.Context, node string) (string, error) { return n.l.MAC(ctx, node) }

// Metrics implements Observer: it reads /metrics on node's own loopback.
func (n *NetnsLab) Metrics(ctx context.Context, node string) (int, int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := n.l.Dial(ctx, node, metricsAddr)
	if err != nil {
		return 0, 0, err
	}
	defer func() { _ = c.Close() }()
	dl, _ := ctx.Deadline()
	_ = c.SetDeadline(dl)
	if _, err := io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"); err != nil {
		return 0, 0, fmt.Errorf("ask %s for metrics: %w", node, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, 0, fmt.Errorf("read metrics of %s: %w", node, err)
	}
	defer func() { _ = resp.Body.Close() }()
	return parseMetrics(resp.Body)
}

// parseMetrics finds go_goroutines and process_resident_memory_bytes in a
// Prometheus text exposition.
func parseMetrics(r io.Reader) (goroutines int, rss int64, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "go_goroutines":
			goroutines = int(v)
		case "process_resident_memory_bytes":
			rss = int64(v)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, fmt.Errorf("read metrics: %w", err)
	}
	if goroutines == 0 {
		return 0, 0, errors.New("no go_goroutines in /metrics")
	}
	return goroutines, rss, nil
}

// StartProbe implements Client.
func (n *NetnsLab) StartProbe(ctx context.Context, target netip.AddrPort, mode string, d time.Duration) (ProbeRun, error) {
	p, err := n.l.StartProbe(ctx, target, mode, d)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// Try implements Client: a TLS handshake and, on the API port, a request.
func (n *NetnsLab) Try(ctx context.Context, ap netip.AddrPort) error {
	c, err := n.l.Dial(ctx, "cl", ap.String())
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	conf := n.talosTLS.Clone()
	if ap.Port() == 6443 {
		conf = n.apiTLS.Clone()
	}
	conf.ServerName = ap.Addr().String()
	tc := tls.Client(c, conf)
	if err := tc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("tls handshake: %w", err)
	}
	if ap.Port() != 6443 {
		_, err := bufio.NewReader(tc).ReadString('\n')
		return err
	}
	if _, err := io.WriteString(tc, "GET /healthz HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n"); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	return nil
}

// Neighbour implements Client.
func (n *NetnsLab) Neighbour(ctx context.Context) (string, string, error) {
	ne, err := n.l.ClientNeigh(ctx, lab.VIP())
	return ne.MAC, fmt.Sprint(ne.State), err
}

// Session implements Client.
func (n *NetnsLab) Session() Session {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return n.l.Dial(ctx, "cl", addr)
		},
		TLSClientConfig:     n.apiTLS.Clone(),
		MaxIdleConnsPerHost: 1,
		MaxConnsPerHost:     1,
		IdleConnTimeout:     time.Minute,
	}
	return &session{tr: tr, hc: &http.Client{Transport: tr, Timeout: 10 * time.Second},
		url: "https://" + netip.AddrPortFrom(lab.VIP(), 6443).String() + "/healthz"}
}

type session struct {
	tr  *http.Transport
	hc  *http.Client
	url string
}

func (s *session) Get(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return "", fmt.Errorf("make request: %w", err)
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return "", err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.Header.Get(fakecp.NameHeader), nil
}

func (s *session) Close() { s.tr.CloseIdleConnections() }
