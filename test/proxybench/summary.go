package proxybench

import (
	"maps"
	"slices"
	"sort"
)

// Target names, in the order every table shows them.
const (
	Direct        = "direct"
	Halb          = "halb"
	HAProxy       = "haproxy"
	HAProxySplice = "haproxy-splice"
)

// Groups of figures, each measured by one job kind; Options.Only picks some.
const (
	GroupBulk  = "bulk"
	GroupChurn = "churn"
	GroupRR    = "rr"
	GroupIdle  = "idle"
)

// Groups lists every group in the order a repetition measures them.
func Groups() []string { return []string{GroupIdle, GroupBulk, GroupChurn, GroupRR} }

// figure is one measured number.
type figure struct {
	key, label, unit, group string
}

// figures are the rows of every table, in order.
var figures = []figure{
	{"bulk1_gbps", "bulk throughput, 1 stream", "Gbit/s", GroupBulk},
	{"bulk8_gbps", "bulk throughput, 8 streams", "Gbit/s", GroupBulk},
	{"conn_per_s", "new connections/s, 4 workers", "/s", GroupChurn},
	{"connect_p99_us", "connect p99, 4 workers", "µs", GroupChurn},
	{"exchange_p99_us", "connect+64 B request+reply p99", "µs", GroupChurn},
	{"rr1_p50_us", "64 B request/response p50, 1 conn", "µs", GroupRR},
	{"rr1_p99_us", "64 B request/response p99, 1 conn", "µs", GroupRR},
	{"rr1_per_s", "requests/s, 1 conn", "/s", GroupRR},
	{"rr8_p50_us", "64 B request/response p50, 8 conns", "µs", GroupRR},
	{"rr8_p99_us", "64 B request/response p99, 8 conns", "µs", GroupRR},
	{"rr8_per_s", "requests/s, 8 conns", "/s", GroupRR},
	{"idle_opened", "idle connections really opened", "", GroupIdle},
	// What each proxy process spent per unit of work, while the figures
	// above were measured: CPU time and context switches over all its
	// threads, and system calls (with --perf).
	{"bulk1_gib_path_cpu_us", "path CPU per GiB, bulk 1 stream (client, servers, proxy)", "µs", GroupBulk},
	{"bulk1_gib_cpu_us", "proxy CPU per GiB, bulk 1 stream", "µs", GroupBulk},
	{"bulk1_gib_sys", "proxy system calls per GiB, bulk 1 stream", "", GroupBulk},
	{"churn_path_cpu_us", "path CPU per connection", "µs", GroupChurn},
	{"churn_cpu_us", "proxy CPU per connection", "µs", GroupChurn},
	{"churn_cs", "proxy context switches per connection", "", GroupChurn},
	{"churn_sys", "proxy system calls per connection", "", GroupChurn},
	{"rr1_path_cpu_us", "path CPU per request, 1 conn", "µs", GroupRR},
	{"rr1_cpu_us", "proxy CPU per request, 1 conn", "µs", GroupRR},
	{"rr1_cs", "proxy context switches per request, 1 conn", "", GroupRR},
	{"rr1_sys", "proxy system calls per request, 1 conn", "", GroupRR},
	{"rr8_path_cpu_us", "path CPU per request, 8 conns", "µs", GroupRR},
	{"rr8_cpu_us", "proxy CPU per request, 8 conns", "µs", GroupRR},
	{"rr8_cs", "proxy context switches per request, 8 conns", "", GroupRR},
	{"rr8_sys", "proxy system calls per request, 8 conns", "", GroupRR},
	{"idle_rss_kib", "idle conn: proxy RSS per conn", "KiB", GroupIdle},
	{"idle_fds", "idle conn: proxy fds per conn", "", GroupIdle},
	{"idle_slab_kib", "idle conn: slab per conn, whole path", "KiB", GroupIdle},
	{"idle_kernel_kib", "idle conn: proxy's kernel per conn (slab − direct's)", "KiB", GroupIdle},
	{"idle_total_kib", "idle conn: proxy RSS + kernel per conn", "KiB", GroupIdle},
}

// Run holds one repetition: target → figure key → value.
type Run map[string]map[string]float64

func (r Run) set(target, key string, v float64) {
	if r[target] == nil {
		r[target] = map[string]float64{}
	}
	r[target][key] = v
}

// Goal is one target of the issue, checked against the medians.
type Goal struct {
	Figure string  `json:"figure"`
	Want   string  `json:"want"`
	Got    float64 `json:"got"`
	Met    bool    `json:"met"`
}

