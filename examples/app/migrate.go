package main

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/lib/pq"
)

// schemaVersion is the schema version this build needs, set through
// -ldflags "-X main.schemaVersion=2"; empty means every migration below.
// A build knows the migrations up to its version and no later ones, as a
// real release would.
var schemaVersion = ""

// migration is one step of the schema, applied by up and undone by down.
type migration struct {
	version  int64
	name     string
	up, down string
}

// migrations are the app's schema, in order; version i+1 is migrations[i].
var migrations = []migration{
	{1, "create invoices",
		`CREATE TABLE invoices (id bigserial PRIMARY KEY, merchant text NOT NULL, amount_cents bigint NOT NULL, created_at timestamptz NOT NULL DEFAULT now())`,
		`DROP TABLE invoices`},
	{2, "add currency to invoices",
		`ALTER TABLE invoices ADD COLUMN currency text NOT NULL DEFAULT 'EUR'`,
		`ALTER TABLE invoices DROP COLUMN currency`},
	{3, "create payments",
		`CREATE TABLE payments (id bigserial PRIMARY KEY, invoice_id bigint NOT NULL REFERENCES invoices(id), amount_cents bigint NOT NULL)`,
		`DROP TABLE payments`},
}

const (
	createMigrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations (version bigint PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`
	currentVersionQuery   = `SELECT coalesce(max(version), 0) FROM schema_migrations`

	// migrateLockKey is the advisory lock that serialises migrations of
	// one database (and creations of databases on one server).
	migrateLockKey = 0x696e766f69636531 // "invoice1"

	// lockReleaseTimeout bounds unlocking after the work's context ended.
	lockReleaseTimeout = 5 * time.Second
)

// buildTarget returns the schema version of this build.
func buildTarget() (int64, error) {
	if schemaVersion == "" {
		return int64(len(migrations)), nil
	}
	n, err := strconv.ParseInt(schemaVersion, 10, 64)
	if err != nil || n < 0 || n > int64(len(migrations)) {
		return 0, fmt.Errorf("this build's schema version %q is not one of 0 to %d", schemaVersion, len(migrations))
	}
	return n, nil
}

// queryer is what currentVersion needs: a *sql.DB, *sql.Conn or *sql.Tx.
type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// currentVersion returns the highest applied migration, 0 when the
// schema_migrations table does not exist.
func currentVersion(ctx context.Context, q queryer) (int64, error) {
	var v int64
	err := q.QueryRowContext(ctx, currentVersionQuery).Scan(&v)
	if sqlState(err) == "42P01" { // undefined_table
		return 0, nil
	}
	return v, err
}

// sqlState returns the SQLSTATE of a server error, or "".
func sqlState(err error) string {
	var e interface{ SQLState() string }
	if errors.As(err, &e) {
		return e.SQLState()
	}
	return ""
}

// lockedConn returns a connection holding the migration lock; release
// unlocks it and returns the connection to the pool.
func lockedConn(ctx context.Context, db *sql.DB) (conn *sql.Conn, release func(), err error) {
	conn, err = db.Conn(ctx)
	if err != nil {
		return nil, nil, err
	}
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, int64(migrateLockKey)); err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("waiting for the migration lock: %w", err)
	}
	return conn, func() {
		ctx, cancel := context.WithTimeout(context.Background(), lockReleaseTimeout)
		defer cancel()
		if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_unlock($1)`, int64(migrateLockKey)); err != nil {
			// Discarding the session releases the lock for sure.
			conn.Raw(func(any) error { return driver.ErrBadConn })
		}
		conn.Close()
	}, nil
}

