package dbadmin

import (
	"strings"
	"testing"
)

func TestSchemaVersion(t *testing.T) {
	_, _, dbURL := newDB(t)
	ctx := testCtx(t)
	pwURL := withPassword(t, dbURL)

	if v, err := SchemaVersion(ctx, dbURL, ""); err != nil || v != 0 {
		t.Fatalf("missing table: %d, %v; want 0", v, err)
	}
	execSQL(t, ctx, dbURL, `CREATE TABLE schema_migrations (version bigint PRIMARY KEY)`)
	if v, err := SchemaVersion(ctx, dbURL, ""); err != nil || v != 0 {
		t.Fatalf("empty table: %d, %v; want 0", v, err)
	}
	execSQL(t, ctx, dbURL, `INSERT INTO schema_migrations VALUES (1), (7), (3)`)
	if v, err := SchemaVersion(ctx, pwURL, ""); err != nil || v != 7 {
		t.Fatalf("3 rows: %d, %v; want 7", v, err)
	}
	if v, err := SchemaVersion(ctx, keyValue(t, dbURL), ""); err != nil || v != 7 {
		t.Fatalf("key=value DSN: %d, %v; want 7", v, err)
	}

	execSQL(t, ctx, dbURL, `CREATE TABLE goose_db_version (version_id bigint, is_applied bool)`,
		`INSERT INTO goose_db_version VALUES (4, true), (5, false)`)
	for _, c := range []struct {
		query string
		want  int64
	}{
		{`SELECT max(version_id) FROM goose_db_version WHERE is_applied`, 4},
		{`SELECT NULL::bigint`, 0},
		{`SELECT 1 WHERE false`, 0},
		{`SELECT 12::numeric`, 12},
		{`SELECT 12.000::numeric`, 12},
		{`SELECT '20250102150405'::text`, 20250102150405},
		{`SELECT 9::int2`, 9},
		{`SELECT 2::float8`, 2},
		{`SELECT max(version) FROM missing_table`, 0},
	} {
		v, err := SchemaVersion(ctx, dbURL, c.query)
		if err != nil || v != c.want {
			t.Errorf("%s: %d, %v; want %d", c.query, v, err, c.want)
		}
	}

	for _, query := range []string{
		`SELEC version FROM schema_migrations`,
		`SELECT 'abc'::text`,
		`SELECT 1.5::numeric`,
		`SELECT true`,
		`SELECT 1, 2`,
		`INSERT INTO schema_migrations VALUES (99) RETURNING version`, // read-only
		`SELECT pg_sleep(5)`, // the statement timeout
	} {
		_, err := SchemaVersion(withTimeout(t, ctx, 2), pwURL, query)
		if err == nil {
			t.Errorf("%s: no error", query)
			continue
		}
		if !strings.Contains(err.Error(), query) {
			t.Errorf("%s: error does not name the query: %v", query, err)
		}
		noSecret(t, err)
	}
	if v, err := SchemaVersion(ctx, dbURL, ""); err != nil || v != 7 {
		t.Fatalf("after the read-only insert: %d, %v; want 7", v, err)
	}
}
