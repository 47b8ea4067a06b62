package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"steward/internal/app"
	"strings"
	"syscall"
	"testing"
	"time"

	"steward/internal/pgtest"
	"steward/state"
)

// fleetSpec is a package "invoicing" from pkgs, a database, and merchants.
func fleetSpec(pkgs string, merchants ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `database "db-main" {
  dsn = %q
}

package "invoicing" {
  source = %q
  channel "stable" {
    version = "1.0.0"
  }
}

defaults {
  package  = "invoicing"
  channel  = "stable"
  database = "db-main"
}
`, pgtest.DSN(), pkgs)
	for _, m := range merchants {
		b.WriteString("\n" + m + "\n")
	}
	return b.String()
}

func merchantBlock(id string, extra ...string) string {
	return fmt.Sprintf("merchant %q {\n%s\n}", id, strings.Join(extra, "\n"))
}

func TestApplyExampleFleetFromEmpty(t *testing.T) {
	pkgs := examplePackages(t)
	// Ports no demo or default config uses: the example fleet moved there.
	low := freePorts(t, 100)
	f := newFleetRange(t, low, low+99)
	specs := exampleSpecs(t, filepath.Join(f.dir, "example"), low, pkgs)
	for _, name := range []string{"fleet.hcl", "east.hcl", "west.hcl"} {
		b, err := os.ReadFile(filepath.Join(specs, name))
		if err != nil {
			t.Fatal(err)
		}
		f.write(name, string(b))
	}
	stdout, stderr, code := f.steward("apply", "-auto-approve")
	if code != 0 {
		t.Fatalf("apply: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "Apply complete") || !strings.Contains(stdout, "6 created") {
		t.Errorf("apply output:\n%s", stdout)
	}
	doc := f.status()
	if len(doc.Merchants) != 6 {
		t.Fatalf("status has %d merchants", len(doc.Merchants))
	}
	ports := map[int]string{}
	for _, m := range doc.Merchants {
		if m.State != "running" || !m.Healthy || m.PID == 0 || m.Version != m.DesiredVersion {
			t.Errorf("merchant %+v is not running and healthy on its desired version", m)
		}
		if other, dup := ports[m.Port]; dup {
			t.Errorf("merchants %s and %s share port %d", m.ID, other, m.Port)
		}
		ports[m.Port] = m.ID
		if got := get(m.Port, "/version"); strings.TrimSpace(got) != m.DesiredVersion {
			t.Errorf("%s on port %d answers version %q, want %q", m.ID, m.Port, got, m.DesiredVersion)
		}
	}
	if m := f.merchant(doc, "acme"); m.Port != low+1 {
		t.Errorf("acme's fixed port: %d", m.Port)
	}
	// Secrets reach the process but not status or history.
	dune := f.merchant(doc, "dune")
	environ, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", dune.PID))
	if !strings.Contains(string(environ), "PAYMENT_KEY=demo-key") || !strings.Contains(string(environ), "MERCHANT=dune") {
		t.Errorf("dune's environment lacks its env: %q", environ)
	}
	js, _, _ := f.steward("status", "-o", "json")
	hist, _, _ := f.steward("history", "dune", "-o", "json")
	for _, s := range []string{"demo-key", "example-only", "postgres@"} {
		if strings.Contains(js+hist, s) {
			t.Errorf("status or history reveals %q", s)
		}
	}
	// Converged: a second plan has no changes.
	if _, _, code := f.steward("plan", "-detailed-exitcode"); code != 0 {
		t.Errorf("plan after apply: exit %d, want 0 (no changes)", code)
	}
	// Every merchant runs as the unprivileged user when steward is root.
	if os.Geteuid() == 0 {
		for _, m := range doc.Merchants {
			st, err := os.Stat(fmt.Sprintf("/proc/%d", m.PID))
			if err == nil && st.Sys().(*syscall.Stat_t).Uid == 0 {
				t.Errorf("%s runs as root", m.ID)
			}
		}
	}
	// Each merchant's output goes through a steward-logshim (the program
	// next to steward), which wrote its log.
	shims := 0
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		exe, _ := os.Readlink(filepath.Join("/proc", p.Name(), "exe"))
		cmdline, _ := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if filepath.Base(exe) == app.LogShimName && strings.Contains(string(cmdline), f.dir) {
			shims++
		}
	}
	if shims != len(doc.Merchants) {
		t.Errorf("%d %s processes for %d merchants", shims, app.LogShimName, len(doc.Merchants))
	}
	if out, _, code := f.steward("logs", "acme", "-n", "5"); code != 0 || strings.TrimSpace(out) == "" {
		t.Errorf("steward logs acme: exit %d, output %q", code, out)
	}
}

func newFleetRange(t *testing.T, low, high int) *fleet {
	t.Helper()
	return newFleetPorts(t, low, high)
}

// waitRunning waits until every listed merchant is running and healthy.
func (f *fleet) waitRunning(timeout time.Duration, ids ...string) statusDoc {
	f.t.Helper()
	var doc statusDoc
	waitFor(f.t, timeout, "merchants "+strings.Join(ids, ", ")+" running", func() bool {
		doc = f.status()
		for _, id := range ids {
			m := f.merchant(doc, id)
			if m.State != "running" || !m.Healthy {
				return false
			}
		}
		return true
	})
	return doc
}

