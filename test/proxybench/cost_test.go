package proxybench

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestProcCostCountsThisProcessCPU(t *testing.T) {
	before, err := procCost(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Spin until the thread has run for 20 ms of wall time; the CPU
	// time of the process must grow by a good part of it.
	x := 0
	for start := time.Now(); time.Since(start) < 20*time.Millisecond; {
		x++
	}
	after, err := procCost(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if d := after.cpu - before.cpu; d < 5*time.Millisecond {
		t.Fatalf("CPU time grew by %v after a 20 ms spin (x=%d), want at least 5 ms", d, x)
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
