package engine

import (
	"context"
	"fmt"
	"time"

	"steward/dbadmin"
	"steward/internal/dsn"
	"steward/pkgstore"
	"steward/reconcile"
)

// databaseURLs are merchant m's server DSN and DATABASE_URL ("" without a
// database).
func (o *op) databaseURLs() (server, url string) {
	db := o.d.Fleet.Databases[o.m.Database]
	if db == nil {
		return "", ""
	}
	return db.DSN.Reveal(), dsn.WithDatabase(db.DSN.Reveal(), o.m.DBName)
}

// managesSchema reports whether steward manages the merchant's database
// schema with rel.
func (o *op) managesSchema(rel *pkgstore.Release) bool {
	return o.e.Databases != nil && o.m.Database != "" && rel != nil && rel.Manifest.Schema != nil
}

// readSchema reads the merchant database's schema version as rel says
// (a query, or the release's version command) and records it.
func (o *op) readSchema(ctx context.Context, rel *pkgstore.Release, port int) (int64, error) {
	_, url := o.databaseURLs()
	var v int64
	var err error
	if cmd := rel.SchemaVersionCommand(); len(cmd) > 0 {
		v, err = o.versionCommand(ctx, rel, cmd, port)
	} else {
		v, err = o.e.Databases.SchemaVersion(ctx, url, rel.Manifest.Schema.Query)
	}
	if err != nil {
		return 0, err
	}
	o.e.update(ctx, o.m.ID, func(r *reconcile.Record) bool {
		if r.Schema != nil && *r.Schema == v {
			return false
		}
		r.Schema = &v
		return true
	})
	return v, nil
}

// versionCommand runs a release's schema version command and parses the
// number it prints last.
func (o *op) versionCommand(ctx context.Context, rel *pkgstore.Release, argv []string, port int) (int64, error) {
	s := runtimeSpec(o, rel, argv, port)
	out, err := o.e.Runtime.RunOnce(ctx, s, time.Minute, true)
	if err != nil {
		// The output goes to the history, where readers need the token.
		o.record(ctx, "schema", "the schema version command failed", "error", tail(o.redact(out), 2000), err)
		return 0, fmt.Errorf("%s: %w (its output is in the history)", argv[0], err)
	}
	return parseVersionOutput(argv[0], out)
}

// ensureDatabase creates the merchant's database on its server if missing.
func (o *op) ensureDatabase(ctx context.Context) error {
	if o.e.Databases == nil || o.m.Database == "" {
		return nil
	}
	server, _ := o.databaseURLs()
	if server == "" {
		return nil
	}
	created, err := o.e.Databases.Ensure(ctx, server, o.m.DBName)
	if err != nil {
		return fmt.Errorf("creating database %s: %w", o.m.DBName, err)
	}
	if created {
		o.log.Info("created the merchant's database", "database", o.m.DBName)
	}
	return nil
}

// schemaForStart makes the database ready for rel before a start: it
// creates it when missing, and, when migrate allows (a merchant's first
// start), migrates it forward. Otherwise a schema other than the one rel
// needs is an error: a start or restart never migrates.
func (o *op) schemaForStart(ctx context.Context, rel *pkgstore.Release, port int, migrate bool) error {
	if err := o.ensureDatabase(ctx); err != nil {
		return err
	}
	if !o.managesSchema(rel) {
		// A release's plain migrate command runs on version changes only
		// (schemaBeforeChange): a start has no version to migrate from.
		return nil
	}
	cur, err := o.readSchema(ctx, rel, port)
	if err != nil {
		return fmt.Errorf("reading the schema version: %w", err)
	}
	need := rel.Manifest.Schema.Version
	switch {
	case cur == need:
		return nil
	case cur < need && migrate:
		return o.migrate(ctx, rel, need, "", cur, port)
	}
	return reconcile.WithClass(reconcile.Stalled, fmt.Errorf("%w: database %s is at schema %d, but %s %s needs %d; a start never migrates: change the version in the specs, or run steward rollback",
		ErrSchema, o.m.DBName, cur, o.m.Package, rel.Version, need))
}

