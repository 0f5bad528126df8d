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

// FlowsOptions configure RunFlows.
type FlowsOptions struct {
	Target         netip.AddrPort // a Kubernetes-API-like target, e.g. the VIP's 6443
	Count          int            // flows opened at once
	Hold           time.Duration  // each flow's lifetime: it then closes by itself
	Interval       time.Duration  // between two requests of one flow
	Cert, Key      string         // client certificate files (PEM)
	ConnectTimeout time.Duration  // bound on opening a flow and on each request
}

// Flow outcomes.
const (
	FlowFinished   = "finished"    // every request answered until Hold, then closed by the client
	FlowBroken     = "broken"      // a request failed: reset, EOF or timeout under the client
	FlowFailedOpen = "failed-open" // no connection or no first answer
)

// FlowResult is one flow: which LB node carried it and how it ended.
type FlowResult struct {
	// LB is the address the control plane saw the flow come from: the LB
	// node that proxied it.
	LB       string    `json:"lb"`
	Server   string    `json:"server"`
	Opened   time.Time `json:"opened"`
	Ended    time.Time `json:"ended"`
	How      string    `json:"how"`
	Err      string    `json:"err,omitempty"`
	Requests int       `json:"requests"`
}

// FlowsReport is what `halb-lab flows` writes.
type FlowsReport struct {
	Flows []FlowResult `json:"flows"`
}

// ByLB counts the flows per LB address and outcome: LB -> How -> count.
func (r FlowsReport) ByLB() map[string]map[string]int {
	out := map[string]map[string]int{}
	for _, f := range r.Flows {
		if out[f.LB] == nil {
			out[f.LB] = map[string]int{}
		}
		out[f.LB][f.How]++
	}
	return out
}

// RunFlows opens o.Count long-lived connections to o.Target at once,
// each sending a request every o.Interval on the same connection (HTTP
// keep-alive) for o.Hold, then closing. Because each flow sends, a flow
// that the network moves to another node breaks at once (that node
// resets it) instead of going unnoticed. opened, if set, is called once
// every flow has its first answer or failed to open. RunFlows returns
// when every flow has ended, or ctx ends.
func RunFlows(ctx context.Context, o FlowsOptions, opened func()) (FlowsReport, error) {
	cfg, err := clientTLS(o.Cert, o.Key)
	if err != nil {
		return FlowsReport{}, fmt.Errorf("client certificate: %w", err)
	}
	results := make([]FlowResult, o.Count)
	var first, all sync.WaitGroup
	first.Add(o.Count)
	for i := range o.Count {
		all.Go(func() { results[i] = runFlow(ctx, o, cfg, first.Done) })
	}
	first.Wait()
	if opened != nil {
		opened()
	}
	all.Wait()
	sort.SliceStable(results, func(i, j int) bool { return results[i].Opened.Before(results[j].Opened) })
	return FlowsReport{Flows: results}, nil
}

// runFlow runs one flow; firstDone is called exactly once, after its
// first answer or its failure to get one.
func runFlow(ctx context.Context, o FlowsOptions, cfg *tls.Config, firstDone func()) FlowResult {
	var once sync.Once
	done := func() { once.Do(firstDone) }
	defer done()
	res := FlowResult{Opened: time.Now()}
	end := func(how string, err error) FlowResult {
		res.Ended, res.How = time.Now(), how
		if err != nil {
			res.Err = err.Error()
		}
		return res
	}
	conn, err := dialTLS(ctx, StreamsOptions{ConnectTimeout: o.ConnectTimeout}, o.Target, cfg)
	if err != nil {
		return end(FlowFailedOpen, err)
	}
	defer func() { _ = conn.Close() }()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	br := bufio.NewReader(conn)
	deadline := res.Opened.Add(o.Hold)
	for {
		lb, server, err := flowRequest(conn, br, o)
		if err != nil {
			if res.Requests == 0 {
				return end(FlowFailedOpen, err)
			}
			if ctx.Err() != nil {
				return end(FlowBroken, fmt.Errorf("ended by the caller: %w", ctx.Err()))
			}
			return end(FlowBroken, err)
		}
		if res.Requests == 0 {
			res.LB, res.Server = lb, server
			done()
		}
		res.Requests++
		if !time.Now().Add(o.Interval).Before(deadline) {
			return end(FlowFinished, nil)
		}
		select {
		case <-ctx.Done():
			return end(FlowBroken, fmt.Errorf("ended by the caller: %w", ctx.Err()))
		case <-time.After(o.Interval):
		}
	}
}

