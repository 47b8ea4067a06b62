package dbadmin

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"steward/internal/pgtest"
)

// recordCommands records the commands Dump and Restore run.
func recordCommands(t *testing.T) func() []*exec.Cmd {
	var (
		mu   sync.Mutex
		cmds []*exec.Cmd
	)
	cmdHook = func(c *exec.Cmd) {
		mu.Lock()
		cmds = append(cmds, c)
		mu.Unlock()
	}
	t.Cleanup(func() { cmdHook = nil })
	return func() []*exec.Cmd {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(cmds)
	}
}

// conninfoRE matches a libpq key=value pair on a command line.
var conninfoRE = regexp.MustCompile(`(^|[\s-])(host|hostaddr|port|user|password|dbname|sslmode)=\S`)

// checkCommandLines fails when a command line holds connection details:
// they are visible to every user in ps.
func checkCommandLines(t *testing.T, cmds []*exec.Cmd, dbName string) {
	t.Helper()
	if len(cmds) == 0 {
		t.Fatal("no commands recorded")
	}
	for _, c := range cmds {
		line := strings.Join(c.Args, " ")
		for _, bad := range []string{testPassword, "postgres://", "postgresql://", "127.0.0.1", dbName} {
			if strings.Contains(line, bad) {
				t.Errorf("command line %q holds %q", line, bad)
			}
		}
		if m := conninfoRE.FindString(line); m != "" {
			t.Errorf("command line %q holds a key=value DSN (%q)", line, m)
		}
		if !slices.Contains(c.Env, "PGPASSWORD="+testPassword) {
			t.Errorf("%s: PGPASSWORD not passed in the environment", c.Args[0])
		}
		if !slices.Contains(c.Env, "PGDATABASE="+dbName) {
			t.Errorf("%s: PGDATABASE=%s not in the environment", c.Args[0], dbName)
		}
		if !slices.ContainsFunc(c.Env, func(s string) bool { return strings.HasPrefix(s, "PGCONNECT_TIMEOUT=") }) {
			t.Errorf("%s: no PGCONNECT_TIMEOUT in the environment", c.Args[0])
		}
	}
}

// snapshot describes a database's content: every table (schema.name with
// its columns) and its row count.
func snapshot(t *testing.T, ctx context.Context, dsn string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	tables := queryStrings(t, ctx, dsn, `SELECT format('%I.%I', table_schema, table_name) FROM information_schema.tables
		WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1`)
	for _, tb := range tables {
		cols := queryStrings(t, ctx, dsn, `SELECT attname FROM pg_attribute WHERE attrelid = '`+tb+`'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`)
		out[tb+"("+strings.Join(cols, ",")+")"] = queryInt(t, ctx, dsn, `SELECT count(*) FROM `+tb)
	}
	return out
}

