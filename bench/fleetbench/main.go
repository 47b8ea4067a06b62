// Command fleetbench measures steward against supervisord on the same
// machine, with the same app and the same number of merchants, and prints
// both side by side with the ratio supervisord/steward (above 1: steward is
// better). bench/run.sh builds what it needs and runs it; see bench/README.md.
//
//	fleetbench -steward bin/steward -packages DIR -app DIR/bin/invoicing -work DIR [-n 100,500]
//
// For each N and each system it measures, in this order:
//
//   - bring-up: from starting the system on an empty state until every one
//     of the N ports answers GET /health with 200 (the instant the last one
//     answers);
//   - idle footprint of the supervisor process itself (the steward daemon,
//     the supervisord process): VmRSS and CPU (utime+stime) over an idle
//     window after the fleet is up;
//   - recovery: SIGKILL of -kills distinct merchants, one at a time, each
//     timed from the signal to the first 200 answer on its port, polled
//     every 1ms.
//
// Every process it starts is ended before it returns, also on failure or
// interrupt: the supervisors by their pid, their merchants by scanning /proc
// for processes whose command line or executable lies under -work.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type config struct {
	steward  string // bin/steward
	packages string // directory with invoicing-1.0.0.tar.gz
	version  string // package version
	app      string // the unpacked app binary, for supervisord
	work     string // scratch directory (0755 all the way up)
	user     string // the user merchants run as (when root)
	ns       []int
	systems  []string
	kills    int
	idle     time.Duration
	settle   time.Duration
	portBase int
	scan     time.Duration
	killPoll time.Duration
	timeout  time.Duration // bring-up deadline
	jsonOut  string
	txtDir   string
	label    string
	health   string // extra lines for the specs' defaults health block
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var c config
	fs := flag.NewFlagSet("fleetbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.steward, "steward", "bin/steward", "the steward binary")
	fs.StringVar(&c.packages, "packages", "", "directory holding invoicing-VERSION.tar.gz and its .sha256 (required)")
	fs.StringVar(&c.version, "version", "1.0.0", "package version to run")
	fs.StringVar(&c.app, "app", "", "the app binary unpacked from the same tarball, for supervisord (required)")
	fs.StringVar(&c.work, "work", "", "scratch directory; merchants must be able to read it (required)")
	fs.StringVar(&c.user, "user", "nobody", "user the merchants run as when this runs as root")
	ns := fs.String("n", "100,500", "comma-separated merchant counts")
	systems := fs.String("systems", "steward,supervisord", "systems to measure")
	fs.IntVar(&c.kills, "kills", 30, "distinct merchants to SIGKILL per system and N")
	fs.DurationVar(&c.idle, "idle", 15*time.Second, "idle window for RSS and CPU")
	fs.DurationVar(&c.settle, "settle", 3*time.Second, "wait after the fleet is up before the idle window")
	fs.IntVar(&c.portBase, "port-base", 30001, "first merchant port")
	fs.DurationVar(&c.scan, "scan", 10*time.Millisecond, "bring-up: how often the listening sockets are listed (sock_diag)")
	fs.DurationVar(&c.killPoll, "kill-poll", time.Millisecond, "recovery: how often the killed merchant's port is probed")
	fs.DurationVar(&c.timeout, "timeout", 3*time.Minute, "bring-up deadline")
	fs.StringVar(&c.jsonOut, "json", "", "write the results as JSON to this file")
	fs.StringVar(&c.txtDir, "txt-dir", "", "write each N's table to DIR/DATE-N.txt")
	fs.StringVar(&c.label, "label", "", "free text for the header (machine, commit)")
	fs.StringVar(&c.health, "health", "", "steward: the body of a health block for the specs' defaults, e.g. 'interval = \"1h\"' to take probes out of the idle figures")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if c.packages == "" || c.app == "" || c.work == "" {
		fmt.Fprintln(stderr, "fleetbench: -packages, -app and -work are required")
		return 2
	}
	for _, f := range strings.Split(*ns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 5000 {
			fmt.Fprintf(stderr, "fleetbench: -n: bad count %q\n", f)
			return 2
		}
		c.ns = append(c.ns, n)
	}
	for _, s := range strings.Split(*systems, ",") {
		s = strings.TrimSpace(s)
		if s != "steward" && s != "supervisord" {
			fmt.Fprintf(stderr, "fleetbench: -systems: unknown system %q\n", s)
			return 2
		}
		c.systems = append(c.systems, s)
	}
	var err error
	for _, p := range []*string{&c.steward, &c.packages, &c.app, &c.work} {
		if *p, err = filepath.Abs(*p); err != nil {
			fmt.Fprintf(stderr, "fleetbench: %v\n", err)
			return 2
		}
	}
	if out, err := exec.Command("getconf", "CLK_TCK").Output(); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(out))); err == nil && n > 0 {
			clockTicks = n
		}
	}
	env := describeEnv(c)
	var all []pair
	for _, n := range c.ns {
		p := pair{N: n}
		if b, err := os.ReadFile("/proc/loadavg"); err == nil {
			p.LoadBefore = strings.Join(strings.Fields(string(b))[:3], " ")
		}
		for _, sys := range c.systems {
			if ctx.Err() != nil {
				break
			}
			fmt.Fprintf(stderr, "== %s, N=%d\n", sys, n)
			var r *Result
			switch sys {
			case "steward":
				r = benchSteward(ctx, c, n, stderr)
				p.Steward = r
			case "supervisord":
				r = benchSupervisord(ctx, c, n, stderr)
				p.Supervisord = r
			}
			for _, e := range r.Errors {
				fmt.Fprintf(stderr, "   %s, N=%d: error: %s\n", sys, n, e)
			}
		}
		all = append(all, p)
		if ctx.Err() != nil {
			break
		}
	}
	doc := report{Env: env, Results: all}
	for _, p := range all {
		doc.Checks = append(doc.Checks, checks(p)...)
	}
	for _, p := range all {
		txt := renderPair(env, p)
		fmt.Fprint(stdout, txt)
		if c.txtDir != "" {
			f := filepath.Join(c.txtDir, fmt.Sprintf("%s-%d.txt", env.Date, p.N))
			if err := os.WriteFile(f, []byte(txt), 0o644); err != nil {
				fmt.Fprintf(stderr, "fleetbench: %v\n", err)
			}
		}
	}
	if c.jsonOut != "" {
		b, _ := json.MarshalIndent(doc, "", "  ")
		if err := os.WriteFile(c.jsonOut, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintf(stderr, "fleetbench: %v\n", err)
		}
	}
	if ctx.Err() != nil {
		fmt.Fprintln(stderr, "fleetbench: interrupted")
		return 1
	}
	for _, p := range all {
		for _, r := range []*Result{p.Steward, p.Supervisord} {
			if r != nil && len(r.Errors) > 0 {
				return 1
			}
		}
	}
	return 0
}

