package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// An assigned port held by a process that is not a merchant's is skipped:
// the merchant gets the next free one and runs.
func TestAssignedPortSkipsAForeignProcess(t *testing.T) {
	pkgs := examplePackages(t)
	f := newFleet(t, 10)
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", f.low))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f.write("fleet.hcl", fleetSpec(pkgs, merchantBlock("alpha")))
	if out, errs, code := f.steward("apply", "-auto-approve"); code != 0 {
		t.Fatalf("apply: exit %d\n%s%s", code, out, errs)
	}
	if m := f.merchant(f.status(), "alpha"); m.Port != f.low+1 || m.State != "running" {
		t.Errorf("alpha = port %d, %s; want port %d (the first is held by another process), running", m.Port, m.State, f.low+1)
	}
}

// plan shows a suspended merchant and one pinned by steward rollback as
// holds, with why.
func TestPlanShowsSuspendedMerchantsAsHolds(t *testing.T) {
	pkgs := examplePackages(t)
	f := newFleet(t, 10)
	f.write("fleet.hcl", fleetSpec(pkgs, merchantBlock("alpha"), merchantBlock("bravo")))
	if out, errs, code := f.steward("apply", "-auto-approve"); code != 0 {
		t.Fatalf("%s%s", out, errs)
	}
	if out, errs, code := f.steward("suspend", "alpha"); code != 0 {
		t.Fatalf("%s%s", out, errs)
	}
	plan, _, code := f.steward("plan", "-detailed-exitcode")
	if code != 0 || !strings.Contains(plan, `! alpha  hold  suspended: steward leaves it exactly as it is until "steward resume alpha"`) {
		t.Errorf("plan: exit %d\n%s", code, plan)
	}
}

// apply exits 1 when a merchant ended failed, names it, and lists the
// merchants left held with why.
func TestApplyExitsOneWhenAMerchantFailed(t *testing.T) {
	pkgs := examplePackages(t)
	f := newFleet(t, 10)
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", f.low+5))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dead := freePorts(t, 1) // a database server nobody runs
	spec := fleetSpec(pkgs, merchantBlock("alpha"), merchantBlock("bravo", fmt.Sprintf("  port = %d", f.low+5)),
		merchantBlock("cobalt", `  database = "db-gone"`)) + fmt.Sprintf(`
database "db-gone" {
  dsn           = "postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable"
  check_timeout = "500ms"
}
`, dead)
	f.write("fleet.hcl", spec)
	out, _, code := f.steward("apply", "-auto-approve")
	if code != exitError {
		t.Fatalf("apply with a failing merchant: exit %d\n%s", code, out)
	}
	for _, want := range []string{"bravo:", "is held by pid", "1 merchant left held", "! cobalt: new merchant waits: database db-gone is down"} {
		if !strings.Contains(out, want) {
			t.Errorf("apply output lacks %q:\n%s", want, out)
		}
	}
	if m := f.merchant(f.status(), "alpha"); m.State != "running" {
		t.Errorf("alpha is %s", m.State)
	}
}

// status with a spec file that does not parse shows the processes as they
// are, beside the spec error: not every merchant down and missing.
func TestStatusWithBrokenSpecsShowsTheProcesses(t *testing.T) {
	pkgs := examplePackages(t)
	f := newFleet(t, 10)
	f.write("fleet.hcl", fleetSpec(pkgs, merchantBlock("alpha")))
	if out, errs, code := f.steward("apply", "-auto-approve"); code != 0 {
		t.Fatalf("%s%s", out, errs)
	}
	f.write("broken.hcl", "merchant \"bravo\" {\n")
	doc := f.status()
	a := f.merchant(doc, "alpha")
	if doc.SpecError == "" || a.State != "running" || a.PID == 0 || !a.Healthy || !a.InSpecs {
		t.Errorf("status with broken specs: error %q, alpha %+v", doc.SpecError, a)
	}
	text, _, _ := f.steward("status")
	if strings.Contains(text, "not in specs") || !strings.Contains(text, "the specs are invalid") {
		t.Errorf("status text:\n%s", text)
	}
}

