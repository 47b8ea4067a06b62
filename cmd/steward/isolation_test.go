package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// uidOf is the real uid /proc reports for pid.
func uidOf(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] == "Uid:" {
			var u int
			fmt.Sscan(f[1], &u)
			return u
		}
	}
	t.Fatalf("no Uid in /proc/%d/status", pid)
	return 0
}

// With runtime.uids every merchant runs as a user of its own: one cannot
// read another's environment (its database password and secrets), enter
// its directories or signal its process; the ids are kept across
// restarts, and a fleet that ran as one user moves over.
func TestMerchantsRunAsUsersOfTheirOwn(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("users of their own need steward to run as root")
	}
	pkgs := examplePackages(t)
	f := newFleet(t, 10)
	f.write("fleet.hcl", fleetSpec(pkgs, merchantBlock("alpha", `  env = { SECRET = "alpha-s3cret" }`), merchantBlock("bravo")))
	if out, errs, code := f.steward("apply", "-auto-approve"); code != 0 {
		t.Fatalf("apply as one user: %s%s", out, errs)
	}
	shared := uidOf(t, f.merchant(f.status(), "alpha").PID)

	b, _ := os.ReadFile(f.config)
	os.WriteFile(f.config, []byte(strings.Replace(string(b), "runtime {\n", "runtime {\n  uids = \"71000-71099\"\n", 1)), 0o644)
	for _, id := range []string{"alpha", "bravo"} {
		if out, errs, code := f.steward("restart", id); code != 0 {
			t.Fatalf("restart %s: %s%s", id, out, errs)
		}
	}
	doc := f.status()
	alpha, bravo := f.merchant(doc, "alpha"), f.merchant(doc, "bravo")
	ua, ub := uidOf(t, alpha.PID), uidOf(t, bravo.PID)
	if ua == ub || ua < 71000 || ua > 71099 || ub < 71000 || ub > 71099 || ua == shared {
		t.Fatalf("uids: alpha %d, bravo %d (shared before: %d); want two of 71000-71099", ua, ub, shared)
	}
	if get(alpha.Port, "/health") == "" || get(bravo.Port, "/health") == "" {
		t.Fatal("the merchants do not answer as their own users")
	}
	// bravo's user against alpha: its environment, its work dir, its
	// process.
	as := func(uid int, name string, args ...string) error {
		cmd := exec.Command(name, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid), Groups: []uint32{}}}
		out, err := cmd.CombinedOutput()
		if err == nil && strings.Contains(string(out), "alpha-s3cret") {
			return fmt.Errorf("read the secret: %s", out)
		}
		return err
	}
	if err := as(ub, "cat", fmt.Sprintf("/proc/%d/environ", alpha.PID)); err == nil {
		t.Error("bravo's user reads alpha's environment")
	}
	if err := as(ub, "ls", f.dir+"/run/merchants/alpha/work"); err == nil {
		t.Error("bravo's user lists alpha's work dir")
	}
	if err := as(ub, "kill", "-0", fmt.Sprint(alpha.PID)); err == nil {
		t.Error("bravo's user may signal alpha's process")
	}
	// The ids are the merchants' own: a crash and a restart keep them.
	syscall.Kill(alpha.PID, syscall.SIGKILL)
	if out, errs, code := f.steward("apply", "-auto-approve"); code != 0 {
		t.Fatalf("apply after the crash: %s%s", out, errs)
	}
	waitFor(t, 30*time.Second, "alpha running again", func() bool { return f.merchant(f.status(), "alpha").State == "running" })
	if u := uidOf(t, f.merchant(f.status(), "alpha").PID); u != ua {
		t.Errorf("alpha's uid after a restart: %d, was %d", u, ua)
	}
	if logs, _, _ := f.steward("logs", "alpha", "-n", "5"); logs == "" {
		t.Error("alpha's log is empty after it moved users")
	}
}
