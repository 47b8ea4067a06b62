package main

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A process of the merchant's own that steward never recorded (a steward
// died between starting it and saving its record) and that runs another
// release is not adopted as the new version: it would answer the new
// version's health gate. It is stopped and the new version started.
func TestUnrecordedProcessOfAnotherReleaseIsNotAdopted(t *testing.T) {
	pkgs := examplePackages(t)
	f := newFleet(t, 10)
	f.write("fleet.hcl", rolloutSpec(pkgs, "1.0.0", testRollout, merchantBlock("m1")))
	if out, errs, code := f.steward("apply", "-auto-approve"); code != 0 {
		t.Fatalf("apply 1.0.0: exit %d\n%s%s", code, out, errs)
	}
	m := f.merchant(f.status(), "m1")
	proc := "/proc/" + strconv.Itoa(m.PID)
	environ, err1 := os.ReadFile(proc + "/environ")
	cmdline, err2 := os.ReadFile(proc + "/cmdline")
	cwd, err3 := os.Readlink(proc + "/cwd")
	exe, err4 := os.Readlink(proc + "/exe")
	if err := firstErr(err1, err2, err3, err4); err != nil {
		t.Fatal(err)
	}
	// The recorded process dies; a clone of it, unrecorded, takes the port.
	syscall.Kill(m.PID, syscall.SIGKILL)
	waitFor(t, 10*time.Second, "m1's port free", func() bool { return portHolder(m.Port) == 0 })
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	clone := exec.Command(exe, args[1:]...)
	clone.Args[0] = args[0]
	clone.Env = strings.Split(strings.TrimRight(string(environ), "\x00"), "\x00")
	clone.Dir = cwd
	clone.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := clone.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { clone.Wait(); close(exited) }()
	t.Cleanup(func() { clone.Process.Kill(); <-exited })
	waitFor(t, 10*time.Second, "the unrecorded 1.0.0 answering", func() bool { return strings.TrimSpace(get(m.Port, "/version")) == "1.0.0" })

	f.write("fleet.hcl", rolloutSpec(pkgs, "1.1.0", testRollout, merchantBlock("m1")))
	if out, errs, code := f.steward("apply", "-auto-approve"); code != 0 {
		t.Fatalf("apply 1.1.0: exit %d\n%s%s", code, out, errs)
	}
	if v := strings.TrimSpace(get(m.Port, "/version")); v != "1.1.0" {
		t.Errorf("m1's port answers version %q after the upgrade, want 1.1.0", v)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Error("the unrecorded 1.0.0 process still runs")
	}
	if got := f.merchant(f.status(), "m1"); got.Version != "1.1.0" || got.PID == clone.Process.Pid {
		t.Errorf("status of m1: %+v (the unrecorded process was pid %d)", got, clone.Process.Pid)
	}
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