// checkSchema fails when the merchant's database is not at the schema rel
// needs (a restart must not start a process on a database it cannot run
// on, and never migrates).
func (o *op) checkSchema(ctx context.Context, rel *pkgstore.Release, port int) error {
	if !o.managesSchema(rel) {
		return nil
	}
	cur, err := o.readSchema(ctx, rel, port)
	if err != nil {
		return fmt.Errorf("reading the schema version: %w", err)
	}
	if need := rel.Manifest.Schema.Version; cur != need {
		return reconcile.WithClass(reconcile.Stalled, fmt.Errorf("%w: database %s is at schema %d, but %s %s needs %d; a restart never migrates",
			ErrSchema, o.m.DBName, cur, o.m.Package, rel.Version, need))
	}
	return nil
}

// runMigrate runs a release's plain migrate command (a release without a
// schema block).
func (o *op) runMigrate(ctx context.Context, rel *pkgstore.Release, port int) error {
	out, err := o.e.Runtime.RunOnce(ctx, runtimeSpec(o, rel, rel.MigrateCommand(), port), 5*time.Minute, false)
	if err != nil {
		o.record(ctx, "migrate", "the release's migrate command", "error", tail(o.redact(out), 2000), err)
		return fmt.Errorf("migrate failed (the old version was not stopped): %w (its output is in the history)", err)
	}
	return nil
}

// schemaBeforeChange prepares the database before the running process is
// stopped for a change to rel: it migrates forward (after a backup), or,
// when rel needs an older schema than the database has, reports that a
// down migration must run once the newer process is stopped. A down
// migration the newer release (from) does not declare is refused here,
// with the backup to restore named, before anything stops.
func (o *op) schemaBeforeChange(ctx context.Context, rel, fromRel *pkgstore.Release, from string, port int) (downFirst bool, err error) {
	if err := o.ensureDatabase(ctx); err != nil {
		return false, err
	}
	if !o.managesSchema(rel) {
		if len(rel.MigrateCommand()) > 0 {
			return false, o.runMigrate(ctx, rel, port)
		}
		return false, nil
	}
	cur, err := o.readSchema(ctx, rel, port)
	if err != nil {
		return false, fmt.Errorf("reading the schema version: %w", err)
	}
	need := rel.Manifest.Schema.Version
	switch {
	case cur < need:
		return false, o.migrate(ctx, rel, need, from, cur, port)
	case cur > need:
		if fromRel == nil || !fromRel.Manifest.Schema.HasDown() {
			return false, o.noDownError(rel.Version, need, cur, from)
		}
		if o.managesSchema(fromRel) && fromRel.Manifest.Schema.Version < cur {
			// The running release's down migration knows schemas up to its
			// own; the database is past it (a newer version's migration
			// was never undone).
			return false, reconcile.WithClass(reconcile.Stalled, fmt.Errorf("%w: the database %s is at schema %d, newer than %s %s (schema %d), which runs, and %s (schema %d): no release at hand migrates it down; run the version that migrated it there, or restore a backup (steward rollback %s -to VERSION -restore-backup)",
				ErrSchema, o.m.DBName, cur, o.m.Package, from, fromRel.Manifest.Schema.Version, rel.Version, need, o.m.ID))
		}
		return true, nil
	}
	return false, nil
}

// downgrade migrates the database down to schema to with newer's down
// command.
func (o *op) downgrade(ctx context.Context, newer *pkgstore.Release, to int64, from string, port int) error {
	cur, err := o.readSchema(ctx, newer, port)
	if err != nil {
		return fmt.Errorf("reading the schema version: %w", err)
	}
	if cur <= to {
		return nil
	}
	return o.migrate(ctx, newer, to, from, cur, port)
}

// schemaForReturn undoes the failed release's migration so that the
// previous version can start again: with the failed release's down
// migration, or not at all, naming the backup to restore.
func (o *op) schemaForReturn(ctx context.Context, failed, prev *pkgstore.Release, target string, port int) error {
	if !o.managesSchema(prev) || !o.managesSchema(failed) {
		return nil
	}
	cur, err := o.readSchema(ctx, failed, port)
	if err != nil {
		// The database did not answer: the return is tried again.
		return reconcile.WithClass(reconcile.Transient, fmt.Errorf("reading the schema version: %w", err))
	}
	need := prev.Manifest.Schema.Version
	switch {
	case cur == need:
		return nil
	case cur < need:
		// The failed version was an older one (a rollback whose process
		// failed after its down migration): the version returned to
		// migrates the database up again, as it did before.
		return o.migrate(ctx, prev, need, target, cur, port)
	}
	if !failed.Manifest.Schema.HasDown() {
		return o.noDownError(prev.Version, need, cur, target)
	}
	return o.migrate(ctx, failed, need, target, cur, port)
}

