package hooks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"halb/internal/config"
	"halb/internal/events"
	"halb/test/support"
)

// recorder is a fake ExecFunc: it records each run's argv and env, and
// runs a per-command behaviour.
type recorder struct {
	mu   sync.Mutex
	runs []string // argv[1] of each finished run, in order
	do   func(ctx context.Context, argv []string) error
}

func (r *recorder) exec(ctx context.Context, argv, env []string) ([]byte, error) {
	var err error
	if r.do != nil {
		err = r.do(ctx, argv)
	}
	r.mu.Lock()
	r.runs = append(r.runs, argv[1]+" "+envOf(env, "HALB_REASON"))
	r.mu.Unlock()
	return []byte("out"), err
}

func (r *recorder) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.runs)
}

func envOf(env []string, key string) string {
	for _, kv := range slices.Backward(env) {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			return v
		}
	}
	return ""
}

func hook(timeout time.Duration, name string, on ...events.Kind) config.Hook {
	return config.Hook{On: on, Command: []string{"/x", name}, Timeout: timeout}
}

// start runs r until the returned stop is called.
func start(t *testing.T, r *Runner) (stop func()) {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { _ = r.Run(ctx); close(done) }()
	synctest.Wait() // Run has registered its context
	return func() { cancel(); <-done }
}

func TestPerVIPOrderAndIndependentLanes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{do: func(ctx context.Context, argv []string) error {
			// The first VIP's hooks are slow; the other VIP must not wait.
			if argv[1] == "claimed" {
				time.Sleep(time.Second)
			}
			return nil
		}}
		var logs support.Log
		r := New([]config.Hook{
			hook(10*time.Second, "claimed", events.VIPClaimed),
			hook(10*time.Second, "released", events.VIPReleased),
		}, rec.exec, slog.New(slog.NewTextHandler(&logs, nil)))
		stop := start(t, r)
		defer stop()
		r.Handle(events.Event{Kind: events.VIPClaimed, VIP: "10.0.0.1", Reason: "1"})
		r.Handle(events.Event{Kind: events.VIPReleased, VIP: "10.0.0.1", Reason: "2"})
		r.Handle(events.Event{Kind: events.VIPClaimed, VIP: "10.0.0.1", Reason: "3"})
		r.Handle(events.Event{Kind: events.VIPReleased, VIP: "10.0.0.2", Reason: "4"})
		r.Handle(events.Event{Kind: events.ServerUp, Server: "cp1"}) // no hook for it
		synctest.Wait()
		if got := rec.got(); !slices.Equal(got, []string{"released 4"}) {
			t.Fatalf("before the slow hook ends: runs = %q, want only the other VIP's", got)
		}
		time.Sleep(3 * time.Second)
		synctest.Wait()
		want := []string{"released 4", "claimed 1", "released 2", "claimed 3"}
		if got := rec.got(); !slices.Equal(got, want) {
			t.Fatalf("runs = %q, want %q", got, want)
		}
		if !strings.Contains(logs.String(), "hook ran") {
			t.Errorf("results not logged:\n%s", logs.String())
		}
	})
}

func TestTimeoutKillsAndFailureIsLogged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var killedAfter time.Duration
		rec := &recorder{do: func(ctx context.Context, argv []string) error {
			if argv[1] == "fails" {
				return errors.New("exit status 1")
			}
			t0 := time.Now()
			<-ctx.Done()
			killedAfter = time.Since(t0)
			return ctx.Err()
		}}
		var logs support.Log
		r := New([]config.Hook{
			hook(config.DefaultHookTimeout, "hangs", events.VIPClaimed),
			hook(time.Second, "fails", events.VIPClaimed),
		}, rec.exec, slog.New(slog.NewTextHandler(&logs, nil)))
		stop := start(t, r)
		defer stop()
		r.Handle(events.Event{Kind: events.VIPClaimed, VIP: "10.0.0.1"})
		time.Sleep(time.Minute)
		synctest.Wait()
		if killedAfter != config.DefaultHookTimeout {
			t.Errorf("hung hook ended after %s, want its timeout %s", killedAfter, config.DefaultHookTimeout)
		}
		if got := rec.got(); len(got) != 2 {
			t.Fatalf("runs = %q, want the hung hook then the failing one", got)
		}
		for _, w := range []string{"hook killed after its timeout", "hook failed", "exit status 1"} {
			if !strings.Contains(logs.String(), w) {
				t.Errorf("log lacks %q:\n%s", w, logs.String())
			}
		}
	})
}

func TestFullLaneDropsWithoutBlocking(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{do: func(ctx context.Context, _ []string) error { <-ctx.Done(); return ctx.Err() }}
		var logs support.Log
		r := New([]config.Hook{hook(time.Hour, "hangs", events.ServerDown)}, rec.exec, slog.New(slog.NewTextHandler(&logs, nil)))
		stop := start(t, r)
		t0 := time.Now()
		for i := range QueueLen + 3 {
			r.Handle(events.Event{Kind: events.ServerDown, Backend: "cp", Server: "cp1", Reason: fmt.Sprint(i)})
			synctest.Wait()
		}
		if time.Since(t0) != 0 {
			t.Fatalf("Handle waited %s for a hung hook", time.Since(t0))
		}
		// One runs, QueueLen wait, two are dropped.
		if n := strings.Count(logs.String(), "hook dropped"); n != 2 {
			t.Fatalf("dropped %d, want 2:\n%s", n, logs.String())
		}
		stop() // a stop ends the hung hook through its context
		if got := len(rec.got()); got != 1 {
			t.Fatalf("runs after stop = %d, want the one that was running", got)
		}
	})
}

func TestExecRealProcess(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	out, err := Exec(t.Context(), []string{sh, "-c", `echo "$HALB_EVENT $HALB_VIP $HALB_NODE"; exit 3`},
		Env(events.Event{Kind: events.VIPClaimed, VIP: "10.0.0.1", Node: "lb1"}))
	if strings.TrimSpace(string(out)) != "vip_claimed 10.0.0.1 lb1" {
		t.Errorf("output = %q", out)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Errorf("err = %v, want exit status 3", err)
	}

	// A timeout kills the hook and what it started (its process group).
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	_, err = Exec(ctx, []string{sh, "-c", "sleep 30 & sleep 30"}, nil)
	if err == nil || time.Since(t0) > 5*time.Second {
		t.Fatalf("hung hook: err %v after %s, want killed near 200ms", err, time.Since(t0))
	}
}
