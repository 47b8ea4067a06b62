package dbadmin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/lib/pq"
)

// Backup is one dump of a merchant database. Its file name records Time,
// Version and Schema; Merchant is not in it (keep one directory per
// merchant), so ListBackups leaves it empty.
type Backup struct {
	// Path is the dump file, in pg_dump's custom format.
	Path string
	// Merchant and Version (the release that was running) describe the
	// dump; Version may hold only letters, digits and ".+_~-".
	Merchant, Version string
	// Schema is the schema version of the dumped database.
	Schema int64
	// Time is when the dump was taken, in UTC to the second.
	Time time.Time
	// Size is the file's size in bytes.
	Size int64
}

// Programs run by Dump and Restore (looked up in PATH).
var (
	PgDump    = "pg_dump"
	PgRestore = "pg_restore"
)

// stderrLimit bounds how much of a program's stderr is kept for its error.
const stderrLimit = 4 << 10

// waitDelay is how long a killed program's output may take to drain.
const waitDelay = 5 * time.Second

// timeLayout is RFC 3339 in its compact (ISO 8601 basic) form.
const timeLayout = "20060102T150405Z"

var (
	versionRE = regexp.MustCompile(`^[A-Za-z0-9.+_~-]*$`)
	backupRE  = regexp.MustCompile(`^(\d{8}T\d{6}Z)-([A-Za-z0-9.+_~-]*)-schema(\d+)\.dump$`)
)

// FileName is the name Dump gives b's file:
// <time, compact RFC 3339>-<version>-schema<N>.dump, for example
// 20250102T150405Z-1.4.2-schema12.dump.
func (b Backup) FileName() string {
	return fmt.Sprintf("%s-%s-schema%d.dump", b.Time.UTC().Format(timeLayout), b.Version, b.Schema)
}

// cmdHook, when set (by tests), sees every command before it starts.
var cmdHook func(*exec.Cmd)

// command builds a libpq program's command: the connection is in env only,
// never in args (every user can read a command line in ps).
func command(ctx context.Context, env []string, name string, args ...string) (*exec.Cmd, *tailBuffer) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	cmd.WaitDelay = waitDelay
	stderr := &tailBuffer{max: stderrLimit}
	cmd.Stderr = stderr
	if cmdHook != nil {
		cmdHook(cmd)
	}
	return cmd, stderr
}

// runError describes a failed program run, with its stderr; secrets of dsn
// are removed by redact.
func runError(ctx context.Context, name string, err error, stderr *tailBuffer, dsn string) error {
	if msg := strings.TrimSpace(stderr.String()); msg != "" {
		err = fmt.Errorf("%w: %s", err, msg)
	}
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (%w)", err, ctx.Err())
	}
	return redact(ctx, name, err, dsn)
}