// noDownError explains why version cannot run on the database and which
// backup brings it back.
func (o *op) noDownError(version string, need, cur int64, newer string) error {
	m := o.m
	msg := fmt.Sprintf("%s %s needs schema %d, the database %s is at %d, and %s declares no down migration", m.Package, version, need, m.DBName, cur, newer)
	if b, ok := o.lastBackup(version); ok {
		msg += fmt.Sprintf("; restore the backup %s (taken on %s at schema %d) with: steward rollback %s -to %s -restore-backup", b.Path, b.Version, b.Schema, m.ID, version)
	} else {
		msg += "; no backup of it is on record: restore the database by hand, then pin the version"
	}
	return reconcile.WithClass(reconcile.Stalled, fmt.Errorf("%w: %s", ErrSchema, msg))
}

// lastBackup is the newest backup of the merchant made while version ran.
func (o *op) lastBackup(version string) (dbadmin.Backup, bool) {
	if o.e.Databases == nil {
		return dbadmin.Backup{}, false
	}
	bs, err := o.e.Databases.Backups(o.m.ID)
	if err != nil {
		return dbadmin.Backup{}, false
	}
	for i := len(bs) - 1; i >= 0; i-- {
		if version == "" || bs[i].Version == version {
			return bs[i], true
		}
	}
	return dbadmin.Backup{}, false
}

// migrate brings the database from schema cur to need with rel's commands
// (forward: migrate; backward: down, which only a release newer than the
// target declares), under the database's migration lock, after a backup
// when the policy asks for one before a forward migration. It records what
// it did; the command's output kept in the history is scrubbed of every
// secret steward knows.
func (o *op) migrate(ctx context.Context, rel *pkgstore.Release, need int64, fromVersion string, cur int64, port int) error {
	_, url := o.databaseURLs()
	timeout := rel.Manifest.Schema.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	lctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	unlock, err := o.e.Databases.Lock(lctx, url)
	if err != nil {
		return fmt.Errorf("taking the migration lock of database %s: %w", o.m.DBName, err)
	}
	defer func() {
		if err := unlock(); err != nil {
			o.log.Warn("releasing the migration lock", "err", err)
		}
	}()
	// Read again under the lock: another merchant sharing the database may
	// have migrated it meanwhile.
	if v, err := o.readSchema(lctx, rel, port); err == nil {
		cur = v
	}
	if cur == need {
		return nil
	}
	if pol := o.d.Fleet.BackupFor(o.m.Package); pol.Enabled && cur > 0 && cur < need {
		b, err := o.e.Databases.Dump(lctx, url, dbadmin.Backup{Merchant: o.m.ID, Version: fromVersion, Schema: cur}, pol.Keep)
		if err != nil {
			return fmt.Errorf("backup before migrating (nothing was migrated): %w", err)
		}
		o.record(ctx, "backup", fmt.Sprintf("before migrating schema %d → %d", cur, need), "ok", b.Path, nil)
	}
	argv := rel.SchemaMigrateCommand()
	what := fmt.Sprintf("schema %d → %d", cur, need)
	if cur > need {
		if !rel.Manifest.Schema.HasDown() {
			return reconcile.WithClass(reconcile.Stalled, fmt.Errorf("%w: database %s is at schema %d and %s %s declares no down migration to %d", ErrSchema, o.m.DBName, cur, o.m.Package, rel.Version, need))
		}
		if argv, err = rel.SchemaDownCommand(need); err != nil {
			return err
		}
		what += " (down)"
	}
	out, err := o.e.Runtime.RunOnce(lctx, runtimeSpec(o, rel, argv, port), timeout, false)
	detail := tail(o.redact(out), 2000)
	if err != nil {
		o.record(ctx, "migrate", what, "error", detail, err)
		return fmt.Errorf("migration %s failed: %w", what, err)
	}
	if v, rerr := o.readSchema(lctx, rel, port); rerr == nil && v != need {
		err := fmt.Errorf("the database is at schema %d afterwards, not %d", v, need)
		o.record(ctx, "migrate", what, "error", detail, err)
		return fmt.Errorf("migration %s left the database at schema %d", what, v)
	}
	o.record(ctx, "migrate", what, "ok", detail, nil)
	return nil
}
