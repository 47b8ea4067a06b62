package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// treeDigest digests every name, mode, size, mtime and content below dir:
// two equal digests mean nothing was written.
func treeDigest(t *testing.T, dir string) string {
	t.Helper()
	h := sha256.New()
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		fmt.Fprintf(h, "%s %v %d %d\n", rel, fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		if fi.Mode().IsRegular() {
			if f, err := os.Open(p); err == nil {
				io.Copy(h, f)
				f.Close()
			}
		}
		return nil
	})
	return hex.EncodeToString(h.Sum(nil))
}

// Reading never writes: plan (even one that shows an upgrade to a release
// not installed yet, with its schema change) and the daemon's GET
// requests leave the state and the releases exactly as they were.
func TestReadingNeverWrites(t *testing.T) {
	pkgs := examplePackages(t)
	f := newFleet(t, 10)
	f.write("fleet.hcl", rolloutSpec(pkgs, "1.0.0", testRollout, merchantBlock("m1"), merchantBlock("m2")))
	if out, errs, code := f.steward("apply", "-auto-approve"); code != 0 {
		t.Fatalf("%s%s", out, errs)
	}
	stateDir, releases := filepath.Join(f.dir, "state"), filepath.Join(f.dir, "run", "releases")
	f.write("fleet.hcl", rolloutSpec(pkgs, "1.1.0", testRollout, merchantBlock("m1"), merchantBlock("m2")))
	syscall.Kill(f.merchant(f.status(), "m2").PID, syscall.SIGKILL) // a death plan must not record
	st, rel := treeDigest(t, stateDir), treeDigest(t, releases)
	for _, args := range [][]string{{"plan"}, {"plan", "-o", "json"}, {"status"}, {"status", "-o", "json"}, {"history", "m1"}, {"validate"}} {
		out, errs, code := f.steward(args...)
		if code != 0 {
			t.Fatalf("%v: exit %d %s%s", args, code, out, errs)
		}
		if args[0] == "plan" && len(args) == 1 && !strings.Contains(out, "schema 1 → 2 (migrate)") {
			t.Errorf("plan does not show the schema change of a release it did not install:\n%s", out)
		}
	}
	if treeDigest(t, stateDir) != st {
		t.Error("a read-only command wrote to the state directory")
	}
	if treeDigest(t, releases) != rel {
		t.Error("a read-only command wrote to the releases directory (installed a package?)")
	}
	if _, err := os.Stat(filepath.Join(releases, "invoicing", "1.1.0")); err == nil {
		t.Error("plan installed invoicing 1.1.0")
	}

	// Under the daemon: converged and idle, GET requests change nothing.
	f.write("fleet.hcl", rolloutSpec(pkgs, "1.0.0", testRollout, merchantBlock("m1"), merchantBlock("m2")))
	d := f.startDaemon()
	f.waitAPI()
	f.waitRunning(60*time.Second, "m1", "m2")
	waitFor(t, 30*time.Second, "the daemon to settle", func() bool {
		a := treeDigest(t, stateDir)
		time.Sleep(300 * time.Millisecond) // a quiet interval, not a synchronisation: it is what is measured
		return treeDigest(t, stateDir) == a
	})
	st, rel = treeDigest(t, stateDir), treeDigest(t, releases)
	for range 3 {
		for _, path := range []string{"/v1/plan", "/v1/status", "/metrics"} {
			if get(f.apiPort, path) == "" {
				t.Errorf("GET %s failed", path)
			}
		}
	}
	if treeDigest(t, stateDir) != st || treeDigest(t, releases) != rel {
		t.Error("GET requests changed the state or the releases")
	}
	d.stop(t, syscall.SIGTERM)
}

// A saved plan stays valid while other merchants' records, or nothing at
// all, change: staleness is decided per record. (Every save once bumped one
// fleet-wide serial, so an apply that changed nothing made every saved plan
// stale.)
func TestSavedPlanSurvivesUnrelatedWrites(t *testing.T) {
	pkgs := examplePackages(t)
	f := newFleet(t, 10)
	f.write("fleet.hcl", fleetSpec(pkgs, merchantBlock("alpha")))
	if out, errs, code := f.steward("apply", "-auto-approve"); code != 0 {
		t.Fatalf("%s%s", out, errs)
	}
	if out, _, code := f.steward("apply", "-auto-approve"); code != 0 || !strings.Contains(out, "No changes") {
		t.Fatalf("a converged apply: exit %d\n%s", code, out)
	}
	f.write("fleet.hcl", fleetSpec(pkgs, merchantBlock("alpha"), merchantBlock("bravo")))
	planFile := filepath.Join(f.dir, "bravo.plan")
	if _, errs, code := f.steward("plan", "-out", planFile); code != 0 {
		t.Fatal(errs)
	}
	for _, args := range [][]string{{"restart", "alpha"}, {"suspend", "alpha"}, {"resume", "alpha"}, {"status"}} {
		if out, errs, code := f.steward(args...); code != 0 {
			t.Fatalf("%v: %s%s", args, out, errs)
		}
	}
	if out, errs, code := f.steward("apply", planFile); code != 0 || !strings.Contains(out, "1 created") {
		t.Fatalf("the saved plan after writes of another merchant: exit %d\n%s%s", code, out, errs)
	}
}

