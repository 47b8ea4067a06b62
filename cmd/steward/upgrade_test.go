package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"steward/state"
)

// rolloutSpec is fleetSpec with a channel version and a rollout block.
func rolloutSpec(pkgs, channelVersion, rollout string, merchants ...string) string {
	s := fleetSpec(pkgs, merchants...)
	s = strings.Replace(s, `version = "1.0.0"`, fmt.Sprintf("version = %q", channelVersion), 1)
	return s + "\n" + rollout + "\n"
}

const testRollout = `rollout {
  canary           = 1
  max_parallel     = 2
  max_failures     = 1
  health_deadline  = "20s"
  min_healthy_time = "500ms"
}`

func sixMerchants() []string {
	var ms []string
	for _, id := range []string{"m1", "m2", "m3", "m4", "m5", "m6"} {
		ms = append(ms, merchantBlock(id))
	}
	return ms
}

// copyPackages makes a private copy of the example packages, so that a test
// can tamper with them.
func copyPackages(t *testing.T) string {
	t.Helper()
	src := examplePackages(t)
	dst := filepath.Join(t.TempDir(), "packages")
	os.MkdirAll(dst, 0o755)
	ents, _ := os.ReadDir(src)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644)
	}
	return dst
}

func TestChannelUpgradeRollsOutInWaves(t *testing.T) {
	pkgs := examplePackages(t)
	f := newFleet(t, 20)
	f.write("fleet.hcl", rolloutSpec(pkgs, "1.0.0", testRollout, sixMerchants()...))
	if out, errs, code := f.steward("apply", "-auto-approve"); code != 0 {
		t.Fatalf("%s%s", out, errs)
	}
	f.write("fleet.hcl", rolloutSpec(pkgs, "1.1.0", testRollout, sixMerchants()...))
	plan, _, _ := f.steward("plan")
	for _, want := range []string{
		"~ m1  upgrade  version 1.0.0 → 1.1.0 (channel stable), schema 1 → 2 (migrate); canary",
		"~ m2  upgrade  version 1.0.0 → 1.1.0 (channel stable), schema 1 → 2 (migrate); wave 1",
		"~ m3  upgrade  version 1.0.0 → 1.1.0 (channel stable), schema 1 → 2 (migrate); wave 1",
		"~ m6  upgrade  version 1.0.0 → 1.1.0 (channel stable), schema 1 → 2 (migrate); wave 3",
		"Plan: 0 to create, 6 to change, 0 to delete.",
	} {
		if !strings.Contains(plan, want) {
			t.Errorf("plan lacks %q:\n%s", want, plan)
		}
	}
	out, errs, code := f.steward("apply", "-auto-approve")
	if code != 0 {
		t.Fatalf("apply: %s%s", out, errs)
	}
	for _, m := range f.status().Merchants {
		if m.Version != "1.1.0" || m.State != "running" {
			t.Errorf("%s: %s %s", m.ID, m.State, m.Version)
		}
		if got := strings.TrimSpace(get(m.Port, "/version")); got != "1.1.0" {
			t.Errorf("%s answers version %q", m.ID, got)
		}
	}
	if _, _, code := f.steward("plan", "-detailed-exitcode"); code != 0 {
		t.Error("plan after the rollout is not empty")
	}
}

