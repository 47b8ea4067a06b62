package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"steward/internal/app"
	"steward/spec"
)

// needNginx skips without nginx outside CI, and fails under CI (.ci/run
// installs it).
func needNginx(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"nginx", "/usr/sbin/nginx"} {
		if bin, err := exec.LookPath(p); err == nil {
			return bin
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("nginx is not installed under CI (.ci/run installs it)")
	}
	t.Skip("nginx is not installed (apt-get install nginx-light)")
	return ""
}

// useRouter gives the fleet a managed nginx on a port of its own, and
// stops that nginx (by its recorded pid) when the test ends.
func (f *fleet) useRouter(extra string) int {
	f.t.Helper()
	needNginx(f.t)
	port := freePorts(f.t, 1)
	b, err := os.ReadFile(f.config)
	if err != nil {
		f.t.Fatal(err)
	}
	cfg := string(b) + fmt.Sprintf("router {\n  nginx {\n    mode   = \"managed\"\n    listen = \"127.0.0.1:%d\"\n    retry_after = \"7s\"\n%s  }\n}\n", port, extra)
	if err := os.WriteFile(f.config, []byte(cfg), 0o644); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() {
		h, _, diags := spec.LoadHost(f.config)
		if diags.HasErrors() || h.Router == nil {
			return
		}
		if r, err := app.NewRouter(h, nil); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			r.Stop(ctx)
		}
	})
	return port
}

// viaNginx requests path of host through the router.
type answer struct {
	status int
	body   string
	header http.Header
	err    error
}

var routerClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

func viaNginx(port int, host, path string) answer {
	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", port, path), nil)
	req.Host = host
	resp, err := routerClient.Do(req)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, body: string(b), header: resp.Header}
}

func routed(id string, extra ...string) string {
	return merchantBlock(id, append([]string{fmt.Sprintf("  domains = [%q]", id+".shop.test")}, extra...)...)
}

// Requests through nginx reach the right merchant by Host; adding and
// removing a merchant changes the routing, after apply and under the
// daemon.
func TestRoutingThroughNginx(t *testing.T) {
	pkgs := examplePackages(t)
	f := newFleet(t, 20)
	port := f.useRouter("")
	f.write("fleet.hcl", fleetSpec(pkgs, routed("alpha"), routed("bravo")))
	if out, errs, code := f.steward("apply", "-auto-approve"); code != 0 {
		t.Fatalf("apply: %s%s", out, errs)
	}
	for _, id := range []string{"alpha", "bravo"} {
		if a := viaNginx(port, id+".shop.test", "/"); a.status != 200 || !strings.Contains(a.body, `"merchant":"`+id+`"`) {
			t.Errorf("%s.shop.test: %d %q %v", id, a.status, a.body, a.err)
		}
	}
	if a := viaNginx(port, "nobody.shop.test", "/"); a.status != 404 {
		t.Errorf("an unknown host: %d", a.status)
	}
	doc := f.status()
	if doc.Router == nil || !doc.Router.Running || doc.Router.Failing {
		t.Fatalf("status router = %+v", doc.Router)
	}
	if m := f.merchant(doc, "alpha"); m.RoutePort != m.Port || len(m.Domains) != 1 {
		t.Errorf("alpha's route in status: %+v", m)
	}
	text, _, _ := f.steward("status")
	if !strings.Contains(text, "route alpha.shop.test → alpha port") {
		t.Errorf("status text does not show the routes:\n%s", text)
	}

	// Removing bravo after apply stops routing it.
	f.write("fleet.hcl", fleetSpec(pkgs, routed("alpha")))
	if out, errs, code := f.steward("apply", "-auto-approve"); code != 0 {
		t.Fatalf("apply: %s%s", out, errs)
	}
	if a := viaNginx(port, "bravo.shop.test", "/"); a.status != 404 {
		t.Errorf("bravo.shop.test after bravo was removed: %d", a.status)
	}
	// Under the daemon: adding charlie routes it.
	d := f.startDaemon()
	f.waitAPI()
	f.write("fleet.hcl", fleetSpec(pkgs, routed("alpha"), routed("charlie")))
	waitFor(t, 60*time.Second, "charlie routed", func() bool {
		a := viaNginx(port, "charlie.shop.test", "/")
		return a.status == 200 && strings.Contains(a.body, `"merchant":"charlie"`)
	})
	d.stop(t, syscall.SIGTERM)
	// The nginx outlives the daemon, like the merchants.
	if a := viaNginx(port, "alpha.shop.test", "/"); a.status != 200 {
		t.Errorf("alpha after the daemon stopped: %d %v", a.status, a.err)
	}
}

