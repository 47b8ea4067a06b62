package main

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"database/sql"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"steward/internal/pgtest"
)

// dbQuery runs a query returning one integer on a merchant's database.
func (f *fleet) dbQuery(t *testing.T, merchant, query string) int64 {
	t.Helper()
	dsn := pgtest.DSN()
	dsn = strings.Replace(dsn, "/postgres?", "/"+f.dbPrefix+"_"+merchant+"?", 1)
	db, err := sql.Open("postgres", dsn+"&connect_timeout=5")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var v int64
	if err := db.QueryRowContext(ctx, query).Scan(&v); err != nil {
		t.Fatalf("%s on %s: %v", query, merchant, err)
	}
	return v
}

const schemaQuery = `SELECT coalesce(max(version), 0) FROM schema_migrations`

func schemaRollout(timeout string) string {
	return strings.Replace(testRollout, `"20s"`, fmt.Sprintf("%q", timeout), 1) + "\nbackup {\n  keep = 3\n}\n"
}

func TestSchemaMigratesOnUpgradeAndBackOnRollback(t *testing.T) {
	pkgs := examplePackages(t)
	f := newFleet(t, 10)
	ro := schemaRollout("4s")
	ms := []string{merchantBlock("m1"), merchantBlock("m2")}
	f.write("fleet.hcl", rolloutSpec(pkgs, "1.0.0", ro, ms...))
	if out, errs, code := f.steward("apply", "-auto-approve"); code != 0 {
		t.Fatalf("%s%s", out, errs)
	}
	for _, m := range f.status().Merchants {
		if m.Schema == nil || *m.Schema != 1 || f.dbQuery(t, m.ID, schemaQuery) != 1 {
			t.Fatalf("%s after the first apply: schema %v", m.ID, m.Schema)
		}
	}
	// 1.0.0 → 1.1.0 migrates each database once, after a backup.
	f.write("fleet.hcl", rolloutSpec(pkgs, "1.1.0", ro, ms...))
	if plan, _, _ := f.steward("plan"); !strings.Contains(plan, "version 1.0.0 → 1.1.0 (channel stable), schema 1 → 2 (migrate)") {
		t.Errorf("plan does not show the schema change:\n%s", plan)
	}
	if out, errs, code := f.steward("apply", "-auto-approve"); code != 0 {
		t.Fatalf("%s%s", out, errs)
	}
	for _, m := range f.status().Merchants {
		if m.Version != "1.1.0" || m.Schema == nil || *m.Schema != 2 || f.dbQuery(t, m.ID, schemaQuery) != 2 {
			t.Errorf("%s after the upgrade: %s, schema %v", m.ID, m.Version, m.Schema)
		}
		hist, _, _ := f.steward("history", m.ID, "-o", "json")
		if n := strings.Count(hist, `"reason": "schema 1 → 2"`); n != 1 {
			t.Errorf("%s: %d migrations 1 → 2 recorded, want 1:\n%s", m.ID, n, hist)
		}
		if !strings.Contains(hist, `"action": "backup"`) || !strings.Contains(hist, ".dump") {
			t.Errorf("%s: no backup in history:\n%s", m.ID, hist)
		}
	}
	// The failing 1.2.0: the canary migrates to 3, fails its gate, is
	// migrated back down to 2 and 1.1.0 serves again.
	f.write("fleet.hcl", rolloutSpec(pkgs, "1.2.0", ro, ms...))
	out, _, code := f.steward("apply", "-auto-approve")
	if code != exitError || !strings.Contains(out, "rolled back to 1.1.0") {
		t.Fatalf("apply of 1.2.0: exit %d\n%s", code, out)
	}
	m1 := f.merchant(f.status(), "m1")
	if m1.Version != "1.1.0" || m1.State != "running" || f.dbQuery(t, "m1", schemaQuery) != 2 {
		t.Errorf("m1 after the failed 1.2.0: %s %s, schema %d", m1.State, m1.Version, f.dbQuery(t, "m1", schemaQuery))
	}
	if f.dbQuery(t, "m1", `SELECT count(*) FROM information_schema.tables WHERE table_name = 'payments'`) != 0 {
		t.Error("1.2.0's payments table is still there")
	}
	if v := strings.TrimSpace(get(m1.Port, "/version")); v != "1.1.0" {
		t.Errorf("m1 serves %q", v)
	}
	hist, _, _ := f.steward("history", "m1")
	if !strings.Contains(hist, "schema 2 → 3") || !strings.Contains(hist, "schema 3 → 2 (down)") {
		t.Errorf("m1's history lacks the migrations both ways:\n%s", hist)
	}
	if f.dbQuery(t, "m2", schemaQuery) != 2 {
		t.Error("m2's database was migrated although the canary failed")
	}

	// A schema changed by hand shows as drift.
	f.write("fleet.hcl", rolloutSpec(pkgs, "1.1.0", ro, ms...))
	f.dbQuery(t, "m2", `WITH x AS (INSERT INTO schema_migrations (version) VALUES (7) RETURNING version) SELECT version FROM x`)
	plan, _, _ := f.steward("plan")
	if !strings.Contains(plan, "! m2  hold  schema drift: database "+f.dbPrefix+"_m2 is at schema 7, but invoicing 1.1.0 needs 2") {
		t.Errorf("plan does not show the drift:\n%s", plan)
	}
}

