package loadgen

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"time"
)

// MsgSize is the request and the reply of request/response and churn.
const MsgSize = 64

// dialTimeout bounds one connect; the lab answers a SYN in microseconds.
const dialTimeout = 3 * time.Second

// BulkResult is what bulk streams moved.
type BulkResult struct {
	Streams    int     `json:"streams"`
	Bytes      int64   `json:"bytes"`   // counted by the receiver
	Seconds    float64 `json:"seconds"` // from the first write to the last count
	BitsPerSec float64 `json:"bits_per_sec"`
}

// Bulk sends as fast as it can over streams connections for d, each to
// addrs[i % len(addrs)], then half-closes and waits for each receiver's
// count, so the rate is of bytes that arrived, not of bytes buffered.
func Bulk(ctx context.Context, addrs []string, streams int, d time.Duration) (BulkResult, error) {
	conns, err := dialAll(ctx, addrs, streams)
	if err != nil {
		return BulkResult{}, err
	}
	defer closeAll(conns)
	start := time.Now()
	stop := start.Add(d)
	counts := make([]int64, streams)
	errs := make([]error, streams)
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			counts[i], errs[i] = push(c, stop)
		}()
	}
	wg.Wait()
	took := time.Since(start)
	r := BulkResult{Streams: streams, Seconds: took.Seconds()}
	for _, n := range counts {
		r.Bytes += n
	}
	if err := errors.Join(errs...); err != nil {
		return r, err
	}
	r.BitsPerSec = float64(r.Bytes) * 8 / r.Seconds
	return r, nil
}

// push writes until stop, half-closes and reads the receiver's count.
func push(c *net.TCPConn, stop time.Time) (int64, error) {
	buf := make([]byte, 256<<10)
	if err := c.SetWriteDeadline(stop); err != nil {
		return 0, fmt.Errorf("set write deadline: %w", err)
	}
	for {
		if _, err := c.Write(buf); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			return 0, fmt.Errorf("bulk write: %w", err)
		}
	}
	if err := c.CloseWrite(); err != nil {
		return 0, fmt.Errorf("half-close: %w", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	var b [8]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return 0, fmt.Errorf("read the receiver's count: %w", err)
	}
	return int64(binary.BigEndian.Uint64(b[:])), nil
}

// ChurnResult is what connection churn achieved.
type ChurnResult struct {
	Workers    int     `json:"workers"`
	Conns      int     `json:"conns"`  // complete exchanges
	Errors     int     `json:"errors"` // connects or exchanges that failed
	PerSec     float64 `json:"per_sec"`
	ConnectP50 float64 `json:"connect_p50_us"`
	ConnectP99 float64 `json:"connect_p99_us"`
	TxP99      float64 `json:"exchange_p99_us"` // connect to reply
}

// maxErrors stops a churn run early that fails instead of measuring.
const maxErrors = 100

// Churn runs workers loops for d, each opening a new connection, sending
// MsgSize bytes, reading the MsgSize-byte reply and closing, round robin
// over addrs.
func Churn(ctx context.Context, addrs []string, workers int, d time.Duration) (ChurnResult, error) {
	stop := time.Now().Add(d)
	type worker struct {
		connect, tx []time.Duration
		errs        int
		last        error
	}
	ws := make([]worker, workers)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := &ws[i]
			msg := make([]byte, MsgSize)
			reply := make([]byte, MsgSize)
			dialer := net.Dialer{Timeout: dialTimeout}
			for n := i; time.Now().Before(stop) && ctx.Err() == nil && w.errs < maxErrors/workers+1; n++ {
				t0 := time.Now()
				c, err := dialer.DialContext(ctx, "tcp", addrs[n%len(addrs)])
				if err != nil {
					w.errs++
					w.last = err
					continue
				}
				t1 := time.Now()
				err = exchange(c, msg, reply)
				_ = c.Close()
				if err != nil {
					w.errs++
					w.last = err
					continue
				}
				w.connect = append(w.connect, t1.Sub(t0))
				w.tx = append(w.tx, time.Since(t0))
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	r := ChurnResult{Workers: workers}
	var connect, tx []time.Duration
	var last error
	for _, w := range ws {
		connect = append(connect, w.connect...)
		tx = append(tx, w.tx...)
		r.Errors += w.errs
		if w.last != nil {
			last = w.last
		}
	}
	r.Conns = len(connect)
	r.PerSec = float64(r.Conns) / took.Seconds()
	r.ConnectP50 = micros(Percentile(connect, 50))
	r.ConnectP99 = micros(Percentile(connect, 99))
	r.TxP99 = micros(Percentile(tx, 99))
	if r.Errors > 0 && r.Conns == 0 {
		return r, fmt.Errorf("no connection completed: %w", last)
	}
	return r, nil
}

// exchange sends msg and reads a reply of the same size.
func exchange(c net.Conn, msg, reply []byte) error {
	if _, err := c.Write(msg); err != nil {
		return fmt.Errorf("send request: %w", err)
	}
	if _, err := io.ReadFull(c, reply); err != nil {
		return fmt.Errorf("read reply: %w", err)
	}
	return nil
}

// RRResult is what request/response over persistent connections achieved.
type RRResult struct {
	Conns    int     `json:"conns"`
	Requests int     `json:"requests"`
	PerSec   float64 `json:"per_sec"`
	P50      float64 `json:"p50_us"`
	P99      float64 `json:"p99_us"`
}

// RR opens conns connections and, for d, sends MsgSize bytes on each and
// waits for the MsgSize-byte reply before the next request.
func RR(ctx context.Context, addrs []string, conns int, d time.Duration) (RRResult, error) {
	cs, err := dialAll(ctx, addrs, conns)
	if err != nil {
		return RRResult{}, err
	}
	defer closeAll(cs)
	lat := make([][]time.Duration, conns)
	errs := make([]error, conns)
	var wg sync.WaitGroup
	start := time.Now()
	stop := start.Add(d)
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := make([]byte, MsgSize)
			reply := make([]byte, MsgSize)
			l := make([]time.Duration, 0, 1<<16)
			for time.Now().Before(stop) && ctx.Err() == nil {
				t0 := time.Now()
				if err := exchange(c, msg, reply); err != nil {
					errs[i] = err
					break
				}
				l = append(l, time.Since(t0))
			}
			lat[i] = l
		}()
	}
	wg.Wait()
	took := time.Since(start)
	all := slices.Concat(lat...)
	r := RRResult{
		Conns:    conns,
		Requests: len(all),
		PerSec:   float64(len(all)) / took.Seconds(),
		P50:      micros(Percentile(all, 50)),
		P99:      micros(Percentile(all, 99)),
	}
	return r, errors.Join(errs...)
}