func TestFailingCanaryHaltsTheRollout(t *testing.T) {
	pkgs := examplePackages(t)
	f := newFleet(t, 20)
	testRollout := strings.Replace(testRollout, `"20s"`, `"4s"`, 1)
	f.write("fleet.hcl", rolloutSpec(pkgs, "1.1.0", testRollout, sixMerchants()...))
	if out, errs, code := f.steward("apply", "-auto-approve"); code != 0 {
		t.Fatalf("%s%s", out, errs)
	}
	before := f.status()
	f.write("fleet.hcl", rolloutSpec(pkgs, "1.2.0", testRollout, sixMerchants()...))
	out, _, code := f.steward("apply", "-auto-approve")
	if code != exitError {
		t.Fatalf("apply of a failing release: exit %d\n%s", code, out)
	}
	if !strings.Contains(out, "m1: upgrade failed") || !strings.Contains(out, "rolled back to 1.1.0") {
		t.Errorf("apply output does not tell the canary's story:\n%s", out)
	}
	after := f.status()
	for _, m := range after.Merchants {
		if m.Version != "1.1.0" || m.State != "running" || !m.Healthy {
			t.Errorf("%s is %s on %s (healthy %v), want running 1.1.0", m.ID, m.State, m.Version, m.Healthy)
		}
		if m.ID != "m1" && m.PID != f.merchant(before, m.ID).PID {
			t.Errorf("%s was touched although the canary failed", m.ID)
		}
	}
	if len(after.Rollouts) != 1 || !after.Rollouts[0].Halted || !strings.Contains(after.Rollouts[0].Reason, "canary m1 failed") {
		t.Errorf("status rollouts = %+v", after.Rollouts)
	}
	text, _, _ := f.steward("status")
	if !strings.Contains(text, "rollout of invoicing 1.2.0 HALTED") {
		t.Errorf("status text does not show the halt:\n%s", text)
	}
	plan, _, _ := f.steward("plan")
	if !strings.Contains(plan, "! m2  hold  rollout of invoicing 1.2.0 halted: canary m1 failed") || !strings.Contains(plan, "! m1  hold  version 1.2.0 failed on this merchant") {
		t.Errorf("plan does not show the halt:\n%s", plan)
	}
	hist, _, _ := f.steward("history", "m1")
	if !strings.Contains(hist, "1.2.0 failed its health gate") || !strings.Contains(hist, "GET /health") {
		t.Errorf("history does not say why:\n%s", hist)
	}
	// Fixing the spec (back to 1.1.0, a version that works) resumes: no
	// changes are left and no merchant is held.
	f.write("fleet.hcl", rolloutSpec(pkgs, "1.1.0", testRollout, sixMerchants()...))
	if plan, _, code := f.steward("plan", "-detailed-exitcode"); code != 0 || strings.Contains(plan, "hold") {
		t.Errorf("after fixing the spec: exit %d\n%s", code, plan)
	}
}

func TestBadChecksumIsRefusedBeforeAnythingStops(t *testing.T) {
	pkgs := copyPackages(t)
	f := newFleet(t, 10)
	f.write("fleet.hcl", rolloutSpec(pkgs, "1.0.0", testRollout, merchantBlock("m1")))
	if out, errs, code := f.steward("apply", "-auto-approve"); code != 0 {
		t.Fatalf("%s%s", out, errs)
	}
	before := f.merchant(f.status(), "m1")
	// Corrupt the 1.1.0 tarball: its digest no longer matches.
	tb := filepath.Join(pkgs, "invoicing-1.1.0.tar.gz")
	b, _ := os.ReadFile(tb)
	b[len(b)/2] ^= 0xff
	os.WriteFile(tb, b, 0o644)
	f.write("fleet.hcl", rolloutSpec(pkgs, "1.1.0", testRollout, merchantBlock("m1")))
	out, _, code := f.steward("apply", "-auto-approve")
	if code != exitError || !strings.Contains(out, "sha256") || !strings.Contains(out, "nothing was stopped") {
		t.Fatalf("apply with a corrupt tarball: exit %d\n%s", code, out)
	}
	after := f.merchant(f.status(), "m1")
	if after.PID != before.PID || after.Version != "1.0.0" || after.State != "running" {
		t.Errorf("m1 changed: %+v", after)
	}
}

func TestRollbackCommand(t *testing.T) {
	pkgs := examplePackages(t)
	f := newFleet(t, 10)
	f.write("fleet.hcl", rolloutSpec(pkgs, "1.0.0", testRollout, merchantBlock("m1")))
	if out, errs, code := f.steward("apply", "-auto-approve"); code != 0 {
		t.Fatalf("%s%s", out, errs)
	}
	f.write("fleet.hcl", rolloutSpec(pkgs, "1.1.0", testRollout, merchantBlock("m1")))
	if out, errs, code := f.steward("apply", "-auto-approve"); code != 0 {
		t.Fatalf("%s%s", out, errs)
	}
	out, errs, code := f.steward("rollback", "m1")
	if code != 0 || !strings.Contains(out, "rolled back 1.1.0 → 1.0.0") {
		t.Fatalf("rollback: exit %d\n%s%s", code, out, errs)
	}
	m := f.merchant(f.status(), "m1")
	if m.Version != "1.0.0" || strings.TrimSpace(get(m.Port, "/version")) != "1.0.0" {
		t.Errorf("after rollback: %+v", m)
	}
	// The rollback sticks while the specs still ask for 1.1.0.
	if plan, _, code := f.steward("plan", "-detailed-exitcode"); code != 0 {
		t.Errorf("plan after rollback wants changes:\n%s", plan)
	}
	hist, _, _ := f.steward("history", "m1")
	if !strings.Contains(hist, "rollback") || !strings.Contains(hist, "steward rollback: version 1.1.0 → 1.0.0") {
		t.Errorf("history:\n%s", hist)
	}
}

