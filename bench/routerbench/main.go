// Command routerbench measures a rollout of N merchants to a new package
// version while a client loads them, twice on the same machine: behind
// steward's managed nginx (a new instance starts beside the old one, takes
// its traffic, the old one drains and stops) and without a router (the
// old process stops, the new one starts on its port). It prints, for both:
// requests sent and failed (a non-2xx answer or a connection error), nginx
// reloads, and the rollout's wall time, with the ratio.
//
//	go run ./bench/routerbench [-n 100] [-clients 8] [-parallel 10]
//
// It builds steward, steward-logshim and the example packages into a
// scratch directory, uses PostgreSQL from STEWARD_TEST_PG (default
// postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable) and needs
// nginx (Debian's nginx-light). Each run ends with `steward destroy
// -drop-databases`, which stops every merchant and nginx by their recorded
// processes and drops the merchants' databases.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type result struct {
	mode              string
	requests, failed  int64
	reloads           int
	rollout           time.Duration
	firstFailures     []string
	upgraded, merchts int
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	n := flag.Int("n", 100, "merchants")
	clients := flag.Int("clients", 8, "concurrent clients loading the merchants")
	parallel := flag.Int("parallel", 10, "the rollout's max_parallel")
	portBase := flag.Int("port-base", 24000, "first port (merchants, second ports, the API, nginx)")
	keep := flag.Bool("keep", false, "keep the scratch directory")
	flag.Parse()
	work, err := os.MkdirTemp("", "routerbench.")
	if err != nil {
		fail(err)
	}
	os.Chmod(work, 0o755)
	if !*keep {
		defer os.RemoveAll(work)
	}
	fmt.Fprintf(os.Stderr, "scratch directory %s\n", work)
	for _, args := range [][]string{
		{"build", "-o", filepath.Join(work, "bin", "steward"), "./cmd/steward"},
		{"build", "-o", filepath.Join(work, "bin", "steward-logshim"), "./cmd/steward-logshim"},
		{"run", "./examples/pkgbuild", "-out", filepath.Join(work, "packages"), "-versions", "1.0.0,1.1.0", "-broken", ""},
	} {
		if out, err := exec.CommandContext(ctx, "go", args...).CombinedOutput(); err != nil {
			fail(fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out))
		}
	}
	var results []result
	for i, mode := range []string{"router", "direct"} {
		r, err := runMode(ctx, work, mode, *n, *clients, *parallel, *portBase+i*(2*(*n)+20))
		if err != nil {
			fail(err)
		}
		results = append(results, r)
	}
	report(os.Stdout, *n, *clients, *parallel, results)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "routerbench:", err)
	os.Exit(1)
}