// Hold is a set of idle connections that each completed one exchange, so
// a proxy in between has connected them through to a server.
type Hold struct {
	conns []net.Conn
}

// Opened is the number of connections held.
func (h *Hold) Opened() int { return len(h.conns) }

// Close closes every held connection.
func (h *Hold) Close() {
	for _, c := range h.conns {
		_ = c.Close()
	}
	h.conns = nil
}

// OpenIdle opens up to n connections (parallel at a time), round robin
// over addrs, and keeps those whose exchange succeeded. It stops early at
// the first failures, which at these numbers are a full file table or
// connection limit: what was really opened is the figure.
func OpenIdle(ctx context.Context, addrs []string, n, parallel int) (*Hold, error) {
	h := &Hold{}
	var mu sync.Mutex
	var failed int
	var last error
	var wg sync.WaitGroup
	next := make(chan int)
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := make([]byte, MsgSize)
			reply := make([]byte, MsgSize)
			dialer := net.Dialer{Timeout: dialTimeout}
			for i := range next {
				c, err := dialer.DialContext(ctx, "tcp", addrs[i%len(addrs)])
				if err == nil {
					_ = c.SetDeadline(time.Now().Add(dialTimeout))
					if err = exchange(c, msg, reply); err == nil {
						_ = c.SetDeadline(time.Time{})
					} else {
						_ = c.Close()
					}
				}
				mu.Lock()
				if err != nil {
					failed++
					last = err
				} else {
					h.conns = append(h.conns, c)
				}
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < n && ctx.Err() == nil; i++ {
		mu.Lock()
		stop := failed >= parallel
		mu.Unlock()
		if stop {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	if len(h.conns) == 0 && last != nil {
		return h, fmt.Errorf("no idle connection opened: %w", last)
	}
	return h, nil
}

// dialAll opens n connections round robin over addrs.
func dialAll(ctx context.Context, addrs []string, n int) ([]*net.TCPConn, error) {
	if len(addrs) == 0 || n <= 0 {
		return nil, errors.New("no address or no connection to open")
	}
	dialer := net.Dialer{Timeout: dialTimeout}
	conns := make([]*net.TCPConn, 0, n)
	for i := range n {
		c, err := dialer.DialContext(ctx, "tcp", addrs[i%len(addrs)])
		if err != nil {
			for _, c := range conns {
				_ = c.Close()
			}
			return nil, fmt.Errorf("connect to %s: %w", addrs[i%len(addrs)], err)
		}
		conns = append(conns, c.(*net.TCPConn))
	}
	return conns, nil
}

func closeAll(conns []*net.TCPConn) {
	for _, c := range conns {
		_ = c.Close()
	}
}

// Percentile returns the p-th percentile (nearest rank) of ds, sorting
// ds in place; 0 for none.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	i := int(float64(len(ds))*p/100+0.5) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}

func micros(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
