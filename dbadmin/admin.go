package dbadmin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/lib/pq"
)

// Admin manages the merchant databases of one host: creation, schema
// versions, migration locks, backups kept in BackupDir/<merchant>, and
// dropping. Its methods are the package's functions with the backup
// directory layout applied.
type Admin struct {
	BackupDir string
}

// Ensure is Ensure.
func (Admin) Ensure(ctx context.Context, serverDSN, dbName string) (bool, error) {
	return Ensure(ctx, serverDSN, dbName)
}

// SchemaVersion is SchemaVersion.
func (Admin) SchemaVersion(ctx context.Context, databaseURL, query string) (int64, error) {
	return SchemaVersion(ctx, databaseURL, query)
}

// Lock is Lock.
func (Admin) Lock(ctx context.Context, databaseURL string) (func() error, error) {
	return Lock(ctx, databaseURL)
}

func (a Admin) dir(merchant string) (string, error) {
	if merchant == "" || merchant != filepath.Base(merchant) || merchant[0] == '.' {
		return "", fmt.Errorf("dbadmin: %q is not a merchant id", merchant)
	}
	return filepath.Join(a.BackupDir, merchant), nil
}

// Dump backs up b.Merchant's database into its backup directory and keeps
// the newest keep dumps there (all when keep <= 0).
func (a Admin) Dump(ctx context.Context, databaseURL string, b Backup, keep int) (Backup, error) {
	dir, err := a.dir(b.Merchant)
	if err != nil {
		return Backup{}, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Backup{}, fmt.Errorf("dbadmin: %w", err)
	}
	out, err := Dump(ctx, databaseURL, dir, b)
	if err != nil {
		return Backup{}, err
	}
	out.Merchant = b.Merchant
	if keep > 0 {
		Prune(dir, keep)
	}
	return out, nil
}

// Restore replaces the database's content with the dump b.
func (Admin) Restore(ctx context.Context, databaseURL string, b Backup) error {
	return Restore(ctx, databaseURL, b.Path)
}

// Backups lists merchant's dumps, oldest first (none when it has none).
func (a Admin) Backups(merchant string) ([]Backup, error) {
	dir, err := a.dir(merchant)
	if err != nil {
		return nil, err
	}
	bs, err := ListBackups(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	for i := range bs {
		bs[i].Merchant = merchant
	}
	return bs, err
}

// Exists reports whether the database dbName exists on the server
// serverDSN names.
func (Admin) Exists(ctx context.Context, serverDSN, dbName string) (bool, error) {
	if err := checkDBName(dbName); err != nil {
		return false, err
	}
	db, c, err := conn(ctx, serverDSN)
	if err != nil {
		return false, redact(ctx, "connect", err, serverDSN)
	}
	defer db.Close()
	defer c.Close()
	var ok bool
	if err := c.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, dbName).Scan(&ok); err != nil {
		return false, redact(ctx, "look up database "+pq.QuoteIdentifier(dbName), err, serverDSN)
	}
	return ok, nil
}

// Drop drops the database dbName on the server serverDSN names,
// disconnecting its sessions; a database that does not exist is not an
// error.
func (Admin) Drop(ctx context.Context, serverDSN, dbName string) error {
	if err := checkDBName(dbName); err != nil {
		return err
	}
	db, c, err := conn(ctx, serverDSN)
	if err != nil {
		return redact(ctx, "connect", err, serverDSN)
	}
	defer db.Close()
	defer c.Close()
	if _, err := c.ExecContext(ctx, "DROP DATABASE IF EXISTS "+pq.QuoteIdentifier(dbName)+" WITH (FORCE)"); err != nil {
		return redact(ctx, "drop database "+pq.QuoteIdentifier(dbName), err, serverDSN)
	}
	return nil
}
