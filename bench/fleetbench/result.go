package main

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Result is one system's figures at one N. Sizes are in KiB, times in
// seconds (S) or milliseconds (MS), CPU in percent of one core.
type Result struct {
	System string `json:"system"`
	N      int    `json:"n"`

	BringUpS       float64 `json:"bring_up_s"`        // start → the last port answers /health
	BringUpFirstS  float64 `json:"bring_up_first_s"`  // start → the first port answers
	BringUpMedianS float64 `json:"bring_up_median_s"` // start → half of the ports answer
	BringUpCmdS    float64 `json:"bring_up_cmd_s,omitempty"`
	BringUpCPUS    float64 `json:"bring_up_cpu_s"`            // CPU of steward apply / of supervisord during bring-up
	BringUpBusyPct float64 `json:"bring_up_machine_busy_pct"` // all CPUs busy during bring-up (100 = every core, all the time)
	DaemonReadyS   float64 `json:"daemon_ready_s,omitempty"`  // steward run: start → all merchants adopted

	IdleWindowS float64 `json:"idle_window_s"`
	RSSKB       int64   `json:"rss_kb"`     // VmRSS, mean over the idle window
	RSSMaxKB    int64   `json:"rss_max_kb"` // VmRSS, max over the idle window
	PSSKB       int64   `json:"pss_kb"`
	HWMKB       int64   `json:"hwm_kb"` // VmHWM: peak RSS since the process started
	Threads     int     `json:"threads"`
	IdleCPUPct  float64 `json:"idle_cpu_pct"`
	ResyncCPUMS float64 `json:"resync_cpu_ms,omitempty"` // steward: CPU of one full resync
	Shims       int     `json:"log_shims,omitempty"`
	ShimPSSKB   int64   `json:"log_shims_pss_kb,omitempty"`
	ShimRSSKB   int64   `json:"log_shims_rss_kb,omitempty"`
	ShimCPUPct  float64 `json:"log_shims_idle_cpu_pct,omitempty"`

	Kills         int       `json:"kills"`
	RecoveryMS    []float64 `json:"recovery_ms"`
	RecoveryP50MS float64   `json:"recovery_p50_ms"`
	RecoveryP95MS float64   `json:"recovery_p95_ms"`
	RecoveryMaxMS float64   `json:"recovery_max_ms"`
	RecoveryMinMS float64   `json:"recovery_min_ms"`

	QuietBeforePct     float64 `json:"machine_busy_before_pct"`      // all CPUs, 1s sample before bring-up
	QuietBeforeIdlePct float64 `json:"machine_busy_before_idle_pct"` // all CPUs, 1s sample before the idle window
	ForeignCPUPct      float64 `json:"other_work_idle_cpu_pct"`      // CPU of unrelated processes during the idle window

	DaemonLogErrors int      `json:"daemon_log_errors,omitempty"`
	Errors          []string `json:"errors,omitempty"`
}

func (r *Result) fail(format string, args ...any) {
	r.Errors = append(r.Errors, fmt.Sprintf(format, args...))
}

func (r *Result) setBringUp(u upTimes) {
	r.BringUpS, r.BringUpFirstS, r.BringUpMedianS = u.Last.Seconds(), u.First.Seconds(), u.Median.Seconds()
}

func (r *Result) summarizeRecovery() {
	if len(r.RecoveryMS) == 0 {
		return
	}
	s := slices.Sorted(slices.Values(r.RecoveryMS))
	r.RecoveryP50MS = percentile(s, 50)
	r.RecoveryP95MS = percentile(s, 95)
	r.RecoveryMinMS, r.RecoveryMaxMS = s[0], s[len(s)-1]
}