// Summary is a whole proxy benchmark: every repetition and the medians.
type Summary struct {
	Quick     bool     `json:"quick"`
	Reps      int      `json:"reps"`
	Seconds   float64  `json:"seconds_per_measurement"`
	IdleConns int      `json:"idle_conns_asked"`
	Targets   []string `json:"targets"`
	Groups    []string `json:"groups"`
	Runs      []Run    `json:"runs"`
	// Load is the machine's 1-minute load average at the start of each
	// repetition and at the end of the run: the other work the CPUs served.
	Load []float64 `json:"load_avg,omitempty"`
	// Median is the median over repetitions of each figure.
	Median map[string]map[string]float64 `json:"median"`
	// ToDirect and ToHAProxy are medians of ratios computed within each
	// repetition (target's figure / direct's or HAProxy's).
	ToDirect  map[string]map[string]float64 `json:"ratio_to_direct"`
	ToHAProxy map[string]map[string]float64 `json:"ratio_to_haproxy"`
	Goals     []Goal                        `json:"goals"`
}

// summarize fills the medians, ratios and goals from s.Runs.
func (s *Summary) summarize() {
	s.Median = medians(s.Runs, func(r Run, t, k string) (float64, bool) {
		v, ok := r[t][k]
		return v, ok
	})
	s.ToDirect = medians(s.Runs, ratioTo(Direct))
	s.ToHAProxy = medians(s.Runs, ratioTo(HAProxy))
	delete(s.ToDirect, Direct)
	delete(s.ToHAProxy, HAProxy)
	s.Goals = goals(s)
}

// ratioTo divides a target's figure by ref's within one repetition.
func ratioTo(ref string) func(Run, string, string) (float64, bool) {
	return func(r Run, t, k string) (float64, bool) {
		v, ok := r[t][k]
		b, bok := r[ref][k]
		if !ok || !bok || b == 0 {
			return 0, false
		}
		return v / b, true
	}
}

// medians applies get to every repetition and takes the median per
// target and figure, over the repetitions that have a value.
func medians(runs []Run, get func(Run, string, string) (float64, bool)) map[string]map[string]float64 {
	out := map[string]map[string]float64{}
	targets := map[string]bool{}
	for _, r := range runs {
		for t := range r {
			targets[t] = true
		}
	}
	for _, t := range slices.Sorted(maps.Keys(targets)) {
		for _, f := range figures {
			var vs []float64
			for _, r := range runs {
				if v, ok := get(r, t, f.key); ok {
					vs = append(vs, v)
				}
			}
			if len(vs) == 0 {
				continue
			}
			if out[t] == nil {
				out[t] = map[string]float64{}
			}
			out[t][f.key] = median(vs)
		}
	}
	return out
}

// median of vs (the mean of the middle two for an even count).
func median(vs []float64) float64 {
	s := slices.Clone(vs)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// goals checks the targets for halb against the medians.
func goals(s *Summary) []Goal {
	type check struct {
		figure, want string
		get          func() (float64, bool)
		met          func(float64) bool
	}
	from := func(m map[string]map[string]float64, t, k string) func() (float64, bool) {
		return func() (float64, bool) {
			v, ok := m[t][k]
			return v, ok
		}
	}
	atLeast := func(x float64) func(float64) bool { return func(v float64) bool { return v >= x } }
	atMost := func(x float64) func(float64) bool { return func(v float64) bool { return v <= x } }
	checks := []check{
		{"bulk throughput, 1 stream (halb / direct)", "≥ 0.85", from(s.ToDirect, Halb, "bulk1_gbps"), atLeast(0.85)},
		{"new connections/s, 4 workers (halb / HAProxy)", "≥ 1.2", from(s.ToHAProxy, Halb, "conn_per_s"), atLeast(1.2)},
		{"p99 latency, 1 connection (halb / HAProxy)", "≤ 1", from(s.ToHAProxy, Halb, "rr1_p99_us"), atMost(1)},
		{"requests/s over 8 connections (halb / HAProxy)", "≥ 1.2", from(s.ToHAProxy, Halb, "rr8_per_s"), atLeast(1.2)},
		{"idle connection, RSS + kernel (halb / HAProxy)", "≤ 1", from(s.ToHAProxy, Halb, "idle_total_kib"), atMost(1)},
		// Counting fds over thousands of connections lands on 2 plus
		// the odd fd the process opened meanwhile.
		{"idle connection, fds per connection (halb)", "≤ 2", from(s.Median, Halb, "idle_fds"), atMost(2.01)},
	}
	var out []Goal
	for _, c := range checks {
		v, ok := c.get()
		if !ok {
			continue
		}
		out = append(out, Goal{Figure: c.figure, Want: c.want, Got: v, Met: c.met(v)})
	}
	return out
}