// The first hour's texts: what people read must say what happened.
func TestOperatorTexts(t *testing.T) {
	pkgs := examplePackages(t)
	f := newFleet(t, 10)
	f.write("fleet.hcl", fleetSpec(pkgs, merchantBlock("alpha")))
	if out, errs, code := f.steward("apply", "-auto-approve"); code != 0 {
		t.Fatalf("%s%s", out, errs)
	}
	// logs of a merchant that never ran says so, not a raw ENOENT.
	_, errs, code := f.steward("logs", "nobody")
	if code != exitError || strings.Contains(errs, "no such file") || !strings.Contains(errs, "nobody") {
		t.Errorf("logs of an unknown merchant: exit %d: %s", code, errs)
	}
	// logs never leave the runtime root.
	if _, errs, code := f.steward("logs", "../state"); code != exitError || !strings.Contains(errs, "not a valid merchant id") {
		t.Errorf("logs ../state: exit %d: %s", code, errs)
	}
	// history of a merchant steward never knew is an error, not an empty
	// history.
	if _, errs, code := f.steward("history", "alpah"); code != exitError || !strings.Contains(errs, "no record of a merchant of that name") {
		t.Errorf("history of an unknown merchant: exit %d: %s", code, errs)
	}
	// A wrong flag gives the error and where to find help, not the help.
	if _, errs, code := f.steward("plan", "-bogus"); code != exitError || !strings.Contains(errs, `Run "steward plan -help"`) || strings.Contains(errs, "Compares the fleet specs") {
		t.Errorf("plan -bogus: exit %d: %s", code, errs)
	}
	// A missing host config is not "invalid specs".
	_, errs, code = steward(t, nil, "apply", "-config", filepath.Join(f.dir, "missing.hcl"), "-auto-approve")
	if code != exitError || strings.Contains(errs, "specs are invalid") || !strings.Contains(errs, "missing.hcl") {
		t.Errorf("apply with a missing config: exit %d: %s", code, errs)
	}
}

// GET /v1/plan is the same document as plan -o json.
func TestDaemonPlanIsPlanJSON(t *testing.T) {
	pkgs := examplePackages(t)
	f := newFleet(t, 10)
	f.write("fleet.hcl", fleetSpec(pkgs, merchantBlock("alpha")))
	f.startDaemon()
	f.waitAPI()
	f.waitRunning(60*time.Second, "alpha")
	cli, errs, code := f.steward("plan", "-o", "json")
	if code != 0 {
		t.Fatal(errs)
	}
	web := get(f.apiPort, "/v1/plan")
	norm := func(s string) map[string]any {
		var m map[string]any
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			t.Fatalf("plan JSON: %v\n%s", err, s)
		}
		delete(m, "created_at")
		return m
	}
	c, w := norm(cli), norm(web)
	cj, _ := json.Marshal(c)
	wj, _ := json.Marshal(w)
	if string(cj) != string(wj) {
		t.Errorf("plan -o json and GET /v1/plan differ:\n%s\n%s", cj, wj)
	}
	if acts, ok := w["actions"].([]any); !ok || acts == nil {
		t.Errorf("GET /v1/plan has no actions list: %s", wj)
	}
	if _, ok := w["summary"]; !ok {
		t.Errorf("GET /v1/plan has no summary: %s", wj)
	}
	_ = os.Getpid
}

// state { postgres } has no backend yet: validate says so at its line,
// and no command starts on it.
func TestStatePostgresRefused(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "specs"), 0o755)
	config := filepath.Join(dir, "steward.hcl")
	os.WriteFile(config, []byte("source { path = \"specs\" }\nstate {\n  postgres { dsn = \"postgres://u:pg-s3cret@127.0.0.1/x\" }\n}\n"), 0o644)
	for _, cmd := range []string{"validate", "plan", "status"} {
		out, errs, code := steward(t, nil, cmd, "-config", config)
		if code != exitError || !strings.Contains(out+errs, config+":3:3") || !strings.Contains(out+errs, "Unsupported state backend") || strings.Contains(out+errs, "pg-s3cret") {
			t.Errorf("%s: exit %d\n%s%s", cmd, code, out, errs)
		}
	}
}

// Moving a merchant to a port a foreign process holds fails before the
// running process is stopped: the merchant keeps serving on its old port.
func TestMoveToAHeldPortKeepsTheMerchantUp(t *testing.T) {
	pkgs := examplePackages(t)
	f := newFleet(t, 10)
	f.write("fleet.hcl", fleetSpec(pkgs, merchantBlock("alpha", fmt.Sprintf("  port = %d", f.low))))
	if out, errs, code := f.steward("apply", "-auto-approve"); code != 0 {
		t.Fatalf("apply: exit %d\n%s%s", code, out, errs)
	}
	before := f.merchant(f.status(), "alpha")
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", f.low+5))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f.write("fleet.hcl", fleetSpec(pkgs, merchantBlock("alpha", fmt.Sprintf("  port = %d", f.low+5))))
	out, errs, code := f.steward("apply", "-auto-approve")
	if code != exitError || !strings.Contains(out, fmt.Sprintf("port %d is held by pid %d", f.low+5, os.Getpid())) {
		t.Fatalf("apply onto a held port: exit %d\n%s%s", code, out, errs)
	}
	after := f.merchant(f.status(), "alpha")
	if after.PID != before.PID || after.State != "running" || after.Port != f.low || get(f.low, "/health") == "" {
		t.Errorf("alpha after the refused move: %+v (was pid %d on %d)", after, before.PID, f.low)
	}
}

