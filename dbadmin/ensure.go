package dbadmin

import (
	"context"

	"github.com/lib/pq"
)

// Ensure creates the database dbName on the server serverDSN names (the DSN
// may name any database on it, such as postgres) unless it exists, and
// reports whether it created it. Concurrent calls for one name are safe:
// the one that loses the race finds the database there and returns false.
func Ensure(ctx context.Context, serverDSN, dbName string) (created bool, err error) {
	if err := checkDBName(dbName); err != nil {
		return false, err
	}
	db, c, err := conn(ctx, serverDSN)
	if err != nil {
		return false, redact(ctx, "connect", err, serverDSN)
	}
	defer db.Close()
	defer c.Close()
	exists := func() (bool, error) {
		var ok bool
		err := c.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, dbName).Scan(&ok)
		return ok, err
	}
	ok, err := exists()
	if err != nil {
		return false, redact(ctx, "look up database "+pq.QuoteIdentifier(dbName), err, serverDSN)
	}
	if ok {
		return false, nil
	}
	_, err = c.ExecContext(ctx, "CREATE DATABASE "+pq.QuoteIdentifier(dbName))
	switch pqCode(err) {
	case "":
		if err == nil {
			return true, nil
		}
	case "42P04": // duplicate_database: created since we looked
		return false, nil
	case "23505":
		// unique_violation on pg_database's name index: PostgreSQL's own
		// existence check raced with a concurrent CREATE DATABASE, which
		// has committed by the time this is reported.
		if ok, lerr := exists(); lerr == nil && ok {
			return false, nil
		}
	}
	return false, redact(ctx, "create database "+pq.QuoteIdentifier(dbName), err, serverDSN)
}