// loadLoop sends requests through nginx to every host until stop, and
// counts them and every failure (a non-2xx answer or a connection error).
type loadLoop struct {
	total, failed atomic.Int64
	mu            sync.Mutex
	failures      []string
	stop          chan struct{}
	wg            sync.WaitGroup
}

func startLoad(port int, hosts []string, workers int) *loadLoop {
	l := &loadLoop{stop: make(chan struct{})}
	for w := range workers {
		l.wg.Go(func() {
			for i := w; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				host := hosts[i%len(hosts)]
				a := viaNginx(port, host, "/version")
				l.total.Add(1)
				if a.err != nil || a.status/100 != 2 {
					l.failed.Add(1)
					l.mu.Lock()
					if len(l.failures) < 20 {
						l.failures = append(l.failures, fmt.Sprintf("%s: %d %v %.80q", host, a.status, a.err, a.body))
					}
					l.mu.Unlock()
				}
			}
		})
	}
	return l
}

func (l *loadLoop) end() { close(l.stop); l.wg.Wait() }

// A request loop through nginx sees no failed request during an upgrade of
// five merchants, the automatic return of a failing version, and a
// restart for changed settings.
func TestNoFailedRequestThroughNginx(t *testing.T) {
	pkgs := examplePackages(t)
	f := newFleet(t, 30)
	port := f.useRouter("")
	rollout := strings.Replace(strings.Replace(testRollout, `"20s"`, `"4s"`, 1), `"500ms"`, `"300ms"`, 1)
	var ms, hosts []string
	for i := 1; i <= 5; i++ {
		id := fmt.Sprintf("m%d", i)
		ms, hosts = append(ms, routed(id)), append(hosts, id+".shop.test")
	}
	f.write("fleet.hcl", rolloutSpec(pkgs, "1.0.0", rollout, ms...))
	if out, errs, code := f.steward("apply", "-auto-approve"); code != 0 {
		t.Fatalf("apply: %s%s", out, errs)
	}
	load := startLoad(port, hosts, 4)
	step := func(what, version, env string, wantCode int) {
		t.Helper()
		var with []string
		for _, m := range ms {
			if env != "" {
				m = strings.Replace(m, "\n}", "\n  env = { LOCALE = \""+env+"\" }\n}", 1)
			}
			with = append(with, m)
		}
		f.write("fleet.hcl", rolloutSpec(pkgs, version, rollout, with...))
		out, errs, code := f.steward("apply", "-auto-approve")
		if code != wantCode {
			load.end()
			t.Fatalf("%s: exit %d, want %d\n%s%s", what, code, wantCode, out, errs)
		}
		t.Logf("%s: %d requests so far, %d failed", what, load.total.Load(), load.failed.Load())
	}
	step("upgrade to 1.1.0", "1.1.0", "", 0)
	step("the failing 1.2.0 (returned to 1.1.0)", "1.2.0", "", exitError)
	step("a settings restart", "1.1.0", "de_DE", 0)
	for load.total.Load() < 2000 {
		time.Sleep(10 * time.Millisecond) // the loop runs on; wait for its count
	}
	load.end()
	t.Logf("%d requests through nginx, %d failed", load.total.Load(), load.failed.Load())
	if n := load.failed.Load(); n != 0 {
		t.Errorf("%d of %d requests failed: %v", n, load.total.Load(), load.failures)
	}
	for _, m := range f.status().Merchants {
		if m.Version != "1.1.0" || m.State != "running" {
			t.Errorf("%s: %s %s", m.ID, m.State, m.Version)
		}
		if a := viaNginx(port, m.ID+".shop.test", "/version"); strings.TrimSpace(a.body) != "1.1.0" {
			t.Errorf("%s through nginx answers %q", m.ID, a.body)
		}
	}
	for id, pids := range f.merchantPIDs() {
		if len(pids) != 1 {
			t.Errorf("%s has %d processes", id, len(pids))
		}
	}
}