// A version the package source does not have is a hold in plan, with the
// versions it has, before apply tries anything; the merchant keeps running.
func TestMissingVersionIsHeldInPlan(t *testing.T) {
	pkgs := examplePackages(t)
	f := newFleet(t, 10)
	f.write("fleet.hcl", fleetSpec(pkgs, merchantBlock("alpha"), merchantBlock("bravo", `  version = "1.0.0"`)))
	if out, errs, code := f.steward("apply", "-auto-approve"); code != 0 {
		t.Fatalf("apply: exit %d\n%s%s", code, out, errs)
	}
	before := f.merchant(f.status(), "bravo")
	f.write("fleet.hcl", fleetSpec(pkgs, merchantBlock("alpha"), merchantBlock("bravo", `  version = "1.0.9"`), merchantBlock("charlie", `  version = "1.0.9"`)))
	out, _, _ := f.steward("plan")
	for _, want := range []string{
		"! bravo    hold  cannot change to 1.0.9: invoicing-1.0.9.tar.gz not found in " + pkgs + " (have 1.0.0, 1.1.0, 1.2.0)",
		"! charlie  hold  new merchant cannot start: invoicing-1.0.9.tar.gz not found in",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("plan lacks %q:\n%s", want, out)
		}
	}
	// Only a person can fix a missing version: apply says so and exits 1,
	// so that a periodic apply does not report success forever.
	if out, errs, code := f.steward("apply", "-auto-approve"); code != exitError || !strings.Contains(out, "No changes. 2 merchants held") ||
		!strings.Contains(out, "2 merchants cannot converge until you act (bravo, charlie") {
		t.Errorf("apply: exit %d\n%s%s", code, out, errs)
	}
	doc := f.status()
	if m := f.merchant(doc, "bravo"); m.PID != before.PID || m.State != "running" {
		t.Errorf("bravo after the apply: %+v (was pid %d)", m, before.PID)
	}
	for _, id := range []string{"bravo", "charlie"} {
		if m := f.merchant(doc, id); !strings.Contains(m.HoldReason, "invoicing-1.0.9.tar.gz not found") {
			t.Errorf("status of %s says it is held for %q; want the missing package", id, m.HoldReason)
		}
	}
}

// status tells a database it could not reach from one it has not checked,
// checks the databases itself, and forgets one the specs dropped.
func TestStatusChecksTheDatabases(t *testing.T) {
	pkgs := examplePackages(t)
	f := newFleet(t, 10)
	dead := freePorts(t, 1) // a database server nobody runs
	gone := fmt.Sprintf(`
database "db-gone" {
  dsn           = "postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable"
  check_timeout = "500ms"
}
`, dead)
	f.write("fleet.hcl", fleetSpec(pkgs, merchantBlock("alpha"))+gone)
	dbs := func() map[string]databaseStatus {
		out := map[string]databaseStatus{}
		for _, d := range f.status().Databases {
			out[d.Name] = d
		}
		return out
	}
	got := dbs()
	if db, ok := got["db-gone"]; !ok || db.Up || !db.Checked {
		t.Errorf("status of an unreachable database never checked before: %+v (listed: %v); want checked and down", db, ok)
	}
	if db, ok := got["db-main"]; !ok || !db.Up || !db.Checked {
		t.Errorf("status of the test database: %+v (listed: %v); want checked and up", db, ok)
	}
	if out, errs, code := f.steward("apply", "-auto-approve"); code != 0 { // records db-gone as down
		t.Fatalf("apply: exit %d\n%s%s", code, out, errs)
	}
	f.write("fleet.hcl", fleetSpec(pkgs, merchantBlock("alpha")))
	if _, ok := dbs()["db-gone"]; ok {
		t.Error("status still lists a database the specs dropped")
	}
}

// Text from specs, packages and merchants cannot drive the terminal:
// control characters in what steward prints are shown escaped.
func TestOutputEscapesControlCharacters(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "specs"), 0o755)
	config := filepath.Join(dir, "steward.hcl")
	os.WriteFile(config, []byte("source { path = \"specs\" }\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "specs", "f.hcl"), []byte("package \"p\" {\n  source = \"/p\"\n  channel \"s\" { version = \"1.0\x1b]0;PWNED\x07\x1b[2J\" }\n}\n"), 0o644)
	out, errs, code := steward(t, nil, "validate", "-config", config)
	if code != exitError || !strings.Contains(errs, `\x1b]0;PWNED\x07\x1b[2J`) {
		t.Fatalf("validate: exit %d\n%s%s", code, out, errs)
	}
	if strings.ContainsAny(out+errs, "\x1b\x07") {
		t.Errorf("validate printed raw control characters: %q", out+errs)
	}
}
