package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lib/pq"

	"steward/internal/pgtest"
)

// testPassword is put into test DSNs (trust authentication ignores it) to
// check that no output reveals it.
const testPassword = "s3cret-pw"

// withDBName returns dsn naming database name instead, with testPassword
// when it is a URL without one.
func withDBName(t *testing.T, dsn, name string) string {
	t.Helper()
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		u.Path, u.RawPath = "/"+name, ""
		if u.User != nil {
			if _, ok := u.User.Password(); !ok {
				u.User = url.UserPassword(u.User.Username(), testPassword)
			}
		}
		return u.String()
	}
	if kvDBName.MatchString(dsn) {
		return kvDBName.ReplaceAllString(dsn, "${1}dbname="+name)
	}
	return dsn + " dbname=" + name
}

// newDatabase creates an empty database, dropped at cleanup, and returns
// its DSN and a handle on it.
func newDatabase(t *testing.T) (string, *sql.DB) {
	t.Helper()
	server := pgtest.Server(t)
	name := pgtest.UniqueName("invoicing_test")
	admin, err := sql.Open("postgres", withConnectTimeout(server))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+pq.QuoteIdentifier(name)); err != nil {
		t.Fatal(err)
	}
	pgtest.DropAtCleanup(t, server, name)
	dsn := withDBName(t, server, name)
	db, err := sql.Open("postgres", withConnectTimeout(dsn))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return dsn, db
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// layout describes the schema: its tables and, for each, its columns, like
// "invoices(id,merchant,amount_cents,created_at)".
func layout(t *testing.T, db *sql.DB) []string {
	t.Helper()
	rows, err := db.QueryContext(testCtx(t), `
		SELECT table_name, string_agg(column_name, ',' ORDER BY ordinal_position)
		FROM information_schema.columns WHERE table_schema = 'public'
		GROUP BY table_name ORDER BY table_name`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var table, cols string
		if err := rows.Scan(&table, &cols); err != nil {
			t.Fatal(err)
		}
		out = append(out, table+"("+cols+")")
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// appliedVersions returns the versions in schema_migrations.
func appliedVersions(t *testing.T, db *sql.DB) []int64 {
	t.Helper()
	rows, err := db.QueryContext(testCtx(t), `SELECT version FROM schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

const (
	migrationsTable = "schema_migrations(version,applied_at)"
	invoicesV1      = "invoices(id,merchant,amount_cents,created_at)"
	invoicesV2      = "invoices(id,merchant,amount_cents,created_at,currency)"
	paymentsV3      = "payments(id,invoice_id,amount_cents)"
)

// Up from an empty database to 1, then 2, then 3, one migration each time.
func TestMigrateUpStepByStep(t *testing.T) {
	_, db := newDatabase(t)
	ctx := testCtx(t)
	if v, err := currentVersion(ctx, db); err != nil || v != 0 {
		t.Fatalf("version of an empty database = %d, %v; want 0", v, err)
	}
	steps := []struct {
		target int64
		out    string
		layout []string
	}{
		{1, "migrate: 1 create invoices\nschema at 1\n", []string{invoicesV1, migrationsTable}},
		{2, "migrate: 2 add currency to invoices\nschema at 2\n", []string{invoicesV2, migrationsTable}},
		{3, "migrate: 3 create payments\nschema at 3\n", []string{invoicesV2, paymentsV3, migrationsTable}},
	}
	for _, st := range steps {
		var out strings.Builder
		v, err := migrateUp(ctx, db, st.target, &out)
		if err != nil || v != st.target || out.String() != st.out {
			t.Fatalf("up to %d = %d, %v, output %q; want %q", st.target, v, err, out.String(), st.out)
		}
		if got := layout(t, db); !slices.Equal(got, st.layout) {
			t.Errorf("after up to %d: tables %q, want %q", st.target, got, st.layout)
		}
		if v, err := currentVersion(ctx, db); err != nil || v != st.target {
			t.Errorf("version after up to %d = %d, %v", st.target, v, err)
		}
	}
	if got := appliedVersions(t, db); !slices.Equal(got, []int64{1, 2, 3}) {
		t.Errorf("schema_migrations = %v", got)
	}
}

// Up again changes nothing; up to a lower target leaves the database alone.
func TestMigrateUpIdempotent(t *testing.T) {
	_, db := newDatabase(t)
	ctx := testCtx(t)
	var out strings.Builder
	if _, err := migrateUp(ctx, db, 3, &out); err != nil {
		t.Fatal(err)
	}
	before := layout(t, db)
	for _, tt := range []struct {
		target int64
		out    string
	}{
		{3, "schema at 3\n"},
		{3, "schema at 3\n"},
		{2, "schema at 3, beyond this release's 2: nothing to do\n"},
	} {
		out.Reset()
		v, err := migrateUp(ctx, db, tt.target, &out)
		if err != nil || v != 3 || out.String() != tt.out {
			t.Errorf("up to %d again = %d, %v, %q; want 3 and %q", tt.target, v, err, out.String(), tt.out)
		}
	}
	if got := layout(t, db); !slices.Equal(got, before) {
		t.Errorf("tables changed: %q, were %q", got, before)
	}
	if got := appliedVersions(t, db); !slices.Equal(got, []int64{1, 2, 3}) {
		t.Errorf("schema_migrations = %v", got)
	}
	if _, err := migrateUp(ctx, db, 4, &out); err == nil {
		t.Error("up to 4, which no migration reaches, succeeded")
	}
}

// Down 3 → 1 leaves exactly the version-1 tables; what cannot be done is
// refused without changing anything.
func TestMigrateDown(t *testing.T) {
	_, db := newDatabase(t)
	ctx := testCtx(t)
	if _, err := migrateUp(ctx, db, 3, io.Discard); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	v, err := migrateDown(ctx, db, 3, 1, &out)
	want := "migrate: down 3 create payments\nmigrate: down 2 add currency to invoices\nschema at 1\n"
	if err != nil || v != 1 || out.String() != want {
		t.Fatalf("down to 1 = %d, %v, %q; want 1 and %q", v, err, out.String(), want)
	}
	if got, want := layout(t, db), []string{invoicesV1, migrationsTable}; !slices.Equal(got, want) {
		t.Errorf("after down to 1: tables %q, want %q", got, want)
	}
	if got := appliedVersions(t, db); !slices.Equal(got, []int64{1}) {
		t.Errorf("schema_migrations = %v", got)
	}

	for _, to := range []int64{2, 5, -1} {
		out.Reset()
		if v, err := migrateDown(ctx, db, 3, to, &out); err == nil {
			t.Errorf("down to %d from 1 = %d, %q; want an error", to, v, out.String())
		}
	}
	out.Reset()
	if v, err := migrateDown(ctx, db, 3, 1, &out); err != nil || v != 1 || out.String() != "schema at 1\n" {
		t.Errorf("down to the current version = %d, %v, %q", v, err, out.String())
	}
	if v, err := migrateDown(ctx, db, 3, 0, io.Discard); err != nil || v != 0 {
		t.Errorf("down to 0 = %d, %v", v, err)
	}
	if got, want := layout(t, db), []string{migrationsTable}; !slices.Equal(got, want) {
		t.Errorf("after down to 0: tables %q, want %q", got, want)
	}
	// And back up.
	if v, err := migrateUp(ctx, db, 3, io.Discard); err != nil || v != 3 {
		t.Errorf("up after down = %d, %v", v, err)
	}
}

// A build does not know the migrations beyond its schema version, so it
// cannot undo them.
func TestMigrateDownUnknownMigration(t *testing.T) {
	_, db := newDatabase(t)
	ctx := testCtx(t)
	if _, err := migrateUp(ctx, db, 3, io.Discard); err != nil {
		t.Fatal(err)
	}
	_, err := migrateDown(ctx, db, 2, 1, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "the schema is at 3, but this release knows migrations up to 2 only") {
		t.Errorf("down by a build that knows 2 = %v", err)
	}
	if got := appliedVersions(t, db); !slices.Equal(got, []int64{1, 2, 3}) {
		t.Errorf("schema_migrations = %v", got)
	}
}

// A failing migration leaves neither its changes nor its row behind, and
// the ones before it stay applied.
func TestMigrateFailureRollsBack(t *testing.T) {
	_, db := newDatabase(t)
	ctx := testCtx(t)
	if _, err := db.ExecContext(ctx, `CREATE TABLE payments (x int)`); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	v, err := migrateUp(ctx, db, 3, &out)
	if err == nil || !strings.Contains(err.Error(), "migration 3 (create payments)") || v != 2 {
		t.Fatalf("up over a conflicting table = %d, %v", v, err)
	}
	if out.String() != "migrate: 1 create invoices\nmigrate: 2 add currency to invoices\n" {
		t.Errorf("output %q", out.String())
	}
	if got := appliedVersions(t, db); !slices.Equal(got, []int64{1, 2}) {
		t.Errorf("schema_migrations = %v", got)
	}
	if got, want := layout(t, db), []string{invoicesV2, "payments(x)", migrationsTable}; !slices.Equal(got, want) {
		t.Errorf("tables %q, want %q", got, want)
	}
}

// Concurrent runs take turns: every migration is applied once.
func TestMigrateConcurrent(t *testing.T) {
	_, db := newDatabase(t)
	ctx := testCtx(t)
	db.SetMaxOpenConns(8)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	outs := make([]strings.Builder, 4)
	for i := range errs {
		wg.Go(func() { _, errs[i] = migrateUp(ctx, db, 3, &outs[i]) })
	}
	wg.Wait()
	applied := 0
	for i, err := range errs {
		if err != nil {
			t.Errorf("run %d: %v", i, err)
		}
		applied += strings.Count(outs[i].String(), "migrate: ")
	}
	if applied != 3 {
		t.Errorf("%d migrations applied in all, want 3", applied)
	}
	if got := appliedVersions(t, db); !slices.Equal(got, []int64{1, 2, 3}) {
		t.Errorf("schema_migrations = %v", got)
	}
}

func TestVersionWithoutTable(t *testing.T) {
	dsn, db := newDatabase(t)
	ctx := testCtx(t)
	if v, err := currentVersion(ctx, db); err != nil || v != 0 {
		t.Errorf("currentVersion = %d, %v; want 0", v, err)
	}
	var out, errOut strings.Builder
	if code := runMigrate(ctx, []string{"version"}, envWith(dsn), &out, &errOut); code != 0 || out.String() != "0\n" {
		t.Errorf("migrate version = %d, %q, %q", code, out.String(), errOut.String())
	}
	if got := layout(t, db); got != nil {
		t.Errorf("migrate version created tables: %q", got)
	}
}

func envWith(dsn string) func(string) string {
	return func(k string) string {
		if k == "DATABASE_URL" {
			return dsn
		}
		return ""
	}
}

// setSchemaVersion stands for -X main.schemaVersion=v for one test.
func setSchemaVersion(t *testing.T, v string) {
	old := schemaVersion
	schemaVersion = v
	t.Cleanup(func() { schemaVersion = old })
}

// The command line, as steward runs it: the legacy "migrate", up, version,
// down, with the build's schema version; no output reveals the DSN.
func TestMigrateCommandLine(t *testing.T) {
	dsn, db := newDatabase(t)
	ctx := testCtx(t)
	setSchemaVersion(t, "2")
	tests := []struct {
		args     []string
		code     int
		out, err string
	}{
		{[]string{"migrate"}, 0, "migrate: 1 create invoices\nmigrate: 2 add currency to invoices\nschema at 2\n", ""},
		{[]string{"migrate", "up"}, 0, "schema at 2\n", ""},
		{[]string{"migrate", "version"}, 0, "2\n", ""},
		{[]string{"migrate", "down", "3"}, 1, "", "invoicing migrate: cannot migrate down to 3: the schema is at 2\n"},
		{[]string{"migrate", "down", "1"}, 0, "migrate: down 2 add currency to invoices\nschema at 1\n", ""},
		{[]string{"migrate", "version"}, 0, "1\n", ""},
		{[]string{"migrate", "down", "0"}, 0, "migrate: down 1 create invoices\nschema at 0\n", ""},
		{[]string{"migrate", "up"}, 0, "migrate: 1 create invoices\nmigrate: 2 add currency to invoices\nschema at 2\n", ""},
	}
	for _, tt := range tests {
		var out, errOut strings.Builder
		code := run(ctx, tt.args, envWith(dsn), &out, &errOut)
		if code != tt.code || out.String() != tt.out || errOut.String() != tt.err {
			t.Errorf("%q = %d, stdout %q, stderr %q; want %d, %q, %q", tt.args, code, out.String(), errOut.String(), tt.code, tt.out, tt.err)
		}
	}
	if got, want := layout(t, db), []string{invoicesV2, migrationsTable}; !slices.Equal(got, want) {
		t.Errorf("tables %q, want %q", got, want)
	}

	// Migrations of a later build are refused by this one.
	setSchemaVersion(t, "")
	if code := run(ctx, []string{"migrate", "up"}, envWith(dsn), io.Discard, io.Discard); code != 0 {
		t.Fatalf("up by the full build = %d", code)
	}
	setSchemaVersion(t, "2")
	var errOut strings.Builder
	if code := run(ctx, []string{"migrate", "down", "1"}, envWith(dsn), io.Discard, &errOut); code != 1 || !strings.Contains(errOut.String(), "knows migrations up to 2 only") {
		t.Errorf("down past an unknown migration = %d, %q", code, errOut.String())
	}
}

func TestMigrateUsage(t *testing.T) {
	env := envWith("postgres://u:" + testPassword + "@127.0.0.1:1/x")
	for _, args := range [][]string{
		{"migrate", "up", "extra"},
		{"migrate", "version", "x"},
		{"migrate", "down"},
		{"migrate", "down", "x"},
		{"migrate", "down", "-1"},
		{"migrate", "down", "1", "2"},
		{"migrate", "sideways"},
	} {
		var out, errOut strings.Builder
		if code := run(context.Background(), args, env, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "usage:") {
			t.Errorf("%q = %d, stderr %q; want 2 and the usage", args, code, errOut.String())
		}
	}
	var errOut strings.Builder
	if code := run(context.Background(), []string{"migrate"}, envWith(""), io.Discard, &errOut); code != 1 || errOut.String() != "invoicing migrate: DATABASE_URL is not set\n" {
		t.Errorf("migrate without DATABASE_URL = %d, %q", code, errOut.String())
	}
	setSchemaVersion(t, "7")
	errOut.Reset()
	if code := run(context.Background(), []string{"migrate"}, env, io.Discard, &errOut); code != 1 || !strings.Contains(errOut.String(), `schema version "7" is not one of 0 to 3`) {
		t.Errorf("migrate with a bad build = %d, %q", code, errOut.String())
	}
}

// An unreachable database fails quickly, and the error keeps the DSN and
// its password out.
func TestMigrateDatabaseDown(t *testing.T) {
	for _, dsn := range []string{
		fmt.Sprintf("postgres://app:%s@127.0.0.1:%d/acme?sslmode=disable", testPassword, closedPort(t)),
		fmt.Sprintf("host=127.0.0.1 port=%d user=app password=%s dbname=acme sslmode=disable", closedPort(t), testPassword),
	} {
		for _, args := range [][]string{{"migrate", "up"}, {"migrate", "down", "0"}, {"migrate", "version"}} {
			var out, errOut strings.Builder
			start := time.Now()
			code := run(context.Background(), args, envWith(dsn), &out, &errOut)
			if code != 1 || errOut.Len() == 0 {
				t.Errorf("%q with the database down = %d, %q", args, code, errOut.String())
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("%q took %v", args, d)
			}
			if all := out.String() + errOut.String(); strings.Contains(all, testPassword) || strings.Contains(all, "127.0.0.1:") && strings.Contains(all, "app:") {
				t.Errorf("%q reveals the DSN: %s", args, all)
			}
		}
	}
}

// migrate up makes the merchant's database when it does not exist yet.
func TestMigrateCreatesDatabase(t *testing.T) {
	server := pgtest.Server(t)
	name := pgtest.UniqueName("invoicing_test")
	pgtest.DropAtCleanup(t, server, name)
	dsn := withDBName(t, server, name)
	ctx := testCtx(t)
	var out, errOut strings.Builder
	code := run(ctx, []string{"migrate", "up"}, envWith(dsn), &out, &errOut)
	want := "created database " + name + "\nmigrate: 1 create invoices\nmigrate: 2 add currency to invoices\nmigrate: 3 create payments\nschema at 3\n"
	if code != 0 || out.String() != want {
		t.Fatalf("migrate up = %d, %q, %q; want %q", code, out.String(), errOut.String(), want)
	}
	out.Reset()
	if code := run(ctx, []string{"migrate", "up"}, envWith(dsn), &out, &errOut); code != 0 || out.String() != "schema at 3\n" {
		t.Errorf("second migrate up = %d, %q, %q", code, out.String(), errOut.String())
	}
	// down and version do not create anything.
	other := pgtest.UniqueName("invoicing_test")
	pgtest.DropAtCleanup(t, server, other)
	errOut.Reset()
	if code := run(ctx, []string{"migrate", "version"}, envWith(withDBName(t, server, other)), io.Discard, &errOut); code != 1 || !strings.Contains(errOut.String(), "does not exist") {
		t.Errorf("migrate version of a missing database = %d, %q", code, errOut.String())
	}
}

func TestMaintenanceDSN(t *testing.T) {
	tests := []struct {
		in, name, admin string
		ok              bool
	}{
		{"postgres://u:p@h:5432/acme?sslmode=disable", "acme", "postgres://u:p@h:5432/postgres?sslmode=disable", true},
		{"postgresql://h/acme", "acme", "postgresql://h/postgres", true},
		{"postgres://h/postgres", "", "", false},
		{"postgres://h", "", "", false},
		{"host=h dbname=acme user=u", "acme", "host=h dbname=postgres user=u", true},
		{"host=h dbname = acme", "acme", "host=h dbname = postgres", true},
		{"host=h dbname='a b'", "", "", false},
		{"host=h", "", "", false},
	}
	for _, tt := range tests {
		name, admin, ok := maintenanceDSN(tt.in)
		if name != tt.name || admin != tt.admin || ok != tt.ok {
			t.Errorf("maintenanceDSN(%q) = %q, %q, %v; want %q, %q, %v", tt.in, name, admin, ok, tt.name, tt.admin, tt.ok)
		}
	}
}

func TestBuildTarget(t *testing.T) {
	for v, want := range map[string]int64{"": 3, "0": 0, "1": 1, "3": 3} {
		setSchemaVersion(t, v)
		if got, err := buildTarget(); err != nil || got != want {
			t.Errorf("schemaVersion %q: %d, %v; want %d", v, got, err, want)
		}
	}
	for _, v := range []string{"4", "-1", "x", "1.0"} {
		setSchemaVersion(t, v)
		if _, err := buildTarget(); err == nil {
			t.Errorf("schemaVersion %q accepted", v)
		}
	}
}

// The app serves whatever its schema: / reports the database's version
// beside the build's, and POST /invoices uses what the schema has.
func TestServeSchema(t *testing.T) {
	dsn, db := newDatabase(t)
	ctx := testCtx(t)
	setSchemaVersion(t, "2")
	var logs syncBuffer
	a, err := newApp("acme", dsn, log.New(&logs, "", 0))
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	h := a.handler()
	status := func() string {
		t.Helper()
		code, body := get(t, h, "/")
		if code != 200 {
			t.Fatalf("/ = %d %q", code, body)
		}
		return body
	}
	post := func(body string) (int, string) {
		t.Helper()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("POST", "/invoices", strings.NewReader(body)))
		return rec.Code, rec.Body.String()
	}
	if got, want := status(), `{"merchant":"acme","version":"dev","database":"up","schema":0,"schema_needed":2}`+"\n"; got != want {
		t.Errorf("/ on an empty database = %q, want %q", got, want)
	}
	if code, _ := post(`{"amount_cents": 100}`); code != 503 {
		t.Errorf("POST /invoices at schema 0 = %d, want 503", code)
	}
	if code, _ := get(t, h, "/health"); code != 200 {
		t.Errorf("/health at schema 0 = %d", code)
	}

	if _, err := migrateUp(ctx, db, 1, io.Discard); err != nil {
		t.Fatal(err)
	}
	if got := status(); !strings.Contains(got, `"schema":1,"schema_needed":2`) {
		t.Errorf("/ at schema 1 = %q", got)
	}
	if code, body := post(`{"amount_cents": 100}`); code != 201 || body != `{"id":1,"merchant":"acme","amount_cents":100}`+"\n" {
		t.Errorf("POST /invoices at schema 1 = %d %q", code, body)
	}
	if code, _ := post(`{"amount_cents": 100, "currency": "USD"}`); code != 409 {
		t.Errorf("POST /invoices with a currency at schema 1 = %d, want 409", code)
	}
	for _, bad := range []string{``, `{}`, `{"amount_cents": "x"}`, `{"amount_cents": 1, "x": 2}`} {
		if code, _ := post(bad); code != 400 {
			t.Errorf("POST /invoices %q = %d, want 400", bad, code)
		}
	}

	if _, err := migrateUp(ctx, db, 2, io.Discard); err != nil {
		t.Fatal(err)
	}
	if code, body := post(`{"amount_cents": 250, "currency": "USD"}`); code != 201 || body != `{"id":2,"merchant":"acme","amount_cents":250,"currency":"USD"}`+"\n" {
		t.Errorf("POST /invoices at schema 2 = %d %q", code, body)
	}
	var got []string
	rows, err := db.QueryContext(ctx, `SELECT merchant || ' ' || amount_cents || ' ' || currency FROM invoices ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var s string
		rows.Scan(&s)
		got = append(got, s)
	}
	if want := []string{"acme 100 EUR", "acme 250 USD"}; !slices.Equal(got, want) {
		t.Errorf("invoices %q, want %q", got, want)
	}
	var doc map[string]any
	if err := json.Unmarshal([]byte(status()), &doc); err != nil || doc["schema"] != float64(2) {
		t.Errorf("/ at schema 2 = %v, %v", doc, err)
	}
	if strings.Contains(logs.String(), testPassword) {
		t.Errorf("the log reveals the password:\n%s", logs.String())
	}
}