// The walkthrough of a failing release, continued by hand: "steward
// restart" of the failed canary runs its last good version and migrates
// nothing; "steward rollback" works while a daemon runs; the pin survives
// a crash.
func TestRestartAndRollbackAfterAFailedCanary(t *testing.T) {
	pkgs := examplePackages(t)
	f := newFleet(t, 10)
	rollout := strings.Replace(testRollout, `"20s"`, `"4s"`, 1)
	f.write("fleet.hcl", rolloutSpec(pkgs, "1.1.0", rollout, merchantBlock("m1"), merchantBlock("m2")))
	if out, errs, code := f.steward("apply", "-auto-approve"); code != 0 {
		t.Fatalf("%s%s", out, errs)
	}
	f.write("fleet.hcl", rolloutSpec(pkgs, "1.2.0", rollout, merchantBlock("m1"), merchantBlock("m2")))
	if out, _, code := f.steward("apply", "-auto-approve"); code != exitError {
		t.Fatalf("the failing release applied: %s", out)
	}
	migrations := strings.Count(f.history("m1"), "migrate ")
	if out, errs, code := f.steward("restart", "m1"); code != 0 {
		t.Fatalf("restart: %s%s", out, errs)
	}
	m1 := f.merchant(f.status(), "m1")
	if m1.Version != "1.1.0" || m1.State != "running" || strings.TrimSpace(get(m1.Port, "/version")) != "1.1.0" {
		t.Fatalf("steward restart of the failed canary: %+v", m1)
	}
	if n := strings.Count(f.history("m1"), "migrate "); n != migrations {
		t.Errorf("the restart migrated the database (%d migrations, were %d):\n%s", n, migrations, f.history("m1"))
	}
	// "Rolling back" to a newer version that never ran well is refused:
	// new versions come through the specs and their rollout.
	if out, errs, code := f.steward("rollback", "m1", "-to", "1.2.0"); code != exitError || !strings.Contains(errs, "1.2.0 is newer than 1.1.0") {
		t.Errorf("rollback to a newer version: exit %d\n%s%s", code, out, errs)
	}
	if m := f.merchant(f.status(), "m1"); m.PID != m1.PID || m.Version != "1.1.0" {
		t.Errorf("a refused rollback changed m1: %+v", m)
	}

	d := f.startDaemon()
	f.waitAPI()
	f.waitRunning(60*time.Second, "m1", "m2")
	// The daemon's status has each merchant's last event from before it
	// started, as the CLI's does.
	if m := f.merchant(f.apiStatus(), "m1"); m.LastEvent == nil {
		t.Errorf("the daemon's status lacks m1's last event")
	}
	out, errs, code := f.steward("rollback", "m2", "-to", "1.0.0")
	if code != 0 || !strings.Contains(out, "by the daemon") {
		t.Fatalf("rollback while the daemon runs: exit %d\n%s%s", code, out, errs)
	}
	m2 := f.merchant(f.apiStatus(), "m2")
	if m2.Version != "1.0.0" {
		t.Fatalf("m2 after the rollback: %+v", m2)
	}
	syscall.Kill(m2.PID, syscall.SIGKILL)
	waitFor(t, 30*time.Second, "m2 restarted", func() bool {
		m := f.merchant(f.apiStatus(), "m2")
		return m.State == "running" && m.PID != m2.PID && m.PID != 0
	})
	if m := f.merchant(f.apiStatus(), "m2"); m.Version != "1.0.0" || strings.TrimSpace(get(m.Port, "/version")) != "1.0.0" {
		t.Errorf("the crash lost the rollback pin: %+v", m)
	}
	plan, _, _ := f.steward("plan")
	if !strings.Contains(plan, "m2  hold  pinned to 1.0.0 by steward rollback") {
		t.Errorf("plan does not show the pin:\n%s", plan)
	}
	// status says so too, in its note and in the document.
	if text, _, _ := f.steward("status"); !regexp.MustCompile(`m2 .* pinned to 1\.0\.0 by steward rollback`).MatchString(text) {
		t.Errorf("status does not show the pin:\n%s", text)
	}
	if m := f.merchant(f.apiStatus(), "m2"); m.Pin != "1.0.0" || !strings.Contains(m.HoldReason, "pinned to 1.0.0") {
		t.Errorf("the daemon's status of m2: pin %q, hold_reason %q", m.Pin, m.HoldReason)
	}
	d.stop(t, syscall.SIGTERM)
}

