package chaos

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"
)

// request is one request on a long-lived connection.
type request struct {
	start time.Time
	took  time.Duration
	cp    string
	err   string
}

// maxRequests bounds the requests kept; only recent ones matter, and a
// long run must keep its memory flat.
const maxRequests = 20000

// longLived keeps Config.LongLived keep-alive connections from the client
// to the VIP's API port, each sending a request every 100 ms, until ctx
// ends. Every request is recorded. wg is done when all have stopped.
func (r *Runner) longLived(ctx context.Context, wg *sync.WaitGroup) {
	for range r.cfg.LongLived {
		s := r.lab.Session()
		wg.Go(func() {
			defer s.Close()
			for ctx.Err() == nil {
				q := request{start: time.Now()}
				cp, err := s.Get(ctx)
				q.took, q.cp = time.Since(q.start), cp
				if err != nil {
					q.err = err.Error()
				}
				r.record(q)
				sleep(ctx, 100*time.Millisecond)
			}
		})
	}
}

func (r *Runner) record(q request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests = append(r.requests, q)
	if len(r.requests) > maxRequests {
		r.requests = slices.Clone(r.requests[maxRequests/2:])
	}
}

// traffic sums up the long-lived connections' requests since from.
func (r *Runner) traffic(from time.Time) Traffic {
	r.mu.Lock()
	defer r.mu.Unlock()
	var t Traffic
	for _, q := range r.requests {
		if q.start.Before(from) {
			continue
		}
		t.Requests++
		if q.err != "" {
			t.Failed++
		}
		t.Longest = max(t.Longest, q.took)
	}
	return t
}

// cpOnly reports whether every fault of st is on the control-plane side,
// where the holder is untouched and any long wait is a wait on a dead CP.
func cpOnly(st Step) bool {
	for _, f := range st.Faults {
		switch f.Kind {
		case CPDie, CPFlap, CPSlow, PartitionCPs:
		default:
			return false
		}
	}
	return true
}

// downCPs lists the control planes a CP-side step took down for someone.
func downCPs(st Step) []string {
	var cps []string
	for _, f := range st.Faults {
		for _, t := range f.Targets {
			if strings.HasPrefix(t, "cp") {
				cps = append(cps, t)
			}
		}
	}
	return cps
}

// waits lists requests on long-lived connections that started in [from, to],
// took longer than the health-check bound, and were answered by one of the
// control planes in down or by none. A slow answer from a healthy one says
// the host is slow, not that halb kept a session on a dead server.
func (r *Runner) waits(from, to time.Time, down []string) []Wait {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ws []Wait
	for _, q := range r.requests {
		if q.start.Before(from) || q.start.After(to) || q.took <= r.cfg.Bounds.HealthCheck {
			continue
		}
		if q.cp != "" && !slices.Contains(down, q.cp) {
			continue
		}
		what := "answered"
		if q.err != "" {
			what = q.err
		}
		ws = append(ws, Wait{CP: q.cp, Took: q.took, What: what})
	}
	return ws
}