// A merchant whose database is cut answers the maintenance page with 503
// and Retry-After through nginx, and serves again once it is back.
func TestMaintenancePageWhileTheDatabaseIsCut(t *testing.T) {
	pkgs := examplePackages(t)
	proxy := pgProxy(t)
	f := newFleet(t, 20)
	port := f.useRouter("")
	f.write("fleet.hcl", proxiedFleetSpec(pkgs, proxy, "", routed("alpha")))
	f.startDaemon()
	f.waitAPI()
	f.waitRunning(60*time.Second, "alpha")
	waitFor(t, 30*time.Second, "alpha routed", func() bool { return viaNginx(port, "alpha.shop.test", "/").status == 200 })
	proxy.Cut()
	var a answer
	waitFor(t, 30*time.Second, "the maintenance page", func() bool {
		a = viaNginx(port, "alpha.shop.test", "/")
		return a.status == 503
	})
	if a.header.Get("Retry-After") != "7" || !strings.Contains(strings.ToLower(a.body), "database") {
		t.Errorf("maintenance answer: Retry-After %q, body %.200q", a.header.Get("Retry-After"), a.body)
	}
	proxy.Restore()
	waitFor(t, 30*time.Second, "alpha serving again", func() bool { return viaNginx(port, "alpha.shop.test", "/").status == 200 })
}

