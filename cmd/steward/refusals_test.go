package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestForeignProcessOnThePortIsRefused(t *testing.T) {
	pkgs := examplePackages(t)
	f := newFleet(t, 10)
	// Something that is not the merchant listens on its fixed port.
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", f.low+5))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f.write("fleet.hcl", fleetSpec(pkgs, merchantBlock("alpha", fmt.Sprintf("  port = %d", f.low+5))))
	out, _, code := f.steward("apply", "-auto-approve")
	if code != exitError || !strings.Contains(out, fmt.Sprintf("port %d is held by pid %d", f.low+5, os.Getpid())) {
		t.Fatalf("apply onto a taken port: exit %d\n%s", code, out)
	}
	m := f.merchant(f.status(), "alpha")
	if m.State != "failed" || m.PID != 0 || !strings.Contains(m.LastError, "free the port") {
		t.Errorf("alpha = %+v", m)
	}
	hist, _, _ := f.steward("history", "alpha")
	if !strings.Contains(hist, "is held by pid") {
		t.Errorf("no event says why:\n%s", hist)
	}
	// Once the port is free, the next apply starts it.
	ln.Close()
	if out, errs, code := f.steward("apply", "-auto-approve"); code != 0 {
		t.Fatalf("apply after freeing the port: %s%s", out, errs)
	}
}

func TestStaleSavedPlanIsRefused(t *testing.T) {
	pkgs := examplePackages(t)
	f := newFleet(t, 10)
	f.write("fleet.hcl", fleetSpec(pkgs, merchantBlock("alpha")))
	planFile := filepath.Join(f.dir, "alpha.plan")
	if _, errs, code := f.steward("plan", "-out", planFile); code != 0 {
		t.Fatal(errs)
	}
	// The state moves on (another apply), so the saved plan is stale.
	if out, errs, code := f.steward("apply", "-auto-approve"); code != 0 {
		t.Fatalf("%s%s", out, errs)
	}
	_, errs, code := f.steward("apply", planFile)
	if code != exitError || !strings.Contains(errs, "the saved plan is stale") {
		t.Fatalf("stale saved plan: exit %d: %s", code, errs)
	}
	// A fresh saved plan with changed specs is refused too.
	if _, errs, code := f.steward("plan", "-out", planFile); code != 0 {
		t.Fatal(errs)
	}
	f.write("fleet.hcl", fleetSpec(pkgs, merchantBlock("alpha"), merchantBlock("bravo")))
	_, errs, code = f.steward("apply", planFile)
	if code != exitError || !strings.Contains(errs, "made from specs") {
		t.Fatalf("saved plan after a spec change: exit %d: %s", code, errs)
	}
	// A current one applies.
	if _, errs, code := f.steward("plan", "-out", planFile); code != 0 {
		t.Fatal(errs)
	}
	if out, errs, code := f.steward("apply", planFile); code != 0 || !strings.Contains(out, "1 created") {
		t.Fatalf("current saved plan: exit %d\n%s%s", code, out, errs)
	}
}
