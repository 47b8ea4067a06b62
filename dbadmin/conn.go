package dbadmin

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"os"
	pgdsn "steward/internal/dsn"
	"strconv"
	"strings"
	"time"

	"github.com/lib/pq"
)

// ConnectTimeout bounds establishing one connection (connect_timeout, added
// to every DSN that does not set one). A context with an earlier deadline
// bounds it further.
const ConnectTimeout = 10 * time.Second

// DefaultStatementTimeout is the statement_timeout of SchemaVersion's query
// when its context has no deadline.
const DefaultStatementTimeout = 30 * time.Second

// maxDBName is PostgreSQL's identifier limit (NAMEDATALEN-1 bytes); longer
// names are silently truncated by the server, which would make Ensure look
// for one name and create another.
const maxDBName = 63

// opError is an error whose text has had every secret removed. It wraps
// only the context's error (when the operation ended because its context
// did), so errors.Is(err, context.Canceled) works while the driver's
// original, unredacted error stays unreachable.
type opError struct {
	msg   string
	cause error
}

func (e *opError) Error() string { return e.msg }
func (e *opError) Unwrap() error { return e.cause }

// redact returns err prefixed with what, with dsn's secrets removed. err
// may itself mention dsn or its password.
func redact(ctx context.Context, what string, err error, dsn string) error {
	if err == nil {
		return nil
	}
	if what != "" {
		err = fmt.Errorf("%s: %w", what, err)
	}
	msg := "dbadmin: " + pgdsn.RedactError(err, dsn).Error()
	var cause error
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		cause = context.Cause(ctx)
		if cause == nil {
			cause = ctx.Err()
		}
		if cause == nil {
			cause = context.DeadlineExceeded
		}
	case ctx.Err() != nil:
		cause = ctx.Err()
	}
	return &opError{msg: msg, cause: cause}
}

// connectTimeout is ConnectTimeout or the time left before ctx's deadline,
// whichever is shorter.
func connectTimeout(ctx context.Context) time.Duration {
	d := ConnectTimeout
	if dl, ok := ctx.Deadline(); ok {
		d = min(d, time.Until(dl))
	}
	return d
}

// openDB returns a handle for dsn, with connect_timeout added, that opens at
// most one connection. The caller closes it.
func openDB(ctx context.Context, dsn string) (*sql.DB, error) {
	full, err := pgdsn.WithConnectTimeout(dsn, connectTimeout(ctx))
	if err != nil {
		return nil, err
	}
	connector, err := pq.NewConnector(full)
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(connector)
	db.SetMaxOpenConns(1)
	return db, nil
}

// conn opens one dedicated connection to dsn. Closing the returned DB
// closes the connection too.
func conn(ctx context.Context, dsn string) (*sql.DB, *sql.Conn, error) {
	db, err := openDB(ctx, dsn)
	if err != nil {
		return nil, nil, err
	}
	c, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	return db, c, nil
}

// pqCode is the SQLSTATE of err, or "" when err is not a server error.
func pqCode(err error) string {
	var pe *pq.Error
	if errors.As(err, &pe) {
		return string(pe.Code)
	}
	return ""
}

// pgEnv returns the environment for a libpq client program (pg_dump,
// pg_restore) that connects where lib/pq would connect with dsn: dsn is
// parsed by lib/pq itself (with the PG* variables of this process as
// defaults, as lib/pq does) and passed as PGHOST, PGPORT, PGUSER,
// PGPASSWORD, PGDATABASE, PGSSLMODE, PGCONNECT_TIMEOUT and the like. The
// process's own PG* variables are removed so that nothing else applies.
// Never put a DSN on a command line: every user can read it in ps.
func pgEnv(ctx context.Context, dsn string) ([]string, error) {
	full, err := pgdsn.WithConnectTimeout(dsn, connectTimeout(ctx))
	if err != nil {
		return nil, err
	}
	cfg, err := pq.NewConfig(full)
	if err != nil {
		return nil, err
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	set := func(k, v string) {
		if v != "" {
			env = append(env, k+"="+v)
		}
	}
	hosts, addrs, ports := []string{cfg.Host}, []string{addrString(cfg)}, []string{strconv.Itoa(int(cfg.Port))}
	for _, m := range cfg.Multi {
		hosts = append(hosts, m.Host)
		a := ""
		if m.Hostaddr.IsValid() {
			a = m.Hostaddr.String()
		}
		addrs = append(addrs, a)
		ports = append(ports, strconv.Itoa(int(m.Port)))
	}
	set("PGHOST", strings.Join(hosts, ","))
	if strings.Join(addrs, "") != "" {
		set("PGHOSTADDR", strings.Join(addrs, ","))
	}
	set("PGPORT", strings.Join(ports, ","))
	set("PGUSER", cfg.User)
	set("PGPASSWORD", cfg.Password)
	set("PGPASSFILE", cfg.Passfile)
	set("PGDATABASE", cfg.Database)
	mode := string(cfg.SSLMode)
	if mode == "" {
		mode = string(pq.SSLModeRequire) // lib/pq's default; libpq's is "prefer"
	}
	set("PGSSLMODE", mode)
	set("PGSSLCERT", cfg.SSLCert)
	set("PGSSLKEY", cfg.SSLKey)
	set("PGSSLROOTCERT", cfg.SSLRootCert)
	set("PGAPPNAME", cfg.ApplicationName)
	set("PGOPTIONS", cfg.Options)
	set("PGTARGETSESSIONATTRS", string(cfg.TargetSessionAttrs))
	if cfg.ConnectTimeout > 0 {
		set("PGCONNECT_TIMEOUT", strconv.Itoa(max(1, int(math.Ceil(cfg.ConnectTimeout.Seconds())))))
	}
	return env, nil
}

func addrString(cfg pq.Config) string {
	if cfg.Hostaddr.IsValid() {
		return cfg.Hostaddr.String()
	}
	return ""
}

// checkDBName rejects names PostgreSQL would not keep as given.
func checkDBName(name string) error {
	switch {
	case name == "":
		return errors.New("dbadmin: empty database name")
	case len(name) > maxDBName:
		return fmt.Errorf("dbadmin: database name %q is longer than %d bytes", name, maxDBName)
	case strings.ContainsRune(name, 0):
		return fmt.Errorf("dbadmin: database name %q contains a NUL byte", name)
	}
	return nil
}
