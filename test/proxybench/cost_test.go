package proxybench

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func TestProcCostCountsThisProcessCPU(t *testing.T) {
	cpu := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			t.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	before, err := procCost(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Spin until the kernel's own account (getrusage) says the process
	// ran 20 ms more, however loaded the machine is; procCost must see
	// most of that.
	r0, x := cpu(), 0
	for deadline := time.Now().Add(20 * time.Second); cpu()-r0 < 20*time.Millisecond; x++ {
		if time.Now().After(deadline) {
			t.Fatal("the process got no 20 ms of CPU in 20 s")
		}
	}
	ran := cpu() - r0
	after, err := procCost(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if d := after.cpu - before.cpu; d < ran/2 {
		t.Fatalf("procCost saw %v of CPU while getrusage saw %v (x=%d)", d, ran, x)
	}
	if after.switches < before.switches {
		t.Fatalf("context switches went from %d to %d", before.switches, after.switches)
	}
}

func TestPerfCountReadsSyscalls(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out")
	out := "# started on Mon Dec  7 08:24:06 2026\n\n144,,raw_syscalls:sys_enter,1215306,100.00,,\n"
	if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	n, err := perfCount(path)
	if err != nil || n != 144 {
		t.Fatalf("perfCount = %d, %v; want 144", n, err)
	}
	if err := os.WriteFile(path, []byte("<not counted>,,raw_syscalls:sys_enter,0,0.00,,\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := perfCount(path); err == nil {
		t.Fatal("perfCount accepted an uncounted event")
	}
}

func TestCostIsPerUnit(t *testing.T) {
	r := Run{}
	r.setCost(Halb, "churn", cost{cpu: 2 * time.Millisecond, switches: 30, syscalls: -1, path: 5 * time.Millisecond}, 10)
	r.setCost(Direct, "churn", cost{path: 3 * time.Millisecond, syscalls: -1}, 10)
	if got := r[Halb]["churn_path_cpu_us"]; got != 500 {
		t.Errorf("path CPU per connection %v µs, want 500", got)
	}
	if got, want := len(r[Direct]), 1; got != want {
		t.Errorf("direct has %d cost figures (%v), want only the path's", got, r[Direct])
	}
	if got := r[Halb]["churn_cpu_us"]; got != 200 {
		t.Errorf("CPU per connection %v µs, want 200", got)
	}
	if got := r[Halb]["churn_cs"]; got != 3 {
		t.Errorf("switches per connection %v, want 3", got)
	}
	if _, ok := r[Halb]["churn_sys"]; ok {
		t.Error("system calls recorded though perf did not count them")
	}
}