// A routing change nginx refuses (its test command fails) leaves the
// previous routing serving, and status shows the failure with nginx's
// output. The router here is a system one: steward writes an include file
// for an nginx the test runs.
func TestRefusedRoutingKeepsTheOldOne(t *testing.T) {
	bin := needNginx(t)
	pkgs := examplePackages(t)
	f := newFleet(t, 20)
	port := freePorts(t, 1)
	dir := filepath.Join(f.dir, "nginx")
	for _, d := range []string{dir, filepath.Join(dir, "logs"), filepath.Join(dir, "temp")} {
		os.MkdirAll(d, 0o755)
	}
	include := filepath.Join(dir, "steward.conf")
	os.WriteFile(include, []byte("# empty until steward writes it\n"), 0o644)
	user := ""
	if os.Geteuid() == 0 {
		user = "user nobody nogroup;\n"
	}
	conf := filepath.Join(dir, "nginx.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf(`%sdaemon on;
pid %s/nginx.pid;
error_log %s/logs/error.log;
events { worker_connections 512; }
http {
  access_log off;
  client_body_temp_path %s/temp;
  proxy_temp_path %s/temp;
  include %s;
}
`, user, dir, dir, dir, dir, include)), 0o644)
	flag := filepath.Join(dir, "refuse")
	test := filepath.Join(dir, "test.sh")
	os.WriteFile(test, []byte(fmt.Sprintf("#!/bin/sh\nif [ -e %s ]; then echo 'nginx: [emerg] refused on purpose by the test' >&2; exit 1; fi\nexec %s -t -p %s -c %s\n", flag, bin, dir, conf)), 0o755)
	b, _ := os.ReadFile(f.config)
	os.WriteFile(f.config, append(b, []byte(fmt.Sprintf(`router {
  nginx {
    mode           = "system"
    listen         = "127.0.0.1:%d"
    include_file   = %q
    test_command   = [%q]
    reload_command = [%q, "-s", "reload", "-p", %q, "-c", %q]
  }
}
`, port, include, test, bin, dir, conf))...), 0o644)
	// The operator's nginx, started with the (so far empty) include.
	if out, err := exec.Command(bin, "-p", dir, "-c", conf).CombinedOutput(); err != nil {
		t.Fatalf("starting the test's nginx: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if b, err := os.ReadFile(filepath.Join(dir, "nginx.pid")); err == nil {
			var pid int
			fmt.Sscan(string(b), &pid)
			if pid > 0 {
				syscall.Kill(pid, syscall.SIGQUIT)
			}
		}
	})
	f.write("fleet.hcl", fleetSpec(pkgs, routed("alpha")))
	if out, errs, code := f.steward("apply", "-auto-approve"); code != 0 {
		t.Fatalf("apply: %s%s", out, errs)
	}
	waitFor(t, 30*time.Second, "alpha routed by the system nginx", func() bool { return viaNginx(port, "alpha.shop.test", "/").status == 200 })

	os.WriteFile(flag, nil, 0o644)
	f.write("fleet.hcl", fleetSpec(pkgs, routed("alpha"), routed("bravo")))
	d := f.startDaemon()
	f.waitAPI()
	waitFor(t, 60*time.Second, "the refusal in status", func() bool {
		r := f.apiStatus().Router
		return r != nil && r.Failing && strings.Contains(r.LastError, "refused on purpose")
	})
	if a := viaNginx(port, "alpha.shop.test", "/"); a.status != 200 {
		t.Errorf("alpha after a refused change: %d %v", a.status, a.err)
	}
	if a := viaNginx(port, "bravo.shop.test", "/"); a.status == 200 {
		t.Errorf("the refused routing took effect: bravo answers")
	}
	if !strings.Contains(get(f.apiPort, "/metrics"), "steward_router_failing 1") {
		t.Error("/metrics does not show the refusal")
	}
	// Once nginx accepts it again, the routing catches up.
	os.Remove(flag)
	waitFor(t, 60*time.Second, "bravo routed", func() bool { return viaNginx(port, "bravo.shop.test", "/").status == 200 })
	d.stop(t, syscall.SIGTERM)
}

// steward SIGKILLed in the middle of a switch, with both instances up:
// the next daemon ends with exactly one instance, routed, and no process
// left behind.
func TestKilledMidSwitchEndsWithOneRoutedInstance(t *testing.T) {
	pkgs := examplePackages(t)
	f := newFleet(t, 20)
	port := f.useRouter("")
	slow := strings.Replace(testRollout, `"500ms"`, `"5s"`, 1)
	f.write("fleet.hcl", rolloutSpec(pkgs, "1.0.0", slow, routed("alpha")))
	d := f.startDaemon()
	f.waitAPI()
	f.waitRunning(60*time.Second, "alpha")
	waitFor(t, 30*time.Second, "alpha routed", func() bool { return viaNginx(port, "alpha.shop.test", "/").status == 200 })
	load := startLoad(port, []string{"alpha.shop.test"}, 2)
	f.write("fleet.hcl", rolloutSpec(pkgs, "1.1.0", slow, routed("alpha")))
	syscall.Kill(d.cmd.Process.Pid, syscall.SIGHUP)
	waitFor(t, 60*time.Second, "both instances up", func() bool {
		st := readState(t, f)
		m := st.Merchants["alpha"]
		return m != nil && m.Change != nil && m.Candidate != nil && m.Candidate.PID != 0 && m.Current.PID != 0 && len(f.merchantPIDs()["alpha"]) == 2
	})
	d.stop(t, syscall.SIGKILL)
	f.startDaemon()
	t.Cleanup(func() {
		if t.Failed() {
			st := readState(t, f)
			t.Logf("record: %+v change %+v candidate %+v", st.Merchants["alpha"], st.Merchants["alpha"].Change, st.Merchants["alpha"].Candidate)
			t.Logf("pids %v", f.merchantPIDs())
			l := f.daemonLog()
			if len(l) > 6000 {
				l = l[len(l)-6000:]
			}
			t.Logf("daemon log:\n%s", l)
		}
	})
	waitFor(t, 90*time.Second, "alpha on 1.1.0 with one instance", func() bool {
		doc := f.status()
		m := f.merchant(doc, "alpha")
		return m.Version == "1.1.0" && m.State == "running" && m.Healthy && len(f.merchantPIDs()["alpha"]) == 1 && readState(t, f).Merchants["alpha"].Change == nil
	})
	m := f.merchant(f.status(), "alpha")
	if pids := f.merchantPIDs()["alpha"]; len(pids) != 1 || pids[0] != m.PID {
		t.Errorf("alpha's processes %v, status pid %d", pids, m.PID)
	}
	if m.RoutePort != m.Port {
		t.Errorf("alpha routed to %d, runs on %d", m.RoutePort, m.Port)
	}
	if a := viaNginx(port, "alpha.shop.test", "/version"); strings.TrimSpace(a.body) != "1.1.0" {
		t.Errorf("through nginx: %d %q", a.status, a.body)
	}
	load.end()
	t.Logf("%d requests during the killed switch, %d failed", load.total.Load(), load.failed.Load())
	if n := load.failed.Load(); n != 0 {
		t.Errorf("%d requests failed: %v", n, load.failures)
	}
}

// The routing is part of the plan: a router added to a converged fleet, or
// a managed nginx that died while no daemon ran, shows in plan (which
// starts nothing) and is put right by apply, from cron as by hand.
func TestRoutingDriftIsPlannedAndApplied(t *testing.T) {
	pkgs := examplePackages(t)
	f := newFleet(t, 10)
	f.write("fleet.hcl", fleetSpec(pkgs, routed("alpha"), merchantBlock("bravo")))
	if out, errs, code := f.steward("apply", "-auto-approve"); code != 0 {
		t.Fatalf("apply: %s%s", out, errs)
	}
	port := f.useRouter("")
	wantPlan := func(what, want string, code int) {
		t.Helper()
		out, errs, got := f.steward("plan", "-detailed-exitcode")
		if got != code || !strings.Contains(out, want) {
			t.Fatalf("%s: plan exit %d (want %d), want %q:\n%s%s", what, got, code, want, out, errs)
		}
	}
	applyRoutes := func(what string) {
		t.Helper()
		out, errs, code := f.steward("apply", "-auto-approve")
		if code != 0 || !strings.Contains(out, "The routing is live: 1 route") {
			t.Fatalf("%s: apply exit %d:\n%s%s", what, code, out, errs)
		}
		if a := viaNginx(port, "alpha.shop.test", "/"); a.status != 200 || !strings.Contains(a.body, `"merchant":"alpha"`) {
			t.Fatalf("%s: alpha.shop.test answers %d %q %v", what, a.status, a.body, a.err)
		}
		wantPlan(what+", then plan", "No changes.", exitOK)
	}

	wantPlan("a router added", "~ router: apply the routing: nginx is not running (1 merchant routed)", exitChanges)
	if a := viaNginx(port, "alpha.shop.test", "/"); a.err == nil {
		t.Fatalf("plan started nginx: alpha.shop.test answers %d", a.status)
	}
	applyRoutes("a router added")

	// nginx's master SIGKILLed by the pid status reports.
	rt := f.status().Router
	if rt == nil || !rt.Running || rt.PID == 0 || rt.Routes != 1 || rt.Reloads < 1 {
		t.Fatalf("status router after apply: %+v", rt)
	}
	if err := syscall.Kill(rt.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the nginx master gone", func() bool { return syscall.Kill(rt.PID, 0) != nil })
	if st := f.status().Router; st.Running {
		t.Fatalf("status after the master was killed: %+v", st)
	}
	wantPlan("nginx killed", "nginx is not running", exitChanges)
	applyRoutes("nginx killed")
	if st := f.status().Router; !st.Running || st.PID == rt.PID {
		t.Errorf("status after apply restarted nginx: %+v (the killed master was %d)", st, rt.PID)
	}
}

// A router taken out of the host config leaves no nginx behind: plan says
// it will stop the one steward started, apply stops it (by its recorded
// pid), and the merchants keep running on their ports.
func TestRouterRemovedStopsItsNginx(t *testing.T) {
	pkgs := examplePackages(t)
	f := newFleet(t, 10)
	plain, err := os.ReadFile(f.config)
	if err != nil {
		t.Fatal(err)
	}
	port := f.useRouter("")
	f.write("fleet.hcl", fleetSpec(pkgs, routed("alpha")))
	if out, errs, code := f.steward("apply", "-auto-approve"); code != 0 {
		t.Fatalf("apply: %s%s", out, errs)
	}
	rt := f.status().Router
	if rt == nil || !rt.Running {
		t.Fatalf("router after apply: %+v", rt)
	}
	if err := os.WriteFile(f.config, plain, 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, code := f.steward("plan", "-detailed-exitcode")
	if code != exitChanges || !strings.Contains(out, fmt.Sprintf("stop the nginx steward started (pid %d)", rt.PID)) {
		t.Fatalf("plan after the router was removed: exit %d\n%s", code, out)
	}
	out, errs, code := f.steward("apply", "-auto-approve")
	if code != 0 || !strings.Contains(out, "The nginx steward started is stopped") {
		t.Fatalf("apply after the router was removed: exit %d\n%s%s", code, out, errs)
	}
	waitFor(t, 10*time.Second, "nginx gone", func() bool { return syscall.Kill(rt.PID, 0) != nil })
	if a := viaNginx(port, "alpha.shop.test", "/"); a.err == nil {
		t.Errorf("nginx still answers on %d: %d", port, a.status)
	}
	if m := f.merchant(f.status(), "alpha"); m.State != "running" || get(m.Port, "/health") == "" {
		t.Errorf("alpha after its router went: %+v", m)
	}
	if out, _, code := f.steward("plan", "-detailed-exitcode"); code != exitOK {
		t.Errorf("plan after: exit %d\n%s", code, out)
	}
}