func TestDaemonRestartsKilledMerchant(t *testing.T) {
	pkgs := examplePackages(t)
	f := newFleet(t, 10)
	f.write("fleet.hcl", fleetSpec(pkgs, merchantBlock("alpha"), merchantBlock("bravo"), merchantBlock("charlie")))
	d := f.startDaemon()
	doc := f.waitRunning(60*time.Second, "alpha", "bravo", "charlie")
	victim := f.merchant(doc, "bravo")
	if victim.Restarts != 0 {
		t.Fatalf("bravo restarts = %d before any kill", victim.Restarts)
	}
	killedAt := time.Now()
	if err := syscall.Kill(victim.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var after merchantStatus
	waitFor(t, 30*time.Second, "bravo restarted", func() bool {
		after = f.merchant(f.status(), "bravo")
		return after.State == "running" && after.Healthy && after.PID != victim.PID
	})
	t.Logf("bravo answered again %s after SIGKILL", time.Since(killedAt).Round(time.Millisecond))
	if after.Restarts != 1 || after.Port != victim.Port {
		t.Errorf("after restart: restarts %d (want 1), port %d (want %d)", after.Restarts, after.Port, victim.Port)
	}
	if get(after.Port, "/version") == "" {
		t.Error("bravo's port does not answer after the restart")
	}
	hist, _, _ := f.steward("history", "bravo")
	if !strings.Contains(hist, "exited") || !strings.Contains(hist, "killed") || !strings.Contains(hist, fmt.Sprintf("process %d", victim.PID)) {
		t.Errorf("history does not say why bravo was restarted:\n%s", hist)
	}
	// The others were untouched.
	for _, id := range []string{"alpha", "charlie"} {
		if f.merchant(f.status(), id).PID != f.merchant(doc, id).PID {
			t.Errorf("%s was restarted too", id)
		}
	}
	d.stop(t, syscall.SIGTERM)
	// A graceful stop leaves merchants running.
	for _, m := range f.status().Merchants {
		if m.State != "running" {
			t.Errorf("%s is %s after the daemon stopped", m.ID, m.State)
		}
	}
}

func TestDaemonSIGKILLThenAdoptsMerchants(t *testing.T) {
	pkgs := examplePackages(t)
	f := newFleet(t, 10)
	f.write("fleet.hcl", fleetSpec(pkgs, merchantBlock("alpha"), merchantBlock("bravo"), merchantBlock("charlie"), merchantBlock("delta")))
	d := f.startDaemon()
	before := f.waitRunning(60*time.Second, "alpha", "bravo", "charlie", "delta")
	d.stop(t, syscall.SIGKILL)
	for _, m := range before.Merchants {
		if syscall.Kill(m.PID, 0) != nil {
			t.Fatalf("%s (pid %d) died with the daemon", m.ID, m.PID)
		}
	}
	logBefore := len(f.daemonLog())
	f.startDaemon()
	waitFor(t, 30*time.Second, "the second daemon to adopt and resync", func() bool {
		l := f.daemonLog()[logBefore:]
		return strings.Count(l, "adopted running merchant") == 4 && strings.Contains(l, `"msg":"resync"`)
	})
	second := f.daemonLog()[logBefore:]
	if strings.Contains(second, `"msg":"reconciling"`) {
		t.Errorf("the second daemon acted on converged merchants:\n%s", second)
	}
	after := f.status()
	for _, m := range before.Merchants {
		a := f.merchant(after, m.ID)
		if a.PID != m.PID || a.Restarts != 0 || a.State != "running" {
			t.Errorf("%s: pid %d→%d, restarts %d, state %s", m.ID, m.PID, a.PID, a.Restarts, a.State)
		}
	}
	for id, pids := range f.merchantPIDs() {
		if len(pids) != 1 {
			t.Errorf("merchant %s has %d processes: %v", id, len(pids), pids)
		}
	}
}

func TestReusedPIDIsNeitherAdoptedNorSignalled(t *testing.T) {
	pkgs := examplePackages(t)
	f := newFleet(t, 10)
	f.write("fleet.hcl", fleetSpec(pkgs, merchantBlock("alpha")))
	if _, errs, code := f.steward("apply", "-auto-approve"); code != 0 {
		t.Fatal(errs)
	}
	orig := f.merchant(f.status(), "alpha")
	syscall.Kill(orig.PID, syscall.SIGKILL)
	waitFor(t, 10*time.Second, "alpha's process to die", func() bool { return syscall.Kill(orig.PID, 0) != nil || isZombie(orig.PID) })

	// An unrelated process now holds the pid the state records (we cannot
	// make the kernel reuse the pid, so the record is pointed at it).
	stranger := startStranger(t)
	store, err := state.OpenFile(filepath.Join(f.dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	rec, err := store.Merchant(context.Background(), "alpha")
	if err != nil {
		t.Fatal(err)
	}
	rec.Current.PID = stranger // start time still the old process's
	if err := store.PutMerchant(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	store.Close()

	if doc := f.status(); f.merchant(doc, "alpha").State == "running" {
		t.Fatal("status takes the stranger for alpha")
	}
	d := f.startDaemon()
	doc := f.waitRunning(60*time.Second, "alpha")
	if a := f.merchant(doc, "alpha"); a.PID == stranger {
		t.Fatal("the daemon adopted the stranger")
	}
	// It died while no daemon ran and waited for its database's first
	// check: its start still counts as a restart.
	if a := f.merchant(doc, "alpha"); a.Restarts != 1 {
		t.Errorf("alpha restarts = %d, want 1", a.Restarts)
	}
	if syscall.Kill(stranger, 0) != nil || isZombie(stranger) {
		t.Fatal("the stranger was signalled")
	}
	d.stop(t, syscall.SIGTERM)
}

func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && len(b) > i+2 && (b[i+2] == 'Z' || b[i+2] == 'X')
}

// startStranger starts an unrelated long-running process.
func startStranger(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("sleep", "300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd.Process.Pid
}

func TestCrashingMerchantBacksOff(t *testing.T) {
	dir := t.TempDir()
	pkgs := filepath.Join(dir, "pkgs")
	shellPackage(t, pkgs, "crasher", "1.0.0", "echo start >> starts\necho failing on purpose >&2\nexit 3\n")
	f := newFleet(t, 10)
	f.write("fleet.hcl", fmt.Sprintf(`package "crasher" {
  source = %q
  channel "stable" {
    version = "1.0.0"
  }
}

merchant "boom" {
  package = "crasher"
  channel = "stable"
}
`, pkgs))
	d := f.startDaemon()
	started := time.Now()
	work := filepath.Join(f.dir, "run", "merchants", "boom", "work")
	var doc statusDoc
	waitFor(t, 30*time.Second, "boom in crashloop", func() bool {
		doc = f.status()
		return f.merchant(doc, "boom").State == "crashloop"
	})
	// Let it run a few seconds in the loop, then count the starts.
	waitFor(t, 20*time.Second, "four starts", func() bool { return countLines(filepath.Join(work, "starts")) >= 4 })
	elapsed := time.Since(started)
	n := countLines(filepath.Join(work, "starts"))
	// Backoff 0, 1s, 2s, 4s...: within elapsed seconds at most a handful.
	if max := 2 + int(elapsed.Seconds()); n > max {
		t.Errorf("%d starts in %s: not backing off", n, elapsed)
	}
	// Between two attempts; during one (the process starts and exits at
	// once) its state is that attempt's.
	var m merchantStatus
	waitFor(t, 20*time.Second, "boom waiting for its next attempt", func() bool {
		m = f.merchant(f.status(), "boom")
		return m.State == "crashloop"
	})
	if m.NextAttempt == nil || m.Failures < 3 {
		t.Errorf("status = %+v", m)
	}
	logs, _, _ := f.steward("logs", "boom", "-n", "2")
	if !strings.Contains(logs, "failing on purpose") {
		t.Errorf("logs do not show the merchant's stderr: %q", logs)
	}
	d.stop(t, syscall.SIGTERM)
}

func countLines(path string) int {
	b, _ := os.ReadFile(path)
	return strings.Count(string(b), "\n")
}

func TestApplyConvergesSpecChanges(t *testing.T) {
	pkgs := examplePackages(t)
	f := newFleet(t, 10)
	f.write("fleet.hcl", fleetSpec(pkgs, merchantBlock("alpha", `  env = { LOCALE = "en_US" }`), merchantBlock("bravo")))
	if _, errs, code := f.steward("apply", "-auto-approve"); code != 0 {
		t.Fatal(errs)
	}
	before := f.status()
	f.write("fleet.hcl", fleetSpec(pkgs, merchantBlock("alpha", `  env = { LOCALE = "de_DE" }`)))
	plan, _, code := f.steward("plan", "-detailed-exitcode")
	if code != exitChanges || !strings.Contains(plan, "~ alpha  restart  env.LOCALE changed") || !strings.Contains(plan, "- bravo  delete   removed from specs") {
		t.Fatalf("plan (exit %d):\n%s", code, plan)
	}
	if out, errs, code := f.steward("apply", "-auto-approve"); code != 0 {
		t.Fatalf("%s%s", out, errs)
	}
	after := f.status()
	alpha := f.merchant(after, "alpha")
	if alpha.PID == f.merchant(before, "alpha").PID || alpha.State != "running" {
		t.Errorf("alpha was not restarted: %+v", alpha)
	}
	environ, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", alpha.PID))
	if !slices.Contains(strings.Split(string(environ), "\x00"), "LOCALE=de_DE") {
		t.Errorf("alpha's new process has environment %q", environ)
	}
	if len(after.Merchants) != 1 {
		t.Errorf("bravo is still in status: %+v", after.Merchants)
	}
	if pid := f.merchant(before, "bravo").PID; syscall.Kill(pid, 0) == nil && !isZombie(pid) {
		t.Errorf("bravo's process %d still runs", pid)
	}
}
