package hooks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"halb/internal/config"
	"halb/internal/events"
)

// QueueLen is how many hooks may wait per lane (one VIP, server or
// member); more are dropped and logged.
const QueueLen = 16

// outputTail bounds how much of a hook's output is logged.
const outputTail = 1024

// ExecFunc runs argv with env until it exits or ctx ends, and returns its
// combined output. Tests replace it; Exec is the real one.
type ExecFunc func(ctx context.Context, argv, env []string) ([]byte, error)

// Runner runs hooks for events. Handle never blocks; hooks run in one
// goroutine per lane while Run runs.
type Runner struct {
	log   *slog.Logger
	exec  ExecFunc
	byKey map[events.Kind][]config.Hook

	mu    sync.Mutex
	ctx   context.Context // Run's; nil while not running
	lanes map[string]chan job
	wg    sync.WaitGroup
}

type job struct {
	hook config.Hook
	ev   events.Event
}

// New returns a runner for hooks; exec nil means Exec.
func New(hooks []config.Hook, exec ExecFunc, log *slog.Logger) *Runner {
	if exec == nil {
		exec = Exec
	}
	r := &Runner{log: log, exec: exec, byKey: map[events.Kind][]config.Hook{}, lanes: map[string]chan job{}}
	for _, h := range hooks {
		for _, k := range h.On {
			r.byKey[k] = append(r.byKey[k], h)
		}
	}
	return r
}

// Run lets hooks run until ctx ends, then waits for the running ones
// (each ends by its timeout or by ctx) and returns nil.
func (r *Runner) Run(ctx context.Context) error {
	r.mu.Lock()
	r.ctx = ctx
	r.mu.Unlock()
	<-ctx.Done()
	r.mu.Lock()
	r.ctx = nil
	r.mu.Unlock()
	r.wg.Wait()
	return nil
}

// lane names the queue an event waits in: hooks of one VIP run one after
// another, and so do those of one server and of one member.
func lane(e events.Event) string {
	switch {
	case e.VIP != "":
		return "vip " + e.VIP
	case e.Server != "":
		return "server " + e.Backend + "/" + e.Server
	default:
		return "member " + e.Node
	}
}

// Handle queues the hooks for e. It never blocks: when the lane is full
// the hook is dropped and logged.
func (r *Runner) Handle(e events.Event) {
	hooks := r.byKey[e.Kind]
	if len(hooks) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ctx == nil {
		r.log.Warn("hook not run: the hook runner is not running", "event", e.Kind)
		return
	}
	key := lane(e)
	ch := r.lanes[key]
	if ch == nil {
		ch = make(chan job, QueueLen)
		r.lanes[key] = ch
		ctx := r.ctx
		r.wg.Go(func() { r.drain(ctx, ch) })
	}
	for _, h := range hooks {
		select {
		case ch <- job{hook: h, ev: e}:
		default:
			r.log.Warn("hook dropped: too many waiting for the same VIP/server/member",
				"event", e.Kind, "lane", key, "command", h.Command[0], "queue", QueueLen)
		}
	}
}

// drain runs a lane's hooks one after another until ctx ends.
func (r *Runner) drain(ctx context.Context, ch <-chan job) {
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-ch:
			if ctx.Err() != nil {
				return // stopping: start no new hook
			}
			r.runOne(ctx, j)
		}
	}
}

// Env is the environment a hook sees for e: the daemon's own plus the facts.
func Env(e events.Event) []string {
	return append(os.Environ(),
		"HALB_EVENT="+string(e.Kind),
		"HALB_VIP="+e.VIP,
		"HALB_NODE="+e.Node,
		"HALB_BACKEND="+e.Backend,
		"HALB_SERVER="+e.Server,
		"HALB_REASON="+e.Reason,
	)
}

func (r *Runner) runOne(ctx context.Context, j job) {
	ctx, cancel := context.WithTimeout(ctx, j.hook.Timeout)
	defer cancel()
	start := time.Now()
	out, err := r.exec(ctx, j.hook.Command, Env(j.ev))
	took := time.Since(start)
	if len(out) > outputTail {
		out = out[len(out)-outputTail:]
	}
	attrs := []any{"event", j.ev.Kind, "command", j.hook.Command[0], "took", took.Round(time.Millisecond), "output", string(bytes.TrimSpace(out))}
	if j.ev.VIP != "" {
		attrs = append(attrs, "vip", j.ev.VIP)
	}
	if j.ev.Server != "" {
		attrs = append(attrs, "backend", j.ev.Backend, "server", j.ev.Server)
	}
	switch {
	case err == nil:
		r.log.Info("hook ran", attrs...)
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		r.log.Warn("hook killed after its timeout", append(attrs, "timeout", j.hook.Timeout)...)
	default:
		r.log.Warn("hook failed", append(attrs, "error", err.Error())...)
	}
}

// Exec runs argv in its own process group, so that a timeout kills what
// the hook started too, and returns its combined output.
func Exec(ctx context.Context, argv, env []string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// A grandchild holding the output pipe must not keep us waiting.
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("run %s: %w", argv[0], err)
	}
	return out.Bytes(), nil
}
