package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"steward/internal/pgtest"
)

// databaseExists reports whether the test server has database name.
func databaseExists(t *testing.T, name string) bool {
	t.Helper()
	db, err := sql.Open("postgres", pgtest.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var ok bool
	if err := db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

// steward destroy: refused without a terminal or while a daemon runs
// (nothing changes); with -auto-approve -drop-databases it stops every
// merchant by its recorded pid, backs up each database to the file it
// names, drops it, and forgets the fleet; run again, it has nothing left
// to do.
func TestDestroy(t *testing.T) {
	pkgs := examplePackages(t)
	f := newFleet(t, 10)
	f.write("fleet.hcl", fleetSpec(pkgs, merchantBlock("alpha"), merchantBlock("bravo")))
	if out, errs, code := f.steward("apply", "-auto-approve"); code != 0 {
		t.Fatalf("apply: %s%s", out, errs)
	}
	doc := f.status()
	pids := map[string]int{}
	for _, m := range doc.Merchants {
		pids[m.ID] = m.PID
	}

	// No terminal, no -auto-approve: it shows the plan and changes nothing.
	out, errs, code := f.steward("destroy", "-drop-databases")
	if code != exitError || !strings.Contains(out, "Plan: 2 merchants to stop and forget, 2 databases to back up and drop.") || !strings.Contains(errs, "not destroying: confirmation needs a terminal") {
		t.Fatalf("destroy without a terminal: exit %d\n%s%s", code, out, errs)
	}
	if strings.Contains(out, "stopped and forgotten\n") {
		t.Errorf("destroy reports merchants stopped before it asked:\n%s", out)
	}
	// A daemon runs: refused.
	d := f.startDaemon()
	f.waitAPI()
	if out, errs, code := f.steward("destroy", "-auto-approve"); code != exitError || !strings.Contains(errs, "daemon is running") {
		t.Fatalf("destroy with a daemon: exit %d\n%s%s", code, out, errs)
	}
	d.stop(t, syscall.SIGTERM)
	for id, pid := range pids {
		if syscall.Kill(pid, 0) != nil {
			t.Fatalf("%s (pid %d) was stopped by a refused destroy", id, pid)
		}
	}

	out, errs, code = f.steward("destroy", "-auto-approve", "-drop-databases")
	if code != 0 {
		t.Fatalf("destroy: exit %d\n%s%s", code, out, errs)
	}
	for id, pid := range pids {
		if syscall.Kill(pid, 0) == nil {
			t.Errorf("%s (pid %d) still runs after destroy", id, pid)
		}
		db := f.dbPrefix + "_" + id
		if databaseExists(t, db) {
			t.Errorf("database %s still exists", db)
		}
		m := regexp.MustCompile(fmt.Sprintf(`database %s: dropped; its backup is (\S+)\n`, regexp.QuoteMeta(db))).FindStringSubmatch(out)
		if m == nil {
			t.Errorf("destroy does not name %s's backup:\n%s", db, out)
			continue
		}
		if st, err := os.Stat(m[1]); err != nil || st.Size() == 0 || !strings.Contains(m[1], "-schema1.dump") {
			t.Errorf("%s's backup %s: %v (want a non-empty dump of schema 1, 1.0.0's)", db, m[1], err)
		}
	}
	if doc := f.status(); len(doc.Merchants) != 2 || doc.Merchants[0].PID != 0 || doc.Merchants[0].Restarts != 0 {
		t.Errorf("status after destroy (the specs still name both, steward knows none): %+v", doc.Merchants)
	}
	out, errs, code = f.steward("destroy", "-auto-approve", "-drop-databases")
	if code != 0 || !strings.Contains(out, "does not exist; nothing to drop") {
		t.Errorf("a second destroy: exit %d\n%s%s", code, out, errs)
	}
}

// A process a merchant starts and detaches from itself (setsid) outlives
// the merchant's process: destroy says so with its pid instead of
// "stopped", and a restart does not adopt it as the merchant.
func TestProcessLeftBehindIsReported(t *testing.T) {
	if _, err := exec.LookPath("setsid"); err != nil {
		t.Skip("no setsid")
	}
	app := extract(t, filepath.Join(examplePackages(t), "invoicing-1.0.0.tar.gz"), "bin/invoicing")
	pkgs := t.TempDir()
	os.Chmod(pkgs, 0o755)
	writeTarball(t, pkgs, "detach", "1.0.0", map[string]string{
		"package.hcl":   "command = [\"bin/start\", \"${port}\"]\nhealth { http = \"/health\" }\n",
		"bin/invoicing": app,
		"bin/start":     "#!/bin/sh\nsetsid \"$(dirname \"$0\")/invoicing\" --port=\"$1\" </dev/null >/dev/null 2>&1 &\nexec sleep 3600\n",
	})
	f := newFleet(t, 5)
	f.write("fleet.hcl", fmt.Sprintf("package \"detach\" {\n  source = %q\n  channel \"s\" { version = \"1.0.0\" }\n}\nmerchant \"solo\" {\n  package = \"detach\"\n  channel = \"s\"\n}\n", pkgs))
	if out, errs, code := f.steward("apply", "-auto-approve"); code != 0 {
		t.Fatalf("apply: %s%s", out, errs)
	}
	m := f.merchant(f.status(), "solo")
	holder := portHolder(m.Port)
	if holder == 0 || holder == m.PID {
		t.Fatalf("the detached server does not hold port %d (holder %d, merchant pid %d)", m.Port, holder, m.PID)
	}
	t.Cleanup(func() { syscall.Kill(holder, syscall.SIGKILL) })

	out, errs, code := f.steward("restart", "solo")
	if code != exitError || !strings.Contains(out+errs, fmt.Sprintf("still held by pid %d", holder)) {
		t.Errorf("restart with a process left behind: exit %d\n%s%s", code, out, errs)
	}
	out, errs, code = f.steward("destroy", "-auto-approve")
	if code != exitError || !strings.Contains(out, fmt.Sprintf("port %d is still held by pid %d", m.Port, holder)) {
		t.Errorf("destroy with a process left behind: exit %d\n%s%s", code, out, errs)
	}
}