// flowRequest sends one GET /healthz on the flow's connection and reads
// the answer, returning the LB and control plane it names.
func flowRequest(conn net.Conn, br *bufio.Reader, o FlowsOptions) (lb, server string, err error) {
	_ = conn.SetDeadline(time.Now().Add(o.ConnectTimeout))
	req := fmt.Sprintf("GET /healthz HTTP/1.1\r\nHost: %s\r\nUser-Agent: halb-lab-flows\r\n\r\n", o.Target)
	if _, err := io.WriteString(conn, req); err != nil {
		return "", "", fmt.Errorf("write request: %w", err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return "", "", fmt.Errorf("read response: %w", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("status %d", resp.StatusCode)
	}
	if resp.Close {
		return "", "", errors.New("server closed the connection after the answer")
	}
	return resp.Header.Get(fakecp.PeerHeader), resp.Header.Get(fakecp.NameHeader), nil
}

// FlowsRun is `halb-lab flows` running in the client namespace.
type FlowsRun struct {
	name string
	p    *Process
	out  string
	hold time.Duration
}

// StartFlows opens count flows to target from the client with the
// administrator's Kubernetes certificate, each living hold, and returns
// once every flow is open (or failed to), so that what the caller does
// next happens while they live.
func (l *Lab) StartFlows(ctx context.Context, target netip.AddrPort, count int, hold time.Duration) (*FlowsRun, error) {
	l.mu.Lock()
	l.probes++
	name := fmt.Sprintf("flows%d", l.probes)
	l.mu.Unlock()
	out := filepath.Join(l.dir, name+".json")
	cert, key, _ := fakecp.ClientFiles(l.PKIDir(), fakecp.KubeAdmin)
	p, err := l.Spawn(name, "cl", l.opts.LabBin, "flows", "--target", target.String(),
		"--count", fmt.Sprint(count), "--hold", hold.String(), "--cert", cert, "--key", key, "--out", out)
	if err != nil {
		return nil, err
	}
	r := &FlowsRun{name: name, p: p, out: out, hold: hold}
	err = poll(ctx, 10*time.Second, func() (bool, error) {
		if p.Exited() {
			return false, fmt.Errorf("%s exited: %v: %s", name, p.Err(), l.LogTail(name, 5))
		}
		b, _ := os.ReadFile(filepath.Join(l.dir, name+".log"))
		return strings.Contains(string(b), "opened"), nil
	})
	if err != nil {
		_ = p.Stop(syscall.SIGKILL, time.Second)
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return r, nil
}

// Wait waits until every flow has ended (hold plus 10 s at most) and
// returns the report.
func (r *FlowsRun) Wait(ctx context.Context) (FlowsReport, error) {
	var rep FlowsReport
	err := poll(ctx, r.hold+10*time.Second, func() (bool, error) { return r.p.Exited(), nil })
	if err != nil {
		_ = r.p.Stop(syscall.SIGKILL, time.Second)
		return rep, fmt.Errorf("%s did not finish: %w", r.name, err)
	}
	if err := r.p.Err(); err != nil {
		return rep, fmt.Errorf("%s: %w", r.name, err)
	}
	b, err := os.ReadFile(r.out)
	if err != nil {
		return rep, fmt.Errorf("read flows report: %w", err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		return rep, fmt.Errorf("parse flows report %s: %w", r.out, err)
	}
	return rep, nil
}