// Dump writes a pg_dump custom-format dump of the database databaseURL
// names into dir as b.FileName(), mode 0600, and returns b with Path, Time
// (now, when b's is zero; always UTC to the second) and Size filled in.
//
// The file appears complete or not at all: pg_dump writes a hidden
// temporary file in dir, which is synced and then linked to its final name;
// an existing backup of the same name is never replaced (that is an
// error). The connection reaches pg_dump through PG* environment variables,
// never its command line. A failure's error holds pg_dump's stderr.
func Dump(ctx context.Context, databaseURL, dir string, b Backup) (Backup, error) {
	if !versionRE.MatchString(b.Version) {
		return Backup{}, fmt.Errorf("dbadmin: dump: version %q may hold only letters, digits and \".+_~-\"", b.Version)
	}
	if b.Schema < 0 {
		return Backup{}, fmt.Errorf("dbadmin: dump: negative schema version %d", b.Schema)
	}
	if b.Time.IsZero() {
		b.Time = time.Now()
	}
	b.Time = b.Time.UTC().Truncate(time.Second)
	env, err := pgEnv(ctx, databaseURL)
	if err != nil {
		return Backup{}, redact(ctx, "dump", err, databaseURL)
	}
	final := filepath.Join(dir, b.FileName())
	f, err := os.CreateTemp(dir, "."+b.FileName()+".*.tmp") // mode 0600
	if err != nil {
		return Backup{}, fmt.Errorf("dbadmin: dump: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after the link, or after a failure
	cmd, stderr := command(ctx, env, PgDump, "--format=custom", "--no-password")
	cmd.Stdout = f
	err = cmd.Run()
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return Backup{}, runError(ctx, "dump: pg_dump", err, stderr, databaseURL)
	}
	if err := os.Link(tmp, final); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return Backup{}, fmt.Errorf("dbadmin: dump: backup %s already exists", final)
		}
		return Backup{}, fmt.Errorf("dbadmin: dump: %w", err)
	}
	if err := os.Remove(tmp); err != nil {
		return Backup{}, fmt.Errorf("dbadmin: dump: %w", err)
	}
	syncDir(dir)
	st, err := os.Stat(final)
	if err != nil {
		return Backup{}, fmt.Errorf("dbadmin: dump: %w", err)
	}
	b.Path, b.Size = final, st.Size()
	return b, nil
}

// syncDir makes a rename or removal in dir durable, as far as it can.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// ParseBackupName parses a name made by Backup.FileName; ok is false for
// any other name.
func ParseBackupName(name string) (b Backup, ok bool) {
	m := backupRE.FindStringSubmatch(name)
	if m == nil {
		return Backup{}, false
	}
	t, err := time.Parse(timeLayout, m[1])
	if err != nil {
		return Backup{}, false
	}
	n, err := strconv.ParseInt(m[3], 10, 64)
	if err != nil {
		return Backup{}, false
	}
	return Backup{Version: m[2], Schema: n, Time: t}, true
}

// ListBackups returns the backups in dir, oldest first (newest last),
// parsed from their file names; other files, and the temporary files of
// dumps in progress, are ignored. A missing dir has no backups.
func ListBackups(dir string) ([]Backup, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("dbadmin: %w", err)
	}
	var out []Backup
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		b, ok := ParseBackupName(e.Name())
		if !ok {
			continue
		}
		if info, err := e.Info(); err == nil {
			b.Size = info.Size()
		}
		b.Path = filepath.Join(dir, e.Name())
		out = append(out, b)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].Time.Equal(out[j].Time) {
			return out[i].Time.Before(out[j].Time)
		}
		return out[i].Path < out[j].Path
	})
	return out, nil
}

// Prune removes all but the newest keep backups in dir and returns the
// paths it removed, oldest first. It stops at the first removal that fails.
func Prune(dir string, keep int) (removed []string, err error) {
	if keep < 0 {
		return nil, fmt.Errorf("dbadmin: prune: negative keep %d", keep)
	}
	all, err := ListBackups(dir)
	if err != nil {
		return nil, err
	}
	if len(all) <= keep {
		return nil, nil
	}
	for _, b := range all[:len(all)-keep] {
		if err := os.Remove(b.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return removed, fmt.Errorf("dbadmin: prune: %w", err)
		}
		removed = append(removed, b.Path)
	}
	syncDir(dir)
	return removed, nil
}

