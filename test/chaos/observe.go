package chaos

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// watch records in the timeline every change of the nodes holding the VIP
// on their interface and of the client's neighbour entry for it, until
// ctx ends; the channel closes then.
func (r *Runner) watch(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		var last, lastMAC string
		for ctx.Err() == nil {
			if h, err := r.lab.Holders(ctx); err == nil {
				if s := fmt.Sprint(h); s != last {
					r.event("VIP on %s", s)
					last = s
				}
			}
			if mac, state, err := r.lab.Neighbour(ctx); err == nil && mac != lastMAC {
				r.event("client neighbour entry: %s %s (%s)", mac, state, r.macOwner(mac))
				lastMAC = mac
			}
			sleep(ctx, 200*time.Millisecond)
		}
	}()
	return done
}

func (r *Runner) macOwner(mac string) string {
	for n, m := range r.macs {
		if m == mac {
			return n
		}
	}
	return "?"
}

// reach times the client's first success on each VIP port from the end of
// the faults, up to the reach bound.
func (r *Runner) reach(ctx context.Context, from time.Time) []Reach {
	ports := []netip.AddrPort{r.cfg.API, r.cfg.Talos}
	out := make([]Reach, len(ports))
	var wg sync.WaitGroup
	for i, ap := range ports {
		wg.Go(func() { out[i] = r.reachOne(ctx, ap, from) })
	}
	wg.Wait()
	return out
}

func (r *Runner) reachOne(ctx context.Context, ap netip.AddrPort, from time.Time) Reach {
	res := Reach{Port: int(ap.Port())}
	for time.Since(from) < r.cfg.Bounds.Reach && ctx.Err() == nil {
		tctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		err := r.lab.Try(tctx, ap)
		cancel()
		if err == nil {
			return Reach{Port: res.Port, OK: true, After: time.Since(from)}
		}
		res.Err = err.Error()
		sleep(ctx, 20*time.Millisecond)
	}
	return res
}

// settle waits until the nodes have converged (Settled) and returns the
// holder, or the last reason they had not when the bound ran out.
func (r *Runner) settle(ctx context.Context) (string, error) {
	deadline := time.Now().Add(r.cfg.Settle)
	for {
		holder, why := Settled(r.views(ctx))
		if why == "" {
			return holder, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return "", fmt.Errorf("not settled after %s: %s", r.cfg.Settle, why)
		}
		sleep(ctx, 100*time.Millisecond)
	}
}

// neighbour reads the client's neighbour entry for the VIP, giving it up to
// a second to name the holder after the client last talked to the VIP.
func (r *Runner) neighbour(ctx context.Context, holder string) string {
	want := r.macs[holder]
	var got string
	deadline := time.Now().Add(time.Second)
	for {
		if mac, _, err := r.lab.Neighbour(ctx); err == nil {
			got = mac
		}
		if got == want || time.Now().After(deadline) || ctx.Err() != nil {
			return got
		}
		tctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		_ = r.lab.Try(tctx, r.cfg.API)
		cancel()
		sleep(ctx, 50*time.Millisecond)
	}
}

// observe reads every node's kernel addresses, admin view and resources.
func (r *Runner) observe(ctx context.Context) []Node {
	nodes := r.views(ctx)
	for i, n := range nodes {
		if n.StatusErr != "" {
			continue
		}
		var err error
		nodes[i].Goroutines, nodes[i].RSS, err = r.lab.Metrics(ctx, n.Name)
		if err != nil {
			r.event("metrics of %s: %v", n.Name, err)
		}
	}
	return nodes
}

// views reads every node's kernel addresses and admin view.
func (r *Runner) views(ctx context.Context) []Node {
	holders, err := r.lab.Holders(ctx)
	if err != nil {
		r.event("read holders: %v", err)
	}
	nodes := make([]Node, 0, len(r.topo.LBs))
	for _, name := range r.topo.LBs {
		n := Node{Name: name, HasVIP: slices.Contains(holders, name), MAC: r.macs[name], PID: r.lab.PID(name)}
		r.view(ctx, &n)
		nodes = append(nodes, n)
	}
	return nodes
}

// view fills in what n's admin API says of the VIP and its members.
func (r *Runner) view(ctx context.Context, n *Node) {
	s, err := r.lab.Status(ctx, n.Name)
	if err != nil {
		n.StatusErr = err.Error()
		return
	}
	vip := r.cfg.API.Addr().String()
	if len(s.VIPs) > 0 {
		n.View = s.VIPs[0].Holder
		n.Claims = s.VIPs[0].HeldHere
		n.PreemptAt = s.VIPs[0].PreemptAt
	}
	n.Peers = map[string]string{}
	for _, m := range s.Members {
		if m.Local {
			n.Eligible = m.Eligible
			n.Claims = n.Claims || slices.Contains(m.Holds, vip)
			continue
		}
		if m.Alive {
			n.Peers[m.Name] = m.HolderView[vip]
		}
	}
}