func pgDSN() string {
	if v := os.Getenv("STEWARD_TEST_PG"); v != "" {
		return v
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// runMode sets up a fleet of n merchants (behind nginx with mode
// "router"), loads it, rolls it out to 1.1.0 and tears it down.
func runMode(ctx context.Context, work, mode string, n, clients, parallel, base int) (result, error) {
	res := result{mode: mode, merchts: n}
	dir := filepath.Join(work, mode)
	specs := filepath.Join(dir, "specs")
	if err := os.MkdirAll(specs, 0o755); err != nil {
		return res, err
	}
	os.Chmod(dir, 0o755)
	apiPort, nginxPort := base, base+1
	host := fmt.Sprintf(`source  { path = "specs" }
state   { path = "state" }
runtime {
  root       = "run"
  ports      = "%d-%d"
  user       = "nobody"
  stop_grace = "5s"
}
api { listen = "127.0.0.1:%d" }
`, base+2, base+2+2*n+10, apiPort)
	if mode == "router" {
		host += fmt.Sprintf("router {\n  nginx {\n    mode   = \"managed\"\n    listen = \"127.0.0.1:%d\"\n  }\n}\n", nginxPort)
	}
	config := filepath.Join(dir, "steward.hcl")
	if err := os.WriteFile(config, []byte(host), 0o644); err != nil {
		return res, err
	}
	prefix := fmt.Sprintf("rb%d_%s", os.Getpid(), mode)
	writeSpecs := func(version string) error {
		var b strings.Builder
		fmt.Fprintf(&b, `database "db" { dsn = %q }
package "invoicing" {
  source = "file://%s"
  channel "stable" { version = %q }
}
rollout {
  canary           = 1
  max_parallel     = %d
  health_deadline  = "30s"
  min_healthy_time = "1s"
}
defaults {
  package  = "invoicing"
  channel  = "stable"
  database = "db"
}
`, pgDSN(), filepath.Join(work, "packages"), version, parallel)
		for i := range n {
			fmt.Fprintf(&b, "merchant \"m%03d\" {\n  db_name = \"%s_%03d\"\n  domains = [\"m%03d.bench.test\"]\n}\n", i, prefix, i, i)
		}
		return os.WriteFile(filepath.Join(specs, "fleet.hcl"), []byte(b.String()), 0o644)
	}
	steward := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, filepath.Join(work, "bin", "steward"), append(args[:1:1], append([]string{"-config", config}, args[1:]...)...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	defer func() {
		if out, err := steward("destroy", "-auto-approve", "-drop-databases"); err != nil {
			fmt.Fprintf(os.Stderr, "destroy (%s): %v\n%s", mode, err, out)
		}
	}()
	if err := writeSpecs("1.0.0"); err != nil {
		return res, err
	}
	fmt.Fprintf(os.Stderr, "%s: bringing up %d merchants on 1.0.0\n", mode, n)
	if out, err := steward("apply", "-auto-approve", "-parallel", "16"); err != nil {
		return res, fmt.Errorf("%s: apply 1.0.0: %v\n%s", mode, err, out)
	}
	st, err := status(steward)
	if err != nil {
		return res, err
	}
	var watch *reloadWatch
	if st.Router != nil && st.Router.PID > 0 {
		watch = watchReloads(st.Router.PID)
	}
	targets := make([]target, 0, n)
	for _, m := range st.Merchants {
		if mode == "router" {
			targets = append(targets, target{url: fmt.Sprintf("http://127.0.0.1:%d/version", nginxPort), host: m.ID + ".bench.test"})
		} else {
			targets = append(targets, target{url: fmt.Sprintf("http://127.0.0.1:%d/version", m.Port)})
		}
	}
	load := startLoad(targets, clients)
	time.Sleep(time.Second) // a second of load before the rollout, as a baseline
	if err := writeSpecs("1.1.0"); err != nil {
		return res, err
	}
	fmt.Fprintf(os.Stderr, "%s: rolling out 1.1.0 under load\n", mode)
	start := time.Now()
	out, aerr := steward("apply", "-auto-approve", "-parallel", "16")
	res.rollout = time.Since(start)
	time.Sleep(time.Second)
	load.stop()
	if aerr != nil {
		return res, fmt.Errorf("%s: apply 1.1.0: %v\n%s", mode, aerr, out)
	}
	res.requests, res.failed, res.firstFailures = load.total.Load(), load.failed.Load(), load.failures
	if st, err = status(steward); err != nil {
		return res, err
	}
	for _, m := range st.Merchants {
		if m.Version == "1.1.0" && m.State == "running" {
			res.upgraded++
		}
	}
	if watch != nil {
		res.reloads = watch.stop()
	}
	return res, nil
}

type statusDoc struct {
	Merchants []struct {
		ID      string `json:"id"`
		Port    int    `json:"port"`
		Version string `json:"version"`
		State   string `json:"state"`
	} `json:"merchants"`
	Router *struct {
		PID int `json:"pid"`
	} `json:"router"`
}

func status(steward func(...string) (string, error)) (statusDoc, error) {
	var doc statusDoc
	out, err := steward("status", "-o", "json")
	if err != nil {
		return doc, fmt.Errorf("status: %v\n%s", err, out)
	}
	return doc, json.Unmarshal([]byte(out), &doc)
}

// reloadWatch counts nginx reloads from outside steward: every reload
// (SIGHUP) makes the master start a new set of workers, so it polls the
// master's children every 10ms and counts the times a worker appears that
// was not there before. (steward status in a CLI process only knows the
// reloads that process made.)
type reloadWatch struct {
	done  chan struct{}
	count chan int
}

func watchReloads(master int) *reloadWatch {
	w := &reloadWatch{done: make(chan struct{}), count: make(chan int, 1)}
	children := func() map[string]bool {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", master, master))
		set := map[string]bool{}
		for _, f := range strings.Fields(string(b)) {
			set[f] = true
		}
		return set
	}
	go func() {
		seen, n := children(), 0
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-w.done:
				w.count <- n
				return
			case <-t.C:
			}
			now, fresh := children(), false
			for pid := range now {
				if !seen[pid] {
					fresh = true
				}
			}
			if fresh {
				n++
			}
			seen = now
		}
	}()
	return w
}

func (w *reloadWatch) stop() int { close(w.done); return <-w.count }

type target struct{ url, host string }

type loader struct {
	total, failed atomic.Int64
	mu            sync.Mutex
	failures      []string
	done          chan struct{}
	wg            sync.WaitGroup
}

func startLoad(targets []target, clients int) *loader {
	l := &loader{done: make(chan struct{})}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	for c := range clients {
		l.wg.Go(func() {
			for i := c; ; i += clients {
				select {
				case <-l.done:
					return
				default:
				}
				t := targets[i%len(targets)]
				req, _ := http.NewRequest(http.MethodGet, t.url, nil)
				if t.host != "" {
					req.Host = t.host
				}
				resp, err := client.Do(req)
				l.total.Add(1)
				ok := err == nil && resp.StatusCode/100 == 2
				if resp != nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if !ok {
					l.failed.Add(1)
					l.mu.Lock()
					if len(l.failures) < 5 {
						if err != nil {
							l.failures = append(l.failures, err.Error())
						} else {
							l.failures = append(l.failures, resp.Status)
						}
					}
					l.mu.Unlock()
				}
			}
		})
	}
	return l
}

func (l *loader) stop() { close(l.done); l.wg.Wait() }

func report(w io.Writer, n, clients, parallel int, rs []result) {
	fmt.Fprintf(w, "\nrollout of %d merchants to a new version under load (%d clients, max_parallel %d)\n\n", n, clients, parallel)
	fmt.Fprintf(w, "%-34s %16s %16s\n", "", "behind nginx", "stop-then-start")
	row := func(name string, f func(r result) string) {
		fmt.Fprintf(w, "%-34s %16s %16s\n", name, f(rs[0]), f(rs[1]))
	}
	row("requests during the rollout", func(r result) string { return fmt.Sprint(r.requests) })
	row("failed requests", func(r result) string { return fmt.Sprint(r.failed) })
	row("nginx reloads", func(r result) string {
		if r.mode != "router" {
			return "-"
		}
		return fmt.Sprint(r.reloads)
	})
	row("rollout wall time", func(r result) string { return r.rollout.Round(10 * time.Millisecond).String() })
	row("merchants on the new version", func(r result) string { return fmt.Sprintf("%d/%d", r.upgraded, r.merchts) })
	fmt.Fprintf(w, "\nwall time ratio (stop-then-start / behind nginx): %.2f\n", rs[1].rollout.Seconds()/rs[0].rollout.Seconds())
	for _, r := range rs {
		if len(r.firstFailures) > 0 {
			fmt.Fprintf(w, "first failures %s: %v\n", r.mode, r.firstFailures)
		}
	}
}