// migrateUp applies the migrations after the current version up to target,
// each in its own transaction with its schema_migrations row, printing a
// line for each and "schema at N" at the end. A database already at or
// beyond target is left alone. It returns the version the database is at.
func migrateUp(ctx context.Context, db *sql.DB, target int64, out io.Writer) (int64, error) {
	if target < 0 || target > int64(len(migrations)) {
		return 0, fmt.Errorf("schema version %d is not one of 0 to %d", target, len(migrations))
	}
	conn, release, err := lockedConn(ctx, db)
	if err != nil {
		return 0, err
	}
	defer release()
	if _, err := conn.ExecContext(ctx, createMigrationsTable); err != nil {
		return 0, fmt.Errorf("creating schema_migrations: %w", err)
	}
	cur, err := currentVersion(ctx, conn)
	if err != nil {
		return 0, fmt.Errorf("reading the schema version: %w", err)
	}
	if cur > target {
		fmt.Fprintf(out, "schema at %d, beyond this release's %d: nothing to do\n", cur, target)
		return cur, nil
	}
	for _, m := range migrations[cur:target] {
		err := inTx(ctx, conn, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, m.up); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version) VALUES ($1)`, m.version)
			return err
		})
		if err != nil {
			return cur, fmt.Errorf("migration %d (%s): %w", m.version, m.name, err)
		}
		cur = m.version
		fmt.Fprintf(out, "migrate: %d %s\n", m.version, m.name)
	}
	fmt.Fprintf(out, "schema at %d\n", cur)
	return cur, nil
}

// migrateDown undoes the migrations above to, highest first, each in its
// own transaction with the removal of its schema_migrations row. known is
// the highest migration this build has; a database beyond it is refused,
// as is to above the current version or below 0. It returns the version
// the database is at.
func migrateDown(ctx context.Context, db *sql.DB, known, to int64, out io.Writer) (int64, error) {
	if to < 0 {
		return 0, fmt.Errorf("cannot migrate down to %d: versions start at 0", to)
	}
	conn, release, err := lockedConn(ctx, db)
	if err != nil {
		return 0, err
	}
	defer release()
	cur, err := currentVersion(ctx, conn)
	if err != nil {
		return 0, fmt.Errorf("reading the schema version: %w", err)
	}
	if to > cur {
		return cur, fmt.Errorf("cannot migrate down to %d: the schema is at %d", to, cur)
	}
	if cur > known {
		return cur, fmt.Errorf("the schema is at %d, but this release knows migrations up to %d only: migrate down with the release that applied them", cur, known)
	}
	for v := cur; v > to; v-- {
		m := migrations[v-1]
		err := inTx(ctx, conn, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, m.down); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, `DELETE FROM schema_migrations WHERE version = $1`, m.version)
			return err
		})
		if err != nil {
			return cur, fmt.Errorf("undoing migration %d (%s): %w", m.version, m.name, err)
		}
		cur = v - 1
		fmt.Fprintf(out, "migrate: down %d %s\n", m.version, m.name)
	}
	fmt.Fprintf(out, "schema at %d\n", cur)
	return cur, nil
}

// inTx runs f in a transaction on conn, committing when it succeeds.
func inTx(ctx context.Context, conn *sql.Conn, f func(*sql.Tx) error) error {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := f(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

const migrateUsage = `usage:
  invoicing migrate [up]       apply the migrations up to this build's schema version
  invoicing migrate down N     undo the migrations above version N
  invoicing migrate version    print the current schema version (0 without any)
DATABASE_URL names the database.`

// runMigrate is "invoicing migrate ARGS...".
func runMigrate(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "invoicing migrate: "+format+"\n%s\n", append(a, migrateUsage)...)
		return 2
	}
	cmd := "up"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	var to int64
	switch cmd {
	case "up", "version":
		if len(args) > 0 {
			return usage("unexpected argument %q", args[0])
		}
	case "down":
		if len(args) != 1 {
			return usage("down needs the version to go down to")
		}
		n, err := strconv.ParseInt(args[0], 10, 64)
		if err != nil || n < 0 {
			return usage("down: %q is not a version (a whole number >= 0)", args[0])
		}
		to = n
	case "-h", "-help", "--help", "help":
		fmt.Fprintln(stdout, migrateUsage)
		return 0
	default:
		return usage("unknown command %q", cmd)
	}
	target, err := buildTarget()
	if err != nil {
		fmt.Fprintf(stderr, "invoicing migrate: %v\n", err)
		return 1
	}
	dsn := getenv("DATABASE_URL")
	if dsn == "" {
		fmt.Fprintln(stderr, "invoicing migrate: DATABASE_URL is not set")
		return 1
	}
	full := withConnectTimeout(dsn)
	secrets := secretsOf(dsn, full)
	fail := func(err error) int {
		fmt.Fprintf(stderr, "invoicing migrate: %s\n", redact(err.Error(), secrets))
		return 1
	}
	db, err := sql.Open("postgres", full)
	if err != nil {
		return fail(errors.New("DATABASE_URL is not a valid PostgreSQL DSN"))
	}
	defer db.Close()
	db.SetMaxOpenConns(2)

	switch cmd {
	case "up":
		if err := ensureDatabase(ctx, db, full, stdout); err != nil {
			return fail(err)
		}
		_, err = migrateUp(ctx, db, target, stdout)
	case "down":
		_, err = migrateDown(ctx, db, target, to, stdout)
	case "version":
		var v int64
		if v, err = currentVersion(ctx, db); err == nil {
			fmt.Fprintln(stdout, v)
		}
	}
	if err != nil {
		return fail(err)
	}
	return 0
}

// ensureDatabase creates the database of dsn when it does not exist (a
// merchant's database is made by its first migration), connecting to the
// server's "postgres" database to do so. It needs the CREATEDB privilege
// then, and only then.
func ensureDatabase(ctx context.Context, db *sql.DB, dsn string, out io.Writer) error {
	err := db.PingContext(ctx)
	if sqlState(err) != "3D000" { // invalid_catalog_name
		return err
	}
	name, admin, ok := maintenanceDSN(dsn)
	if !ok {
		return err
	}
	adb, aerr := sql.Open("postgres", admin)
	if aerr != nil {
		return err
	}
	defer adb.Close()
	conn, release, lerr := lockedConn(ctx, adb)
	if lerr != nil {
		return fmt.Errorf("database %s does not exist, and creating it: %w", name, lerr)
	}
	defer release()
	var exists bool
	if err := conn.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return fmt.Errorf("database %s does not exist, and creating it: %w", name, err)
	}
	if !exists {
		if _, err := conn.ExecContext(ctx, "CREATE DATABASE "+pq.QuoteIdentifier(name)); err != nil && sqlState(err) != "42P04" { // duplicate_database
			return fmt.Errorf("database %s does not exist, and creating it: %w", name, err)
		}
		fmt.Fprintf(out, "created database %s\n", name)
	}
	return nil
}

var kvDBName = regexp.MustCompile(`(^|\s)dbname\s*=\s*([^'\s]\S*)`)

// maintenanceDSN returns the database name of dsn and dsn with the database
// "postgres" instead; ok is false when dsn names no database in a form
// understood here.
func maintenanceDSN(dsn string) (name, admin string, ok bool) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", "", false
		}
		name = strings.TrimPrefix(u.Path, "/")
		if name == "" || name == "postgres" {
			return "", "", false
		}
		u.Path, u.RawPath = "/postgres", ""
		return name, u.String(), true
	}
	m := kvDBName.FindStringSubmatchIndex(dsn)
	if m == nil {
		return "", "", false
	}
	name = dsn[m[4]:m[5]]
	if name == "postgres" {
		return "", "", false
	}
	return name, dsn[:m[4]] + "postgres" + dsn[m[5]:], true
}