func TestNoDownMigrationStopsShortAndBackupRestores(t *testing.T) {
	pkgs := noDownPackages(t)
	f := newFleet(t, 10)
	ro := schemaRollout("4s")
	f.write("fleet.hcl", rolloutSpec(pkgs, "1.1.0", ro, merchantBlock("m1")))
	if out, errs, code := f.steward("apply", "-auto-approve"); code != 0 {
		t.Fatalf("%s%s", out, errs)
	}
	f.dbQuery(t, "m1", `WITH x AS (INSERT INTO invoices (merchant, amount_cents) VALUES ('m1', 1250) RETURNING id) SELECT count(*) FROM x`)
	f.write("fleet.hcl", rolloutSpec(pkgs, "1.2.0", ro, merchantBlock("m1")))
	out, _, code := f.steward("apply", "-auto-approve")
	if code != exitError || !strings.Contains(out, "declares no down migration") || !strings.Contains(out, "-restore-backup") || !strings.Contains(out, ".dump") {
		t.Fatalf("apply of 1.2.0 without a down migration: exit %d\n%s", code, out)
	}
	m := f.merchant(f.status(), "m1")
	if m.PID != 0 || m.State != "failed" || !strings.Contains(m.LastError, "restore the backup") {
		t.Errorf("m1 should be stopped short with the backup named: %+v", m)
	}
	if f.dbQuery(t, "m1", schemaQuery) != 3 {
		t.Error("the database is not at 1.2.0's schema any more")
	}
	out, errs, code := f.steward("rollback", "m1", "-to", "1.1.0", "-restore-backup")
	if code != 0 {
		t.Fatalf("rollback -restore-backup: exit %d\n%s%s", code, out, errs)
	}
	m = f.merchant(f.status(), "m1")
	if m.State != "running" || m.Version != "1.1.0" || strings.TrimSpace(get(m.Port, "/version")) != "1.1.0" {
		t.Errorf("after the restore: %+v", m)
	}
	if f.dbQuery(t, "m1", schemaQuery) != 2 || f.dbQuery(t, "m1", `SELECT count(*) FROM invoices`) != 1 {
		t.Error("the restored database is not the backup's")
	}
	hist, _, _ := f.steward("history", "m1")
	if !strings.Contains(hist, "restore") {
		t.Errorf("history lacks the restore:\n%s", hist)
	}
}

// extract reads one file from a package tarball.
func extract(t *testing.T, tarball, name string) string {
	t.Helper()
	fh, err := os.Open(tarball)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	gz, err := gzip.NewReader(fh)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("%s not in %s: %v", name, tarball, err)
		}
		if h.Name == name {
			b, _ := io.ReadAll(tr)
			return string(b)
		}
	}
}

