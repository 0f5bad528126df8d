package exitorder

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestBase(t *testing.T) {
	tests := []struct {
		limit          uint64
		conns, listens int
	}{
		{1024, 1024 - reserve, 1024 - listenerSlots},
		{20000, 20000 - reserve, 20000 - listenerSlots},
		{1 << 20, tableCap - reserve, tableCap - listenerSlots},
		{^uint64(0), tableCap - reserve, tableCap - listenerSlots}, // RLIM_INFINITY
		{600, 300, 562}, // half the table, not all but 88; the top sixteenth
		{128, 64, 120},
	}
	for _, tt := range tests {
		if got := base(tt.limit, Connections); got != tt.conns {
			t.Errorf("base(%d, Connections) = %d, want %d", tt.limit, got, tt.conns)
		}
		if got := base(tt.limit, Listeners); got != tt.listens {
			t.Errorf("base(%d, Listeners) = %d, want %d", tt.limit, got, tt.listens)
		}
	}
}

// childEnv names the address a child process (this test binary run again)
// connects to; pinEnv says whether it pins its first connection.
const (
	childEnv = "EXITORDER_TEST_CHILD"
	pinEnv   = "EXITORDER_TEST_PIN"
	others   = 1000
)

// TestChild is the process that dies: it opens its first connection (the
// smallest descriptor, like halb's gossip sockets), pins it or not, opens
// the others, says so and waits to be killed.
func TestChild(t *testing.T) {
	addr := os.Getenv(childEnv)
	if addr == "" {
		t.Skip("run by TestPinnedSocketClosesFirstAtExit")
	}
	// A listener opened first, as halb's gossip port is: the peer probes
	// it when the pinned connection ends.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	first, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv(pinEnv) == "1" {
		if ln, err = PinListener(ln); err != nil {
			t.Fatal(err)
		}
		if first, err = PinConn(first); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := first.Write([]byte("P")); err != nil {
		t.Fatal(err)
	}
	conns := []net.Conn{first}
	for range others {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("o")); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	fmt.Println(ln.Addr())
	time.Sleep(time.Minute) // killed long before
	t.Fatalf("not killed; %d connections", len(conns))
}

// endOrder runs a child, kills it with SIGKILL once its connections are
// open and returns where the first connection's end came among all, and
// what a connection to the child's listener, made as soon as the first
// connection ended, met.
func endOrder(t *testing.T, pin bool) (int, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	cmd := exec.Command(os.Args[0], "-test.run=^TestChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+ln.Addr().String(), fmt.Sprintf("%s=%d", pinEnv, map[bool]int{true: 1}[pin]))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()

	var mu sync.Mutex
	var ended []byte // each connection's mark, in the order they ended
	var wg sync.WaitGroup
	probeAddr := make(chan string, 1)
	probed := make(chan error, 1)
	defer wg.Wait()
	for range others + 1 {
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = c.Close() }()
		mark := make([]byte, 1)
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.ReadFull(c, mark); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			_, _ = io.Copy(io.Discard, c)
			if mark[0] == 'P' {
				pc, err := net.DialTimeout("tcp", <-probeAddr, 5*time.Second)
				if err == nil {
					_ = pc.Close()
				}
				probed <- err
			}
			mu.Lock()
			ended = append(ended, mark[0])
			mu.Unlock()
		})
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if _, perr := netip.ParseAddrPort(strings.TrimSpace(line)); err != nil || perr != nil {
		t.Fatalf("child said %q, %v; want its listener's address", line, err)
	}
	probeAddr <- strings.TrimSpace(line)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	at := slices.Index(ended, 'P')
	if at < 0 || len(ended) != others+1 {
		t.Fatalf("%d connections ended, the first one at %d", len(ended), at)
	}
	return at, <-probed
}

// TestPinnedSocketClosesFirstAtExit kills a process holding a thousand
// connections: the one it pinned must end before half of the others
// (unpinned, it ends after nearly all: it has the smallest descriptor),
// and its pinned listener must be closed by then.
//
// The order is read from this process's goroutines, which a busy machine
// (CI runs packages in parallel) may wake late, so a pinned run can only
// look later than the kernel's order, never earlier: the earliest of up
// to five runs is the one judged. A pin that does not work ends after
// nearly all of them every time.
func TestPinnedSocketClosesFirstAtExit(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a process with a thousand connections")
	}
	unpinned, probe := endOrder(t, false)
	t.Logf("unpinned, the first connection ended after %d of %d others; its listener then: %v", unpinned, others, probe)
	pinned := others + 1
	for try := 1; try <= 5 && pinned > others/2; try++ {
		at, probe := endOrder(t, true)
		t.Logf("pinned, run %d: it ended after %d of %d others; its listener then: %v", try, at, others, probe)
		if !errors.Is(probe, syscall.ECONNREFUSED) {
			t.Errorf("run %d: a connection to the pinned listener, made when the pinned connection ended: %v; want refused", try, probe)
		}
		pinned = min(pinned, at)
	}
	if pinned > others/2 {
		t.Errorf("pinned, the first connection ended after %d of %d others at the earliest of five runs; want it before half of them", pinned, others)
	}
}

// TestListenerCloseClosesTheSocket: a pinned listener sits above its own
// descriptor, and closing it must make the port refuse.
func TestListenerCloseClosesTheSocket(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pl, err := PinListener(ln)
	if err != nil {
		_ = ln.Close()
		t.Fatal(err)
	}
	own := -1
	rc, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Control(func(fd uintptr) { own = int(fd) }); err != nil {
		t.Fatal(err)
	}
	if fd, from := pl.(*Listener).pin.FD(), base(fileLimit(), Listeners); fd < from || fd <= own {
		t.Errorf("pin at descriptor %d, want %d or above and above the listener's own %d", fd, from, own)
	}
	addr := pl.Addr().String()
	if err := pl.Close(); err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", addr, 5*time.Second); err == nil {
		_ = c.Close()
		t.Fatalf("dial %s after Close connected: the pin kept the listener open", addr)
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial %s after Close: %v, want refused", addr, err)
	}
}

// TestConnCloseClosesTheSocket: closing a pinned connection must end it
// for the peer (the pin must not keep it open).
func TestConnCloseClosesTheSocket(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = peer.Close() }()
	pc, err := PinConn(c)
	if err != nil {
		t.Fatal(err)
	}
	if fd, from := pc.(*Conn).pin.FD(), base(fileLimit(), Connections); fd < from {
		t.Errorf("pin at descriptor %d, want %d or above", fd, from)
	}
	if err := pc.Close(); err != nil {
		t.Fatal(err)
	}
	_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := peer.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("peer read %d, %v after the pinned connection closed; want EOF", n, err)
	}
	if err := pc.Close(); err == nil {
		t.Error("second Close succeeded; want the connection's own error")
	}
}
