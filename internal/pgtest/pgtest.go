// Package pgtest gives tests a real PostgreSQL server and databases of their
// own on it.
//
// The server is STEWARD_TEST_PG, by default the local one
// (postgres://postgres@127.0.0.1:5432/postgres, trust authentication). A
// test that needs it is skipped when the server does not answer, and fails
// instead when CI is set, so that CI never passes without having run it.
package pgtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/lib/pq"
)

// DefaultDSN is the server used when STEWARD_TEST_PG is not set.
const DefaultDSN = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// DSN returns STEWARD_TEST_PG, or DefaultDSN when it is not set. It does not
// check that the server answers; Server does.
func DSN() string {
	if dsn := os.Getenv("STEWARD_TEST_PG"); dsn != "" {
		return dsn
	}
	return DefaultDSN
}

// Server returns DSN() once the server answers a ping within 5 seconds. When
// it does not, the test is skipped, or fails when CI is set.
func Server(t testing.TB) string {
	t.Helper()
	dsn := DSN()
	db, err := sql.Open("postgres", dsn)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = db.PingContext(ctx)
		cancel()
		db.Close()
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("PostgreSQL (STEWARD_TEST_PG) is unreachable under CI: %v", err)
		}
		t.Skipf("PostgreSQL (STEWARD_TEST_PG) is unreachable, skipping: %v", err)
	}
	return dsn
}

// UniqueName returns a database name that no other test or test run uses:
// prefix_PID_RANDOM.
func UniqueName(prefix string) string {
	var b [6]byte
	rand.Read(b[:])
	return fmt.Sprintf("%s_%d_%s", prefix, os.Getpid(), hex.EncodeToString(b[:]))
}

// DropAtCleanup drops database name on server when the test ends, ending
// its sessions first (WITH (FORCE)). A failure to drop is reported as a test
// error.
func DropAtCleanup(t testing.TB, server, name string) {
	t.Cleanup(func() {
		db, err := sql.Open("postgres", server)
		if err != nil {
			t.Errorf("dropping test database %s: %v", name, err)
			return
		}
		defer db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := db.ExecContext(ctx, "DROP DATABASE IF EXISTS "+pq.QuoteIdentifier(name)+" WITH (FORCE)"); err != nil {
			t.Errorf("dropping test database %s: %v", name, err)
		}
	})
}

// WithDB returns dsn (a URL or key=value DSN) naming database name instead.
func WithDB(t testing.TB, dsn, name string) string {
	t.Helper()
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		u.Path, u.RawPath = "/"+name, ""
		return u.String()
	}
	var parts []string
	for _, f := range strings.Fields(dsn) {
		if !strings.HasPrefix(f, "dbname=") {
			parts = append(parts, f)
		}
	}
	return strings.Join(append(parts, "dbname='"+name+"'"), " ")
}
