package loadgen

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// Request is one job for the agent, one JSON object per line.
type Request struct {
	Op      string   `json:"op"` // bulk, churn, rr, hold, release, wait
	Addrs   []string `json:"addrs"`
	Sinks   []string `json:"sinks,omitempty"` // for wait: sink addresses
	N       int      `json:"n"`               // streams, workers, connections
	Seconds float64  `json:"seconds"`         // run length; for wait, the bound
}

// Reply answers one Request, one JSON object per line.
type Reply struct {
	Bulk   *BulkResult  `json:"bulk,omitempty"`
	Churn  *ChurnResult `json:"churn,omitempty"`
	RR     *RRResult    `json:"rr,omitempty"`
	Opened int          `json:"opened,omitempty"`
	Error  string       `json:"error,omitempty"`
}

// holdParallel is how many idle connections are opened at a time.
const holdParallel = 16

// Agent runs jobs read from r and writes one reply per job to w, until r
// ends or ctx does. It is the client side of the benchmark, run inside
// the client's namespace and driven over its standard input and output.
func Agent(ctx context.Context, r io.Reader, w io.Writer) error {
	sc := bufio.NewScanner(r)
	enc := json.NewEncoder(w)
	var held *Hold
	defer func() {
		if held != nil {
			held.Close()
		}
	}()
	for sc.Scan() {
		var req Request
		var rep Reply
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			rep.Error = fmt.Sprintf("bad request %q: %v", sc.Text(), err)
		} else if err := do(ctx, req, &rep, &held); err != nil {
			rep.Error = err.Error()
		}
		if err := enc.Encode(rep); err != nil {
			return fmt.Errorf("write reply: %w", err)
		}
		if ctx.Err() != nil {
			return nil
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read requests: %w", err)
	}
	return nil
}

func do(ctx context.Context, req Request, rep *Reply, held **Hold) error {
	d := time.Duration(req.Seconds * float64(time.Second))
	var err error
	switch req.Op {
	case "bulk":
		var r BulkResult
		r, err = Bulk(ctx, req.Addrs, req.N, d)
		rep.Bulk = &r
	case "churn":
		var r ChurnResult
		r, err = Churn(ctx, req.Addrs, req.N, d)
		rep.Churn = &r
	case "rr":
		var r RRResult
		r, err = RR(ctx, req.Addrs, req.N, d)
		rep.RR = &r
	case "hold":
		if *held != nil {
			return errors.New("connections are already held: release them first")
		}
		*held, err = OpenIdle(ctx, req.Addrs, req.N, holdParallel)
		rep.Opened = (*held).Opened()
	case "release":
		if *held != nil {
			(*held).Close()
			*held = nil
		}
	case "wait":
		err = WaitServing(ctx, req.Addrs, req.Sinks, req.N, d)
	default:
		err = fmt.Errorf("unknown op %q", req.Op)
	}
	return err
}

// WaitServing waits, up to d, until n exchanges in a row succeed on each
// echo address and each sink address: a proxy answers and has healthy
// servers behind it.
func WaitServing(ctx context.Context, echoes, sinks []string, n int, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	type target struct {
		addr string
		sink bool
	}
	var ts []target
	for _, a := range echoes {
		ts = append(ts, target{a, false})
	}
	for _, a := range sinks {
		ts = append(ts, target{a, true})
	}
	for _, t := range ts {
		var last error
		for ok := 0; ok < n; {
			if ctx.Err() != nil {
				return fmt.Errorf("%s not serving after %s: %w", t.addr, d, errors.Join(last, ctx.Err()))
			}
			last = tryExchange(ctx, t.addr, t.sink)
			if last != nil {
				ok = 0
				t := time.NewTimer(50 * time.Millisecond)
				select {
				case <-ctx.Done():
				case <-t.C:
				}
				continue
			}
			ok++
		}
	}
	return nil
}

// tryExchange does one exchange with an echo server, or sends one byte
// to a sink and reads its count.
func tryExchange(ctx context.Context, addr string, sink bool) error {
	dialer := net.Dialer{Timeout: dialTimeout}
	c, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if !sink {
		return exchange(c, make([]byte, MsgSize), make([]byte, MsgSize))
	}
	if _, err := c.Write([]byte{0}); err != nil {
		return fmt.Errorf("send to sink: %w", err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return fmt.Errorf("half-close: %w", err)
	}
	var b [8]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return fmt.Errorf("read sink count: %w", err)
	}
	return nil
}

// ServeAgent runs Agent for each connection accepted on ln, one at a
// time, until ctx ends; then it closes ln and returns nil.
func ServeAgent(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept a driver: %w", err)
		}
		unblock := context.AfterFunc(ctx, func() { _ = c.Close() })
		err = Agent(ctx, c, c)
		unblock()
		_ = c.Close()
		if err != nil && ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
			return err
		}
	}
}