// percentile is the nearest-rank percentile of sorted values.
func percentile(sorted []float64, p float64) float64 {
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func sortDurations(d []time.Duration) { slices.Sort(d) }

type pair struct {
	N           int     `json:"n"`
	LoadBefore  string  `json:"loadavg_before"` // /proc/loadavg when this N started
	Steward     *Result `json:"steward,omitempty"`
	Supervisord *Result `json:"supervisord,omitempty"`
}

type envInfo struct {
	Date       string  `json:"date"`
	Time       string  `json:"time"`
	Kernel     string  `json:"kernel"`
	CPU        string  `json:"cpu"`
	Cores      int     `json:"cores"`
	Go         string  `json:"go"`
	Steward    string  `json:"steward"`
	Supervisor string  `json:"supervisord"`
	Label      string  `json:"label,omitempty"`
	Kills      int     `json:"kills"`
	IdleS      float64 `json:"idle_window_s"`
}

type check struct {
	N      int     `json:"n"`
	Target string  `json:"target"`
	Ratio  float64 `json:"ratio"`
	Want   float64 `json:"want_ratio_at_least"`
	Met    bool    `json:"met"`
}

type report struct {
	Env     envInfo `json:"env"`
	Results []pair  `json:"results"`
	Checks  []check `json:"checks"`
}

func describeEnv(c config) envInfo {
	now := time.Now().UTC()
	e := envInfo{Date: now.Format("2006-01-02"), Time: now.Format(time.RFC3339), Cores: runtime.NumCPU(), Go: runtime.Version(), Label: c.label, Kills: c.kills, IdleS: c.idle.Seconds()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		e.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for l := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				e.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if out, err := exec.Command(c.steward, "version").Output(); err == nil {
		e.Steward = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("supervisord", "-v").Output(); err == nil {
		e.Supervisor = strings.TrimSpace(string(out))
	}
	return e
}

// ratio is supervisord/steward: above 1, steward is better (lower).
func ratio(steward, sup float64) float64 {
	if steward <= 0 {
		if sup <= 0 {
			return 1
		}
		return math.Inf(1)
	}
	return sup / steward
}

func fmtRatio(x float64) string {
	switch {
	case math.IsInf(x, 1):
		return "∞ (steward 0)"
	case math.IsNaN(x):
		return "-"
	case x >= 100:
		return fmt.Sprintf("%.0fx", x)
	case x >= 10:
		return fmt.Sprintf("%.1fx", x)
	default:
		return fmt.Sprintf("%.2fx", x)
	}
}

// checks are the targets at one N.
func checks(p pair) []check {
	s, v := p.Steward, p.Supervisord
	if s == nil || v == nil || len(s.Errors) > 0 || len(v.Errors) > 0 {
		return nil
	}
	out := []check{
		{Target: "recovery p50 at least 10x faster", Ratio: ratio(s.RecoveryP50MS, v.RecoveryP50MS), Want: 10},
		{Target: "steward daemon RSS no higher than supervisord's", Ratio: ratio(float64(s.RSSKB), float64(v.RSSKB)), Want: 1},
		{Target: "steward daemon idle CPU no higher than supervisord's", Ratio: ratio(s.IdleCPUPct, v.IdleCPUPct), Want: 1},
	}
	if p.N >= 500 {
		out = append([]check{{Target: "bring-up at least 3x faster", Ratio: ratio(s.BringUpS, v.BringUpS), Want: 3}}, out...)
	}
	for i := range out {
		out[i].N = p.N
		out[i].Met = out[i].Ratio >= out[i].Want
	}
	return out
}

// renderPair is the side-by-side table of one N, with the targets.
func renderPair(e envInfo, p pair) string {
	var b strings.Builder
	fmt.Fprintf(&b, "fleetbench  N=%d merchants  %s\n", p.N, e.Time)
	fmt.Fprintf(&b, "machine: %d cores, %s, Linux %s; %s; %s; supervisord %s\n", e.Cores, e.CPU, e.Kernel, e.Go, e.Steward, e.Supervisor)
	if e.Label != "" {
		fmt.Fprintf(&b, "%s\n", e.Label)
	}
	fmt.Fprintf(&b, "kills: %d distinct merchants per system; idle window %.0fs; load average before: %s\n\n", e.Kills, e.IdleS, p.LoadBefore)
	s, v := p.Steward, p.Supervisord
	if s == nil {
		s = &Result{}
	}
	if v == nil {
		v = &Result{}
	}
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	row := func(name, unit string, a, c float64, prec int, withRatio bool) {
		r := "-"
		if withRatio {
			r = fmtRatio(ratio(a, c))
		}
		fmt.Fprintf(tw, "%s (%s)\t%.*f\t%.*f\t%s\t\n", name, unit, prec, a, prec, c, r)
	}
	fmt.Fprintf(tw, "metric\tsteward\tsupervisord\tratio sup/steward\t\n")
	row("bring-up: empty -> all ports answer", "s", s.BringUpS, v.BringUpS, 2, true)
	row("  first port answers", "s", s.BringUpFirstS, v.BringUpFirstS, 3, true)
	row("  half of the ports answer", "s", s.BringUpMedianS, v.BringUpMedianS, 2, true)
	row("  CPU used by apply / supervisord", "s", s.BringUpCPUS, v.BringUpCPUS, 2, true)
	row("  machine busy during bring-up (all cores)", "%", s.BringUpBusyPct, v.BringUpBusyPct, 0, false)
	row("recovery after SIGKILL p50", "ms", s.RecoveryP50MS, v.RecoveryP50MS, 1, true)
	row("recovery p95", "ms", s.RecoveryP95MS, v.RecoveryP95MS, 1, true)
	row("recovery max", "ms", s.RecoveryMaxMS, v.RecoveryMaxMS, 1, true)
	row("recovery min", "ms", s.RecoveryMinMS, v.RecoveryMinMS, 1, true)
	row("supervisor RSS, idle mean", "MiB", mib(s.RSSKB), mib(v.RSSKB), 1, true)
	row("supervisor RSS peak since start (VmHWM)", "MiB", mib(s.HWMKB), mib(v.HWMKB), 1, true)
	row("supervisor idle CPU", "% of a core", s.IdleCPUPct, v.IdleCPUPct, 2, true)
	amortised := s.IdleCPUPct + s.ResyncCPUMS/600 // one resync a minute: ms per 60,000 ms, in %
	row("  idle CPU incl. 1 resync/min", "% of a core", amortised, v.IdleCPUPct, 2, true)
	fmt.Fprintf(tw, "supervisor threads\t%d\t%d\t-\t\n", s.Threads, v.Threads)
	fmt.Fprintf(tw, "steward log shims (processes)\t%d\t0\t-\t\n", s.Shims)
	row("  log shims, PSS total", "MiB", mib(s.ShimPSSKB), 0, 1, false)
	row("supervision memory incl. shims, PSS", "MiB", mib(s.PSSKB+s.ShimPSSKB), mib(v.PSSKB), 1, true)
	tw.Flush()
	if s.BringUpCmdS > 0 || s.DaemonReadyS > 0 || s.ResyncCPUMS > 0 {
		fmt.Fprintf(&b, "\nsteward: apply exited %.2fs after start; steward run adopted all %d in %.2fs; one full resync costs %.0f ms of CPU\n", s.BringUpCmdS, p.N, s.DaemonReadyS, s.ResyncCPUMS)
	}
	fmt.Fprintf(&b, "recoveries: steward %d/%d, supervisord %d/%d\n", len(s.RecoveryMS), s.Kills, len(v.RecoveryMS), v.Kills)
	fmt.Fprintf(&b, "noise: machine busy before bring-up %.0f%% / %.0f%% of all cores (steward / supervisord); other work during the idle windows %.1f / %.1f %% of a core\n",
		s.QuietBeforePct, v.QuietBeforePct, s.ForeignCPUPct, v.ForeignCPUPct)
	cs := checks(p)
	if len(cs) > 0 {
		fmt.Fprintf(&b, "\ntargets:\n")
		for _, c := range cs {
			mark := "MET    "
			if !c.Met {
				mark = "NOT MET"
			}
			fmt.Fprintf(&b, "  %s  %s: ratio %s (want >= %gx)\n", mark, c.Target, fmtRatio(c.Ratio), c.Want)
		}
	}
	for _, r := range []*Result{p.Steward, p.Supervisord} {
		if r == nil {
			continue
		}
		for _, err := range r.Errors {
			fmt.Fprintf(&b, "ERROR %s: %s\n", r.System, err)
		}
	}
	b.WriteString("\n")
	return b.String()
}
