//go:build integration

package integration

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"halb/test/fakecp"
	"halb/test/lab"
)

// tickleConns is how many idle long-lived connections the client holds.
const tickleConns = 200

// tickleBound is how long after the VIP moved every orphaned connection
// must have failed (issue 17).
const tickleBound = time.Second

// The holder dies while the client holds idle Kubernetes API connections
// through the VIP (a request answered, nothing in flight, as client-go's
// between requests). The node that takes the VIP tickles every one of
// them from the dead holder's shared table, so each read fails at once
// instead of after the client's keep-alive; a new connection works, and
// the connections made through the new holder survive.
//
// Link down is the case that needs tickles: a dead host sends nothing. With
// kill -9 the old host's kernel still closes the sockets (EOF); the tickle
// then finds nothing left to reset, and the bound holds all the same.
func TestTickleOrphanedConnections(t *testing.T) {
	for _, mode := range []string{"linkdown", "kill"} {
		t.Run(mode, func(t *testing.T) {
			l, ctx := newLab(t, lab.Options{StartHalb: true}, true)
			holder, err := l.WaitStable(ctx, stableBound, l.LBNames()...)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := l.WaitHolder(ctx, 5*time.Second, lab.Only(holder)); err != nil {
				t.Fatal(err)
			}
			waitNeighAfterReach(t, ctx, l, holder)
			standby := others(l, holder)[0]
			tcfg, err := l.ClientTLS(fakecp.KubeAdmin)
			if err != nil {
				t.Fatal(err)
			}
			tcfg.ServerName = lab.VIP().String() // the certificates name the VIP, as kubectl dials it
			tcfg.NextProtos = []string{"http/1.1"}

			conns := holdConns(t, ctx, l, tcfg, tickleConns)
			// The standby must know the holder's connections before the cut.
			waitTable(t, ctx, l, standby, tickleConns, 5*time.Second)

			results := make([]time.Time, len(conns))
			errs := make([]error, len(conns))
			var readers sync.WaitGroup
			for i, c := range conns {
				_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
				readers.Go(func() {
					_, errs[i] = c.Read(make([]byte, 1))
					results[i] = time.Now()
				})
			}

			t0 := time.Now()
			switch mode {
			case "linkdown":
				err = l.LinkDown(ctx, holder)
			case "kill":
				err = l.StopHalb(holder, syscall.SIGKILL)
			}
			if err != nil {
				t.Fatalf("cut %s: %v", holder, err)
			}
			if _, err := l.WaitHolder(ctx, failoverBound, lab.ExactlyOne(standby)); err != nil {
				t.Fatalf("after cutting %s: %v", holder, err)
			}
			moved := time.Now()
			readers.Wait()

			var worst, lastFail time.Duration
			resets, eofs := 0, 0
			for i := range conns {
				after := results[i].Sub(moved)
				worst = max(worst, after)
				lastFail = max(lastFail, results[i].Sub(t0))
				switch {
				case errors.Is(errs[i], syscall.ECONNRESET):
					resets++
				case errors.Is(errs[i], io.EOF):
					eofs++
				case errs[i] == nil:
					t.Errorf("connection %d read data instead of failing", i)
				default:
					t.Errorf("connection %d failed with %v, want a reset", i, errs[i])
				}
				if after > tickleBound {
					t.Errorf("connection %d failed %s after the VIP moved, want within %s (%v)", i, after.Round(time.Millisecond), tickleBound, errs[i])
				}
			}
			t.Logf("%s: VIP on %s %s after the cut (as polled); all %d connections failed %s after the cut, %s after the move (%d reset, %d EOF)",
				mode, standby, moved.Sub(t0).Round(time.Millisecond), len(conns), lastFail.Round(time.Millisecond), worst.Round(time.Millisecond), resets, eofs)
			if mode == "linkdown" && resets != len(conns) {
				t.Errorf("%d of %d connections reset, want all: a dead host closes nothing itself", resets, len(conns))
			}

			st, err := l.Status(ctx, standby)
			if err != nil {
				t.Fatal(err)
			}
			if len(st.VIPs) != 1 || st.VIPs[0].LastTickled < tickleConns {
				t.Errorf("status of %s: VIPs %+v, want the last takeover to have tickled at least %d", standby, st.VIPs, tickleConns)
			}

			// New connections work and are left alone: past every tickle
			// round, they are still open.
			fresh := holdConns(t, ctx, l, tcfg, 20)
			time.Sleep(2 * time.Second) // nothing to await: the test is that nothing happens
			for i, c := range fresh {
				_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				var ne net.Error
				if _, err := c.Read(make([]byte, 1)); !errors.As(err, &ne) || !ne.Timeout() {
					t.Errorf("connection %d made through the new holder: read %v, want it open and idle", i, err)
				}
			}
		})
	}
}

// holdConns opens n Kubernetes API connections through the VIP from the
// client, each with one request answered, and leaves them idle (the
// server keeps an idle connection 30 s), as kubectl and client-go leave
// theirs between requests; they are closed when the test ends.
func holdConns(t *testing.T, ctx context.Context, l *lab.Lab, cfg *tls.Config, n int) []*tls.Conn {
	t.Helper()
	conns := make([]*tls.Conn, 0, n)
	for range n {
		raw, err := l.Dial(ctx, "cl", vipAPI.String())
		if err != nil {
			t.Fatal(err)
		}
		c := tls.Client(raw, cfg.Clone())
		t.Cleanup(func() { _ = c.Close() })
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+vipAPI.String()+"/version", nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := req.Write(c); err != nil {
			t.Fatalf("request through %s: %v", vipAPI, err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), req)
		if err != nil {
			t.Fatalf("response through %s: %v", vipAPI, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		_ = c.SetDeadline(time.Time{})
		conns = append(conns, c)
	}
	return conns
}

// waitTable waits until node's status shows a connection table of at least
// n for the VIP.
func waitTable(t *testing.T, ctx context.Context, l *lab.Lab, node string, n int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	last := -1
	for time.Now().Before(deadline) {
		st, err := l.Status(ctx, node)
		if err == nil && len(st.VIPs) == 1 {
			if last = st.VIPs[0].ConnTable; last >= n {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s's copy of the connection table has %d connections after %s, want %d", node, last, d, n)
}