// waitQuiet waits (up to limit) until the machine's CPUs are less than
// maxPct busy over a one-second sample, so that a phase does not start
// while other work (a test run, a build) competes for the 2 cores. It
// returns the busy percentage of the last sample.
func waitQuiet(ctx context.Context, maxPct float64, limit time.Duration, w io.Writer) float64 {
	deadline := time.Now().Add(limit)
	said := false
	for {
		b0, t0, err := machineTicks()
		if err != nil {
			return -1
		}
		sleepCtx(ctx, time.Second)
		b1, t1, err := machineTicks()
		if err != nil || t1 == t0 {
			return -1
		}
		pct := float64(b1-b0) / float64(t1-t0) * 100
		if pct < maxPct || ctx.Err() != nil {
			return pct
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(w, "   machine still %.0f%% busy after waiting %s; measuring anyway (figures will be pessimistic)\n", pct, limit)
			return pct
		}
		if !said {
			fmt.Fprintf(w, "   machine %.0f%% busy with other work; waiting up to %s for it to calm down\n", pct, limit)
			said = true
		}
	}
}

// waitPortsFree waits until nothing listens on ports.
func waitPortsFree(ctx context.Context, ports []int, limit time.Duration) error {
	want := map[int]bool{}
	for _, p := range ports {
		want[p] = true
	}
	deadline := time.Now().Add(limit)
	for {
		ls, err := listeningPorts(want)
		if err != nil {
			return err
		}
		if len(ls) == 0 {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			var busy []int
			for p := range ls {
				busy = append(busy, p)
			}
			return fmt.Errorf("%d ports of the range are in use (e.g. %v); pick another -port-base", len(busy), busy[:min(len(busy), 5)])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stopProcess sends SIGTERM to cmd's process, waits up to grace for it to
// exit, then SIGKILLs it.
func stopProcess(cmd *exec.Cmd, done <-chan error, grace time.Duration) {
	if cmd == nil || cmd.Process == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(grace):
		cmd.Process.Kill()
		<-done
	}
}

func ports(base, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = base + i
	}
	return out
}

func merchantID(i int) string { return fmt.Sprintf("m%04d", i+1) }

// killOrder picks k distinct merchant indexes spread over 0..n-1.
func killOrder(n, k int) []int {
	k = min(k, n)
	out := make([]int, k)
	for i := range out {
		out[i] = i * n / k
	}
	return out
}

// recovery kills the merchants at idx one at a time and times each.
func recovery(ctx context.Context, c config, r *Result, ps []int, w io.Writer) {
	pids, err := portPIDs(ps)
	if err != nil {
		r.fail("recovery: %v", err)
		return
	}
	for _, i := range killOrder(len(ps), c.kills) {
		if ctx.Err() != nil {
			return
		}
		port := ps[i]
		pid, ok := pids[port]
		if !ok {
			r.fail("recovery: nothing listens on port %d before the kill", port)
			continue
		}
		r.Kills++
		d, err := killAndTime(ctx, pid, port, c.killPoll, 30*time.Second)
		if err != nil {
			r.fail("recovery of %s (port %d): %v", merchantID(i), port, err)
			continue
		}
		// The answer must come from a new process on that port.
		if now, _ := portPIDs([]int{port}); now[port] == pid || now[port] == 0 {
			r.fail("recovery of %s: port %d answered but its listener is pid %d (killed: %d)", merchantID(i), port, now[port], pid)
			continue
		}
		r.RecoveryMS = append(r.RecoveryMS, ms(d))
		// Let the supervisor finish its bookkeeping before the next kill.
		sleepCtx(ctx, 200*time.Millisecond)
	}
	r.summarizeRecovery()
	fmt.Fprintf(w, "   recovery: %d/%d kills, p50 %.1fms p95 %.1fms max %.1fms\n", len(r.RecoveryMS), r.Kills, r.RecoveryP50MS, r.RecoveryP95MS, r.RecoveryMaxMS)
}

// idleFootprint samples the supervisor's pid (and, for steward, its log
// shims) over the idle window. It also accounts for the whole machine: the
// CPU used by processes that are not part of the measured system (the
// supervisor, its merchants and shims) or this driver is reported as
// ForeignCPUPct, so a window disturbed by other work can be told apart.
func idleFootprint(ctx context.Context, c config, r *Result, pid int, shims []int, ps []int, w io.Writer) {
	byPort, _ := portPIDs(ps)
	ours := []int{os.Getpid()}
	for _, m := range byPort {
		ours = append(ours, m)
	}
	ours = append(ours, shims...)
	sumTicks := func(pids []int) map[int]uint64 {
		m := map[int]uint64{}
		for _, p := range pids {
			if t, err := cpuTicks(p); err == nil {
				m[p] = t
			}
		}
		return m
	}
	t0, err := cpuTicks(pid)
	if err != nil {
		r.fail("idle: %v", err)
		return
	}
	ours0 := sumTicks(ours)
	mb0, _, _ := machineTicks()
	start := time.Now()
	var rssSum, rssN int64
	for time.Since(start) < c.idle && ctx.Err() == nil {
		if kb, err := statusKB(pid, "VmRSS"); err == nil {
			rssSum += kb
			rssN++
			r.RSSMaxKB = max(r.RSSMaxKB, kb)
		}
		sleepCtx(ctx, min(time.Second, c.idle-time.Since(start)))
	}
	elapsed := time.Since(start)
	t1, err := cpuTicks(pid)
	if err != nil {
		r.fail("idle: %v", err)
		return
	}
	mb1, _, _ := machineTicks()
	ours1 := sumTicks(ours)
	var oursTicks uint64 = t1 - t0
	for p, t := range ours1 {
		if t0, ok := ours0[p]; ok {
			oursTicks += t - t0
		}
	}
	if mb1 > mb0 && mb1-mb0 > oursTicks {
		r.ForeignCPUPct = cpuPct(mb1-mb0-oursTicks, elapsed)
	}
	r.IdleWindowS = elapsed.Seconds()
	r.IdleCPUPct = cpuPct(t1-t0, elapsed)
	if rssN > 0 {
		r.RSSKB = rssSum / rssN
	}
	r.PSSKB, _ = pssKB(pid)
	r.HWMKB, _ = statusKB(pid, "VmHWM")
	r.Threads = threads(pid)
	if len(shims) > 0 {
		var ticks uint64
		for _, s := range shims {
			if t, ok := ours1[s]; ok {
				ticks += t - ours0[s]
			}
			if kb, err := pssKB(s); err == nil {
				r.ShimPSSKB += kb
			}
			if kb, err := statusKB(s, "VmRSS"); err == nil {
				r.ShimRSSKB += kb
			}
		}
		r.Shims = len(shims)
		r.ShimCPUPct = cpuPct(ticks, elapsed)
	}
	fmt.Fprintf(w, "   idle %.0fs: RSS %.1f MiB (max %.1f, PSS %.1f), CPU %.2f%% of one core", elapsed.Seconds(), mib(r.RSSKB), mib(r.RSSMaxKB), mib(r.PSSKB), r.IdleCPUPct)
	if len(shims) > 0 {
		fmt.Fprintf(w, "; %d log shims: PSS %.1f MiB, CPU %.2f%%", r.Shims, mib(r.ShimPSSKB), r.ShimCPUPct)
	}
	fmt.Fprintf(w, "; other work on the machine: %.1f%% of a core\n", r.ForeignCPUPct)
}

func threads(pid int) int {
	n, _ := statusKB(pid, "Threads") // "Threads:	12" has no kB suffix
	return int(n)
}

func cpuPct(ticks uint64, d time.Duration) float64 {
	return float64(ticks) / float64(clockTicks) / d.Seconds() * 100
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func mib(kb int64) float64 { return float64(kb) / 1024 }

// writeFile writes data to path, creating its directory (0755).
func writeFile(path, data string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(data), 0o644)
}

// logTail returns the last lines of a log file, for error messages.
func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

var errStopped = errors.New("interrupted")