func TestDumpRestoreRoundTrip(t *testing.T) {
	for _, form := range []string{"url", "key=value"} {
		t.Run(form, func(t *testing.T) {
			_, name, dbURL := newDB(t)
			ctx := testCtx(t)
			dsn := withPassword(t, dbURL)
			if form == "key=value" {
				dsn = keyValue(t, dsn)
			}
			cmds := recordCommands(t)
			execSQL(t, ctx, dbURL,
				`CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, note text)`,
				`CREATE TABLE invoices (id serial PRIMARY KEY, customer int REFERENCES customers, total numeric)`,
				`CREATE TABLE schema_migrations (version bigint PRIMARY KEY)`,
				`INSERT INTO schema_migrations VALUES (1), (2)`,
				`INSERT INTO customers (name, note) SELECT 'c' || i, 'n' FROM generate_series(1, 50) i`,
				`INSERT INTO invoices (customer, total) SELECT 1 + i % 50, i FROM generate_series(1, 200) i`,
				`CREATE SCHEMA billing`,
				`CREATE TABLE billing.rates (id int)`,
				`INSERT INTO billing.rates VALUES (1)`)
			want := snapshot(t, ctx, dbURL)
			schema, err := SchemaVersion(ctx, dsn, "")
			if err != nil {
				t.Fatal(err)
			}

			dir := t.TempDir()
			start := time.Now()
			b, err := Dump(ctx, dsn, dir, Backup{Merchant: "acme", Version: "1.4.2", Schema: schema})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("dump took %s (%d bytes)", time.Since(start).Round(time.Millisecond), b.Size)
			if b.Time.IsZero() || b.Time.Location() != time.UTC || b.Time.Nanosecond() != 0 {
				t.Errorf("Time = %v, want now in UTC to the second", b.Time)
			}
			wantName := b.Time.Format("20060102T150405Z") + "-1.4.2-schema2.dump"
			if b.Path != filepath.Join(dir, wantName) || b.Merchant != "acme" || b.Version != "1.4.2" || b.Schema != 2 {
				t.Errorf("Backup = %+v, want %s", b, wantName)
			}
			st, err := os.Stat(b.Path)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o600 || st.Size() != b.Size || b.Size == 0 {
				t.Errorf("dump file mode %v size %d, Backup.Size %d", st.Mode().Perm(), st.Size(), b.Size)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 1 {
				t.Errorf("dir holds %d files, want only the dump", len(entries))
			}
			list, err := ListBackups(dir)
			if err != nil || len(list) != 1 || list[0].Path != b.Path || !list[0].Time.Equal(b.Time) || list[0].Schema != 2 || list[0].Version != "1.4.2" || list[0].Size != b.Size {
				t.Errorf("ListBackups = %+v, %v", list, err)
			}

			// Change the schema and the data.
			execSQL(t, ctx, dbURL,
				`CREATE TABLE added_later (id int)`,
				`INSERT INTO added_later VALUES (1)`,
				`ALTER TABLE customers DROP COLUMN note`,
				`INSERT INTO customers (name) VALUES ('late1'), ('late2')`,
				`DELETE FROM invoices WHERE id > 100`,
				`INSERT INTO schema_migrations VALUES (3)`,
				`DROP TABLE billing.rates`,
				`CREATE SCHEMA extra`,
				`CREATE TABLE extra.t (id int)`,
				`CREATE TYPE mood AS ENUM ('ok')`)
			if got := snapshot(t, ctx, dbURL); reflect.DeepEqual(got, want) {
				t.Fatal("the changes changed nothing")
			}

			start = time.Now()
			if err := Restore(ctx, dsn, b.Path); err != nil {
				t.Fatal(err)
			}
			t.Logf("restore took %s", time.Since(start).Round(time.Millisecond))
			if got := snapshot(t, ctx, dbURL); !reflect.DeepEqual(got, want) {
				t.Errorf("after restore:\n got %v\nwant %v", got, want)
			}
			if v, err := SchemaVersion(ctx, dsn, ""); err != nil || v != 2 {
				t.Errorf("schema after restore = %d, %v; want 2", v, err)
			}
			if n := queryInt(t, ctx, dbURL, `SELECT count(*) FROM pg_type WHERE typname = 'mood'`); n != 0 {
				t.Errorf("type created after the dump survived the restore")
			}
			// The public schema is as a new database has it.
			acl := queryStrings(t, ctx, dbURL, `SELECT nspowner::regrole::text || ' ' || nspacl::text FROM pg_namespace WHERE nspname = 'public'`)
			fresh := queryStrings(t, ctx, pgtest.WithDB(t, dbURL, "template1"), `SELECT nspowner::regrole::text || ' ' || nspacl::text FROM pg_namespace WHERE nspname = 'public'`)
			if !reflect.DeepEqual(acl, fresh) {
				t.Errorf("public schema after restore: %v, in template1: %v", acl, fresh)
			}
			// Sequences were restored too: a new row gets a fresh id.
			execSQL(t, ctx, dbURL, `INSERT INTO customers (name) VALUES ('new')`)
			// Restoring twice is fine.
			if err := Restore(ctx, dsn, b.Path); err != nil {
				t.Fatal(err)
			}
			if got := snapshot(t, ctx, dbURL); !reflect.DeepEqual(got, want) {
				t.Errorf("after the second restore:\n got %v\nwant %v", got, want)
			}
			checkCommandLines(t, cmds(), name)
		})
	}
}

func TestDumpAndRestoreErrorsHidePassword(t *testing.T) {
	server, _, dbURL := newDB(t)
	ctx := testCtx(t)
	dir := t.TempDir()
	missing := withPassword(t, pgtest.WithDB(t, server, uniqueName()))
	for _, dsn := range []string{missing, keyValue(t, missing)} {
		_, err := Dump(ctx, dsn, dir, Backup{Version: "1.0.0"})
		if err == nil || !strings.Contains(err.Error(), "does not exist") {
			t.Errorf("Dump of a missing database = %v, want pg_dump's error", err)
		}
		noSecret(t, err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("failed dumps left %d files", len(entries))
	}

	// A file that is not a dump is refused before the database is touched.
	execSQL(t, ctx, dbURL, `CREATE TABLE keep (id int)`)
	bad := filepath.Join(dir, "20250101T000000Z-1.0.0-schema1.dump")
	if err := os.WriteFile(bad, []byte("not a dump"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := Restore(ctx, withPassword(t, dbURL), bad)
	if err == nil {
		t.Fatal("Restore of a bad file succeeded")
	}
	noSecret(t, err)
	t.Logf("Restore of a bad file: %v", err)
	if n := queryInt(t, ctx, dbURL, `SELECT count(*) FROM pg_tables WHERE tablename = 'keep'`); n != 1 {
		t.Error("a failed Restore touched the database")
	}

	// A dump is never replaced.
	pw := withPassword(t, dbURL)
	when := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	if _, err := Dump(ctx, pw, dir, Backup{Version: "2.0.0", Schema: 1, Time: when}); err != nil {
		t.Fatal(err)
	}
	if _, err := Dump(ctx, pw, dir, Backup{Version: "2.0.0", Schema: 1, Time: when}); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("second Dump to the same name = %v, want 'already exists'", err)
	}
	if _, err := Dump(ctx, pw, dir, Backup{Version: "../x"}); err == nil {
		t.Error("Dump accepted a version with a path separator")
	}
	// A cancelled context stops pg_dump.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Dump(cctx, pw, dir, Backup{Version: "3.0.0"}); err == nil {
		t.Error("Dump with a cancelled context succeeded")
	}
}

func TestListBackupsAndPrune(t *testing.T) {
	dir := t.TempDir()
	base := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	// Written out of order; versions with dashes and build metadata.
	for _, i := range []int{3, 0, 4, 1, 2} {
		b := Backup{Version: []string{"1.0.0", "1.1.0-rc.1", "1.1.0", "2.0.0+build-7", "2.0.1"}[i], Schema: int64(10 + i), Time: base.Add(time.Duration(i) * time.Hour)}
		if err := os.WriteFile(filepath.Join(dir, b.FileName()), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, other := range []string{"README", ".20250301T120000Z-9.9.9-schema1.dump.123.tmp", "20250301T120000Z-1.0.0-schemaX.dump"} {
		if err := os.WriteFile(filepath.Join(dir, other), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	os.Mkdir(filepath.Join(dir, "20250301T130000Z-1.0.0-schema1.dump"), 0o700)

	list, err := ListBackups(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 5 {
		t.Fatalf("ListBackups found %d backups, want 5: %+v", len(list), list)
	}
	for i, b := range list {
		if !b.Time.Equal(base.Add(time.Duration(i)*time.Hour)) || b.Schema != int64(10+i) || b.Size != 1 {
			t.Errorf("backup %d = %+v", i, b)
		}
	}
	if list[1].Version != "1.1.0-rc.1" || list[3].Version != "2.0.0+build-7" {
		t.Errorf("versions parsed as %q and %q", list[1].Version, list[3].Version)
	}

	removed, err := Prune(dir, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 3 || removed[0] != list[0].Path || removed[2] != list[2].Path {
		t.Errorf("Prune removed %v", removed)
	}
	left, err := ListBackups(dir)
	if err != nil || len(left) != 2 || left[0].Path != list[3].Path || left[1].Path != list[4].Path {
		t.Errorf("after Prune: %+v, %v", left, err)
	}
	if removed, err := Prune(dir, 5); err != nil || len(removed) != 0 {
		t.Errorf("Prune with fewer backups than keep = %v, %v", removed, err)
	}
	if _, err := Prune(dir, -1); err == nil {
		t.Error("Prune(-1) succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, "README")); err != nil {
		t.Error("Prune removed a file that is not a backup")
	}
	if l, err := ListBackups(filepath.Join(dir, "missing")); err != nil || l != nil {
		t.Errorf("ListBackups of a missing dir = %v, %v", l, err)
	}
	if removed, err := Prune(dir, 0); err != nil || len(removed) != 2 {
		t.Errorf("Prune(0) = %v, %v", removed, err)
	}
}