func TestDaemonKilledMidUpgradeConverges(t *testing.T) {
	pkgs := examplePackages(t)
	f := newFleet(t, 10)
	slow := strings.Replace(testRollout, `"500ms"`, `"3s"`, 1)
	f.write("fleet.hcl", rolloutSpec(pkgs, "1.0.0", slow, merchantBlock("m1"), merchantBlock("m2")))
	d := f.startDaemon()
	f.waitRunning(60*time.Second, "m1", "m2")
	f.write("fleet.hcl", rolloutSpec(pkgs, "1.1.0", slow, merchantBlock("m1"), merchantBlock("m2")))
	syscall.Kill(d.cmd.Process.Pid, syscall.SIGHUP)
	// Wait until the canary's new version runs but has not passed its gate.
	waitFor(t, 30*time.Second, "an upgrade in its health gate", func() bool {
		st := readState(t, f)
		m := st.Merchants["m1"]
		return m != nil && m.Change != nil && m.Change.From == "1.0.0" && m.Change.To == "1.1.0" && m.Candidate != nil && m.Candidate.PID != 0
	})
	d.stop(t, syscall.SIGKILL)
	f.startDaemon()
	waitFor(t, 60*time.Second, "both merchants on 1.1.0, healthy", func() bool {
		doc := f.status()
		for _, id := range []string{"m1", "m2"} {
			m := f.merchant(doc, id)
			if m.Version != "1.1.0" || m.State != "running" || !m.Healthy {
				return false
			}
		}
		st := readState(t, f)
		return st.Merchants["m1"].Change == nil && st.Merchants["m2"].Change == nil
	})
	for id, pids := range f.merchantPIDs() {
		if len(pids) != 1 {
			t.Errorf("merchant %s has %d processes: %v", id, len(pids), pids)
		}
	}
	for _, m := range f.status().Merchants {
		if holder := portHolder(m.Port); holder != m.PID {
			t.Errorf("%s: port %d is held by pid %d, status says %d", m.ID, m.Port, holder, m.PID)
		}
	}
}

// An apply told to stop (Ctrl-C) in the middle of an upgrade has not seen
// the version fail: nothing is undone, marked bad or counted against the
// rollout, the merchant keeps a process, and the next apply finishes.
func TestInterruptedApplyFinishesLater(t *testing.T) {
	pkgs := examplePackages(t)
	f := newFleet(t, 10)
	slow := strings.Replace(testRollout, `"500ms"`, `"3s"`, 1)
	f.write("fleet.hcl", rolloutSpec(pkgs, "1.0.0", slow, merchantBlock("m1"), merchantBlock("m2")))
	if out, errs, code := f.steward("apply", "-auto-approve"); code != 0 {
		t.Fatalf("apply 1.0.0: exit %d\n%s%s", code, out, errs)
	}
	f.write("fleet.hcl", rolloutSpec(pkgs, "1.1.0", slow, merchantBlock("m1"), merchantBlock("m2")))
	a := f.startSteward(nil, "apply", "-auto-approve", "-config", f.config)
	waitFor(t, 30*time.Second, "the canary's new version in its health gate", func() bool {
		m := readState(t, f).Merchants["m1"]
		return m != nil && m.Change != nil && m.Change.To == "1.1.0" && m.Candidate != nil && m.Candidate.PID != 0
	})
	a.stop(t, syscall.SIGINT)
	if code := a.cmd.ProcessState.ExitCode(); code != 1 {
		t.Errorf("interrupted apply: exit %d, want 1", code)
	}
	st := readState(t, f)
	m1 := st.Merchants["m1"]
	if m1.Change == nil || m1.Change.Undo || slices.Contains(m1.BadVersions, "1.1.0") {
		t.Fatalf("after the interruption m1's change is %+v, bad versions %v; want the change kept, not undone or failed", m1.Change, m1.BadVersions)
	}
	for _, ro := range st.Rollouts {
		if ro.Halted || len(ro.Failed) > 0 {
			t.Fatalf("rollout %s counts a failure after an interruption: %+v", ro.Key(), ro)
		}
	}
	if len(f.merchantPIDs()["m1"]) == 0 {
		t.Fatal("m1 has no process after the interruption")
	}
	if out, errs, code := f.steward("apply", "-auto-approve"); code != 0 {
		t.Fatalf("apply after the interruption: exit %d\n%s%s", code, out, errs)
	}
	for _, id := range []string{"m1", "m2"} {
		if m := f.merchant(f.status(), id); m.Version != "1.1.0" || m.State != "running" {
			t.Errorf("%s after the second apply: %+v", id, m)
		}
	}
}

func readState(t *testing.T, f *fleet) *state.Snapshot {
	t.Helper()
	store, err := state.OpenFile(filepath.Join(f.dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	st, err := store.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st
}
