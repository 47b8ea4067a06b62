package dbadmin

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/lib/pq"

	"steward/internal/pgtest"
)

// testPassword is put in DSNs to check that it never shows; the test
// server's trust authentication ignores it.
const testPassword = "s3cret"

// withPassword returns the URL dsn with testPassword as its password.
func withPassword(t *testing.T, dsn string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme == "" {
		t.Skip("STEWARD_TEST_PG is not a URL")
	}
	u.User = url.UserPassword(u.User.Username(), testPassword)
	return u.String()
}

// keyValue returns the URL dsn in key=value form.
func keyValue(t *testing.T, dsn string) string {
	t.Helper()
	kv, err := pq.ParseURL(dsn)
	if err != nil {
		t.Skip("STEWARD_TEST_PG is not a URL")
	}
	return kv
}

// uniqueName is a database name no other test (or test run) uses.
func uniqueName() string { return pgtest.UniqueName("steward_dbadmin") }

// newDB creates a fresh database and returns its name and URL.
func newDB(t *testing.T) (server, name, dbURL string) {
	t.Helper()
	server = pgtest.Server(t)
	name = uniqueName()
	pgtest.DropAtCleanup(t, server, name)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := Ensure(ctx, server, name); err != nil {
		t.Fatal(err)
	}
	return server, name, pgtest.WithDB(t, server, name)
}

// execSQL runs statements on dsn, each in its own implicit transaction.
func execSQL(t *testing.T, ctx context.Context, dsn string, stmts ...string) {
	t.Helper()
	db, c, err := conn(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	defer c.Close()
	for _, s := range stmts {
		if _, err := c.ExecContext(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// queryInt runs a query returning one integer.
func queryInt(t *testing.T, ctx context.Context, dsn, query string, args ...any) int64 {
	t.Helper()
	db, c, err := conn(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	defer c.Close()
	var n int64
	if err := c.QueryRowContext(ctx, query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// queryStrings runs a query returning one text column.
func queryStrings(t *testing.T, ctx context.Context, dsn, query string) []string {
	t.Helper()
	db, c, err := conn(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	defer c.Close()
	rows, err := c.QueryContext(ctx, query)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// noSecret fails when err's text holds the test password.
func noSecret(t *testing.T, err error) {
	t.Helper()
	if err != nil && strings.Contains(err.Error(), testPassword) {
		t.Errorf("error reveals the password: %v", err)
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// withTimeout is ctx bounded by secs seconds more.
func withTimeout(t *testing.T, ctx context.Context, secs int) context.Context {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(secs)*time.Second)
	t.Cleanup(cancel)
	return ctx
}