func (f *fleet) history(id string) string {
	f.t.Helper()
	out, _, _ := f.steward("history", id, "-n", "0")
	return out
}

// A merchant without a database starts on a release whose manifest has a
// plain migrate command (the example app's needs DATABASE_URL): a start
// has no version to migrate from, so the command runs on version changes
// only.
func TestStartWithoutDatabaseRunsNoMigrate(t *testing.T) {
	app := extract(t, filepath.Join(examplePackages(t), "invoicing-1.0.0.tar.gz"), "bin/invoicing")
	pkgs := t.TempDir()
	os.Chmod(pkgs, 0o755)
	writeTarball(t, pkgs, "plain", "1.0.0", map[string]string{
		"package.hcl":   "command = [\"bin/invoicing\", \"--port=${port}\"]\nhealth { http = \"/health\" }\nmigrate = [\"bin/invoicing\", \"migrate\"]\n",
		"bin/invoicing": app,
	})
	f := newFleet(t, 5)
	f.write("fleet.hcl", fmt.Sprintf(`package "plain" {
  source = %q
  channel "stable" { version = "1.0.0" }
}
merchant "solo" {
  package = "plain"
  channel = "stable"
}
`, pkgs))
	if out, errs, code := f.steward("apply", "-auto-approve"); code != 0 {
		t.Fatalf("apply: exit %d\n%s%s", code, out, errs)
	}
	if m := f.merchant(f.status(), "solo"); m.State != "running" || get(m.Port, "/health") == "" {
		t.Errorf("solo after apply: %+v", m)
	}
}

// zombieChildren lists the zombie processes whose parent is pid.
func zombieChildren(pid int) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 && f[0] == "Z" && f[1] == fmt.Sprint(pid) {
			n, _ := strconv.Atoi(e.Name())
			out = append(out, n)
		}
	}
	return out
}

// A new version whose process dies during its health gate is undone, and
// the daemon that started it leaves no zombie behind.
func TestDeadCandidateLeavesNoZombie(t *testing.T) {
	app := extract(t, filepath.Join(examplePackages(t), "invoicing-1.0.0.tar.gz"), "bin/invoicing")
	pkgs := t.TempDir()
	os.Chmod(pkgs, 0o755)
	manifest := "command = [\"bin/start\", \"${port}\"]\nhealth { http = \"/health\" }\n"
	writeTarball(t, pkgs, "flaky", "1.0.0", map[string]string{"package.hcl": manifest, "bin/invoicing": app,
		"bin/start": "#!/bin/sh\nexec \"$(dirname \"$0\")/invoicing\" --port=\"$1\"\n"})
	writeTarball(t, pkgs, "flaky", "1.1.0", map[string]string{"package.hcl": manifest, "bin/invoicing": app,
		// Healthy at first, gone a second later: during min_healthy_time.
		"bin/start": "#!/bin/sh\n(sleep 1; kill -9 $$) &\nexec \"$(dirname \"$0\")/invoicing\" --port=\"$1\"\n"})
	f := newFleet(t, 5)
	specs := func(v string) string {
		return fmt.Sprintf("package \"flaky\" {\n  source = %q\n  channel \"s\" { version = %q }\n}\nrollout {\n  health_deadline  = \"10s\"\n  min_healthy_time = \"3s\"\n}\nmerchant \"solo\" {\n  package = \"flaky\"\n  channel = \"s\"\n}\n", pkgs, v)
	}
	f.write("fleet.hcl", specs("1.0.0"))
	d := f.startDaemon()
	f.waitAPI()
	f.waitRunning(60*time.Second, "solo")
	f.write("fleet.hcl", specs("1.1.0"))
	waitFor(t, 60*time.Second, "the failed upgrade undone", func() bool {
		return strings.Contains(f.history("solo"), "upgrade   error")
	})
	waitFor(t, 30*time.Second, "solo back on 1.0.0", func() bool {
		m := f.merchant(f.apiStatus(), "solo")
		return m.State == "running" && m.Version == "1.0.0"
	})
	if z := zombieChildren(d.cmd.Process.Pid); len(z) > 0 {
		t.Errorf("the daemon left zombies: %v", z)
	}
	d.stop(t, syscall.SIGTERM)
}