// Restore makes the database databaseURL names equal to the dump at path
// (made by Dump).
//
// It runs in three steps:
//  1. pg_restore --list reads the whole archive's table of contents, so a
//     missing, truncated or foreign file fails before the database is
//     touched;
//  2. one transaction drops every schema but the system ones (CASCADE, so
//     tables, types, functions and extensions created since the dump go
//     too) and recreates public as a new database has it (on PostgreSQL
//     15 and later: owned by pg_database_owner, USAGE for PUBLIC; which is
//     what pg_dump, which leaves a default public schema out of the dump,
//     expects);
//  3. pg_restore --clean --if-exists --no-owner --single-transaction
//     restores the dump in one transaction.
//
// The database itself (its owner, settings and grants) is kept, and other
// sessions are not terminated: stop the merchant first, since its
// connections would block the drops. Step 3 commits independently of step
// 2: should it fail, the database is left empty and the error says so;
// Restore can simply be run again. Large objects are not reset.
func Restore(ctx context.Context, databaseURL, path string) error {
	env, err := pgEnv(ctx, databaseURL)
	if err != nil {
		return redact(ctx, "restore", err, databaseURL)
	}
	cmd, stderr := command(ctx, env, PgRestore, "--list", "--file="+os.DevNull, "--", path)
	if err := cmd.Run(); err != nil {
		return runError(ctx, "restore: pg_restore --list "+path, err, stderr, databaseURL)
	}
	if err := resetSchemas(ctx, databaseURL); err != nil {
		return err
	}
	// With --dbname="" pg_restore connects, and libpq takes the database
	// from PGDATABASE.
	cmd, stderr = command(ctx, env, PgRestore, "--clean", "--if-exists", "--no-owner", "--single-transaction",
		"--no-password", "--dbname=", "--", path)
	if err := cmd.Run(); err != nil {
		return runError(ctx, "restore: pg_restore "+path+" (the database's schemas were already reset, so it is left empty; restore again)", err, stderr, databaseURL)
	}
	return nil
}

// resetSchemas drops every non-system schema and recreates a default public
// schema, in one transaction.
func resetSchemas(ctx context.Context, dsn string) error {
	db, c, err := conn(ctx, dsn)
	if err != nil {
		return redact(ctx, "restore: connect", err, dsn)
	}
	defer db.Close()
	defer c.Close()
	tx, err := c.BeginTx(ctx, nil)
	if err != nil {
		return redact(ctx, "restore: begin", err, dsn)
	}
	defer tx.Rollback()
	var serverVersion int
	if err := tx.QueryRowContext(ctx, `SELECT current_setting('server_version_num')::int`).Scan(&serverVersion); err != nil {
		return redact(ctx, "restore", err, dsn)
	}
	rows, err := tx.QueryContext(ctx, `SELECT nspname FROM pg_namespace
		WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
		  AND nspname NOT LIKE 'pg\_temp\_%' AND nspname NOT LIKE 'pg\_toast\_temp\_%'
		ORDER BY nspname`)
	if err != nil {
		return redact(ctx, "restore: list schemas", err, dsn)
	}
	var schemas []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			rows.Close()
			return redact(ctx, "restore: list schemas", err, dsn)
		}
		schemas = append(schemas, s)
	}
	if err := rows.Err(); err != nil {
		return redact(ctx, "restore: list schemas", err, dsn)
	}
	stmts := make([]string, 0, len(schemas)+3)
	for _, s := range schemas {
		stmts = append(stmts, "DROP SCHEMA "+pq.QuoteIdentifier(s)+" CASCADE")
	}
	if serverVersion >= 150000 {
		stmts = append(stmts, "CREATE SCHEMA public AUTHORIZATION pg_database_owner", "GRANT USAGE ON SCHEMA public TO PUBLIC")
	} else {
		stmts = append(stmts, "CREATE SCHEMA public", "GRANT ALL ON SCHEMA public TO PUBLIC")
	}
	stmts = append(stmts, "COMMENT ON SCHEMA public IS 'standard public schema'")
	for _, s := range stmts {
		if _, err := tx.ExecContext(ctx, s); err != nil {
			return redact(ctx, "restore: reset schemas: "+s, err, dsn)
		}
	}
	if err := tx.Commit(); err != nil {
		return redact(ctx, "restore: reset schemas: commit", err, dsn)
	}
	return nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max  int
	buf  []byte
	lost bool
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
		t.lost = true
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	if t.lost {
		return "..." + string(t.buf)
	}
	return string(t.buf)
}
