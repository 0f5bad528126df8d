package lab

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"halb/test/fakecp"
)

// StormOptions configure RunStorm.
type StormOptions struct {
	Target  netip.AddrPort // a Talos-API-like TLS port, e.g. the VIP's 50000
	Clients int            // connections in all
	// Concurrency is how many clients run at once (0: all of them): the
	// first wave is released together, and each client that ends starts
	// the next, so that many connections are always being opened.
	Concurrency int
	Timeout     time.Duration // bound on one client's connect, handshake and answer
	// TLS is the client's credentials, as talosctl presents them; nil
	// makes each client a plain TCP one that connects and closes.
	TLS *tls.Config
}

// StormReport is what `halb-lab storm` prints.
type StormReport struct {
	Clients  int            `json:"clients"`
	OK       int            `json:"ok"`
	Failed   int            `json:"failed"`
	Errors   map[string]int `json:"errors,omitempty"`  // failure text -> count
	Servers  map[string]int `json:"servers"`           // answers per control plane
	Elapsed  time.Duration  `json:"elapsed"`           // from the release to the last answer
	Slowest  time.Duration  `json:"slowest"`           // the longest successful client
	Released time.Time      `json:"released,omitzero"` // when every client was let go
}

// RunStorm opens o.Clients connections to o.Target, o.Concurrency at a
// time, as the clients of a cluster endpoint reconnect after a failover:
// every client goroutine is started and waits at a barrier, and all are
// released together. Each completes a TLS handshake and reads the server's name; a
// connection that fails anywhere is a failure, with its error.
func RunStorm(ctx context.Context, o StormOptions) StormReport {
	rep := StormReport{Clients: o.Clients, Errors: map[string]int{}, Servers: map[string]int{}}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	workers := o.Concurrency
	if workers <= 0 || workers > o.Clients {
		workers = o.Clients
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	release := make(chan struct{})
	next := 0 // clients started, guarded by mu
	for range workers {
		wg.Go(func() {
			<-release
			for {
				mu.Lock()
				if next == o.Clients {
					mu.Unlock()
					return
				}
				next++
				mu.Unlock()
				t0 := time.Now()
				name, err := stormClient(ctx, o)
				took := time.Since(t0)
				mu.Lock()
				if err != nil {
					rep.Failed++
					rep.Errors[stormError(err)]++
				} else {
					rep.OK++
					rep.Servers[name]++
					rep.Slowest = max(rep.Slowest, took)
				}
				mu.Unlock()
			}
		})
	}
	rep.Released = time.Now()
	close(release)
	wg.Wait()
	rep.Elapsed = time.Since(rep.Released)
	return rep
}

// stormClient is one client: connect, handshake, read the name line.
// Without TLS it connects, closes its side at once, and waits for the
// server's close: a clean end of stream means a server took the
// connection, a reset that the proxy found none.
func stormClient(ctx context.Context, o StormOptions) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	if o.TLS == nil {
		return "", tcpClient(ctx, o.Target)
	}
	d := tls.Dialer{Config: o.TLS}
	c, err := d.DialContext(ctx, "tcp", o.Target.String())
	if err != nil {
		return "", fmt.Errorf("connect and handshake: %w", err)
	}
	defer func() { _ = c.Close() }()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read answer: %w", err)
	}
	return strings.TrimSpace(line), nil
}

func tcpClient(ctx context.Context, target netip.AddrPort) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", target.String())
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer func() { _ = c.Close() }()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	if _, err := io.Copy(io.Discard, c); err != nil {
		return fmt.Errorf("wait for the server's close: %w", err)
	}
	return nil
}

// stormError shortens an error to what went wrong, without the addresses
// and ports that make every client's error text unique.
func stormError(err error) string {
	var errno syscall.Errno
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.As(err, &errno):
		return errno.Error()
	}
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	return s
}

// Storm runs `halb-lab storm` in the client namespace against target (a
// Talos-API-like port) with clients connections, concurrency at once (0:
// all), and returns its report. withTLS makes each client present the
// administrator's Talos credentials and read the server's name; without,
// clients connect and close.
func (l *Lab) Storm(ctx context.Context, target netip.AddrPort, clients, concurrency int, withTLS bool) (StormReport, error) {
	var rep StormReport
	args := []string{"netns", "exec", l.NS("cl"), l.opts.LabBin, "storm",
		"--target", target.String(), "--clients", strconv.Itoa(clients), "--concurrency", strconv.Itoa(concurrency)}
	if withTLS {
		cert, key, ca := fakecp.ClientFiles(l.PKIDir(), fakecp.TalosAdmin)
		args = append(args, "--tls", "--cert", cert, "--key", key, "--ca", ca)
	}
	out, err := run(ctx, "ip", args...)
	// Exit status 2 is a report with failures, which the caller judges.
	if err != nil && exitCode(err) != 2 {
		return rep, fmt.Errorf("storm: %w", err)
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		return rep, fmt.Errorf("parse storm report: %w", err)
	}
	return rep, nil
}

// String summarises the report in one line.
func (r StormReport) String() string {
	return fmt.Sprintf("%d clients: %d ok, %d failed %v, servers %v, in %s (slowest %s)",
		r.Clients, r.OK, r.Failed, r.Errors, r.Servers, r.Elapsed.Round(time.Millisecond), r.Slowest.Round(time.Millisecond))
}

// synDropTable is the nftables table DropSYNs adds in a lab namespace.
const synDropTable = "halb_lab_syn_drop"

// synBytes is the size of a Linux SYN at layer 3: 20 bytes of IPv4 header,
// 20 of TCP and 20 of options (MSS, SACK, timestamps, window scale).
const synBytes = 60

// DropSYNs makes host's kernel drop the next n connection requests (SYNs,
// retransmissions included) to port, then let every later one through, as
// a server's kernel drops SYNs while its listen queue is full: each
// dropped connect times out at the client, which must try elsewhere. It
// counts bytes of SYNs (nftables quota), so a SYN with other options
// shifts the count a little. Undo removes the rule early; Close removes
// it with the namespace.
func (l *Lab) DropSYNs(ctx context.Context, host string, port uint16, n int) (undo func(context.Context) error, err error) {
	rules := fmt.Sprintf(`table inet %s {
	chain input {
		type filter hook input priority 0; policy accept;
		tcp dport %d tcp flags & (syn | ack) == syn quota until %d bytes drop
	}
}
`, synDropTable, port, n*synBytes)
	if _, err := runStdin(ctx, rules, "ip", "netns", "exec", l.NS(host), "nft", "-f", "-"); err != nil {
		return nil, fmt.Errorf("drop SYNs to %s port %d: %w", host, port, err)
	}
	return func(ctx context.Context) error {
		if _, err := run(ctx, "ip", "netns", "exec", l.NS(host), "nft", "delete", "table", "inet", synDropTable); err != nil {
			return fmt.Errorf("stop dropping SYNs on %s: %w", host, err)
		}
		return nil
	}, nil
}