func TestMerchantsSharingADatabaseNeverMigrateAtOnce(t *testing.T) {
	app := extract(t, filepath.Join(examplePackages(t), "invoicing-1.0.0.tar.gz"), "bin/invoicing")
	shared := t.TempDir()
	os.Chmod(shared, 0o777)
	os.Chmod(filepath.Dir(shared), 0o755)
	// The migration records when it runs; mkdir fails if another copy is
	// inside it at the same time.
	migrate := fmt.Sprintf(`#!/bin/sh
d=%[1]s
if ! mkdir "$d/inside" 2>/dev/null; then echo OVERLAP >> "$d/log"; exit 1; fi
echo "start $MERCHANT" >> "$d/log"
sleep 1
echo 1 > "$d/schema"
echo "end $MERCHANT" >> "$d/log"
rmdir "$d/inside"
`, shared)
	version := fmt.Sprintf("#!/bin/sh\ncat %s/schema 2>/dev/null || echo 0\n", shared)
	pkgs := filepath.Join(t.TempDir(), "pkgs")
	writeTarball(t, pkgs, "ledger", "1.0.0", map[string]string{
		"package.hcl": `command = ["bin/invoicing", "--port=${port}"]
health { http = "/health" }
schema {
  version = 1
  migrate = ["bin/migrate"]
  command = ["bin/version"]
}
`,
		"bin/invoicing": app, "bin/migrate": migrate, "bin/version": version})
	f := newFleet(t, 10)
	spec := fleetSpec(pkgs) + fmt.Sprintf(`
merchant "one" {
  package = "ledger"
  version = "1.0.0"
  db_name = "%[1]s_shared"
}

merchant "two" {
  package = "ledger"
  version = "1.0.0"
  db_name = "%[1]s_shared"
}
`, f.dbPrefix)
	spec = strings.Replace(spec, `package "invoicing"`, `package "ledger"`, 1)
	spec = strings.Replace(spec, `package  = "invoicing"`, `package  = "ledger"`, 1)
	if err := os.WriteFile(filepath.Join(f.specs, "fleet.hcl"), []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	// Both merchants are created in parallel and both need the migration.
	if out, errs, code := f.steward("apply", "-auto-approve", "-parallel", "2"); code != 0 {
		t.Fatalf("%s%s", out, errs)
	}
	log, _ := os.ReadFile(filepath.Join(shared, "log"))
	if strings.Contains(string(log), "OVERLAP") {
		t.Fatalf("two migrations of one database ran at once:\n%s", log)
	}
	if n := strings.Count(string(log), "start"); n != 1 {
		t.Errorf("the shared database was migrated %d times:\n%s", n, log)
	}
	f.waitRunning(30*time.Second, "one", "two")
}

// A rollback whose older version fails its gate after the down migration
// returns to the newer version with the database migrated up again, not
// left on a schema the newer version cannot start on.
func TestFailedRollbackMigratesBackUp(t *testing.T) {
	src := examplePackages(t)
	pkgs := t.TempDir()
	os.Chmod(pkgs, 0o755)
	for _, v := range []string{"1.0.0", "1.1.0"} {
		tarball := filepath.Join(src, "invoicing-"+v+".tar.gz")
		files := map[string]string{"package.hcl": extract(t, tarball, "package.hcl"), "bin/invoicing": extract(t, tarball, "bin/invoicing")}
		if v == "1.0.0" {
			// Serves, then dies a second later: during min_healthy_time.
			files["package.hcl"] = strings.Replace(files["package.hcl"], `command = ["bin/invoicing", "--port=${port}"]`, `command = ["bin/start", "${port}"]`, 1)
			files["bin/start"] = "#!/bin/sh\n(sleep 1; kill -9 $$) &\nexec \"$(dirname \"$0\")/invoicing\" --port=\"$1\"\n"
		}
		writeTarball(t, pkgs, "invoicing", v, files)
	}
	f := newFleet(t, 5)
	rollout := "rollout {\n  health_deadline  = \"10s\"\n  min_healthy_time = \"3s\"\n}"
	f.write("fleet.hcl", rolloutSpec(pkgs, "1.1.0", rollout, merchantBlock("m1")))
	if out, errs, code := f.steward("apply", "-auto-approve"); code != 0 {
		t.Fatalf("apply: %s%s", out, errs)
	}
	if v := f.dbQuery(t, "m1", schemaQuery); v != 2 {
		t.Fatalf("schema after 1.1.0: %d", v)
	}
	out, errs, code := f.steward("rollback", "m1", "-to", "1.0.0")
	if code != exitError {
		t.Fatalf("rollback to a 1.0.0 that dies: exit %d\n%s%s", code, out, errs)
	}
	m := f.merchant(f.status(), "m1")
	if m.State != "running" || m.Version != "1.1.0" || strings.TrimSpace(get(m.Port, "/version")) != "1.1.0" {
		t.Errorf("m1 after the failed rollback: %+v\n%s%s", m, out, errs)
	}
	if v := f.dbQuery(t, "m1", schemaQuery); v != 2 {
		t.Errorf("schema after the failed rollback: %d, want 2 (1.1.0's)\n%s", v, f.history("m1"))
	}
}
