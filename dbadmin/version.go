package dbadmin

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// DefaultVersionQuery reads the schema version of a database migrated by
// tools that record applied versions in schema_migrations (golang-migrate,
// dbmate, the example app).
const DefaultVersionQuery = `SELECT coalesce(max(version), 0) FROM schema_migrations`

// SchemaVersion returns the schema version of the database databaseURL
// names: the single value of query's first row (DefaultVersionQuery when
// query is ""). The query runs in a read-only transaction with a
// statement_timeout (the time left before ctx's deadline, or
// DefaultStatementTimeout), so it can neither change the database nor run
// on forever.
//
// A missing table (undefined_table, 42P01), no row at all and NULL all mean
// version 0: nothing was migrated yet. A value that is not an integer (an
// integral numeric or float, or text holding a decimal integer, is) is an
// error naming the query.
func SchemaVersion(ctx context.Context, databaseURL, query string) (int64, error) {
	if strings.TrimSpace(query) == "" {
		query = DefaultVersionQuery
	}
	db, c, err := conn(ctx, databaseURL)
	if err != nil {
		return 0, redact(ctx, "connect", err, databaseURL)
	}
	defer db.Close()
	defer c.Close()
	tx, err := c.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return 0, redact(ctx, "begin", err, databaseURL)
	}
	defer tx.Rollback()
	timeout := DefaultStatementTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("SET LOCAL statement_timeout = %d", max(1, timeout.Milliseconds()))); err != nil {
		return 0, redact(ctx, "set statement_timeout", err, databaseURL)
	}
	var v any
	err = tx.QueryRowContext(ctx, query).Scan(&v)
	switch {
	case errors.Is(err, sql.ErrNoRows), err != nil && pqCode(err) == "42P01":
		return 0, nil
	case err != nil:
		return 0, redact(ctx, fmt.Sprintf("schema version query %q", query), err, databaseURL)
	}
	n, err := toInt64(v)
	if err != nil {
		return 0, redact(ctx, fmt.Sprintf("schema version query %q", query), err, databaseURL)
	}
	return n, nil
}

// toInt64 converts a scanned value to an integer version.
func toInt64(v any) (int64, error) {
	switch v := v.(type) {
	case nil:
		return 0, nil
	case int64:
		return v, nil
	case float64:
		if v == math.Trunc(v) && v >= math.MinInt64 && v < math.MaxInt64 {
			return int64(v), nil
		}
		return 0, fmt.Errorf("returned %v, not an integer", v)
	case []byte:
		return parseInt(string(v))
	case string:
		return parseInt(v)
	default:
		return 0, fmt.Errorf("returned a %T, not an integer", v)
	}
}

func parseInt(s string) (int64, error) {
	t := strings.TrimSpace(s)
	// numeric values come as text; an integral one may carry a zero
	// fraction ("3.000").
	if i := strings.IndexByte(t, '.'); i >= 0 && strings.Trim(t[i+1:], "0") == "" {
		t = t[:i]
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil {
		if len(s) > 40 {
			s = s[:40] + "..."
		}
		return 0, fmt.Errorf("returned %q, not an integer", s)
	}
	return n, nil
}
