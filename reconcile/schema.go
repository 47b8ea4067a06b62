package reconcile

import (
	"context"
	"errors"
	"fmt"
	"golang.org/x/sync/singleflight"
	"sync"
	"time"

	"steward/spec"
	"steward/state"
)

// SchemaSpec is what a release's manifest says about its database schema.
type SchemaSpec struct {
	// Version is the schema version the release needs.
	Version int64
	// Migrate migrates forward to Version (argv[0] absolute).
	Migrate []string
	// Down returns the command that migrates down to schema to; nil when
	// the release declares no down migration.
	Down func(to int64) ([]string, error)
	// Query reads the current version (SQL), unless VersionCommand is set.
	Query          string
	VersionCommand []string
	Timeout        time.Duration
}

// Backup is a dump of a merchant's database made before a migration.
type Backup struct {
	Path    string
	Version string // the version that ran when the dump was made
	Schema  int64
	Time    time.Time
}

// Databases is what the executor needs of merchant databases.
type Databases interface {
	// Ensure creates the merchant's database on its server if missing.
	Ensure(ctx context.Context, serverDSN, dbName string) (created bool, err error)
	// SchemaVersion reads a database's schema version the way s says.
	SchemaVersion(ctx context.Context, databaseURL string, s *SchemaSpec, l Launch) (int64, error)
	// Lock takes the migration lock of one database (a PostgreSQL advisory
	// lock on a connection held until unlock).
	Lock(ctx context.Context, databaseURL string) (unlock func() error, err error)
	// Dump backs the database up and keeps the newest keep dumps of merchant.
	Dump(ctx context.Context, databaseURL, merchant, version string, schema int64, keep int) (Backup, error)
	// Restore replaces the database's content with a dump.
	Restore(ctx context.Context, databaseURL string, b Backup) error
	// Backups lists a merchant's dumps, oldest first.
	Backups(merchant string) ([]Backup, error)
}

// ErrSchema marks errors about a database schema a release cannot run on.
var ErrSchema = errors.New("schema mismatch")

// releaseCache remembers installed releases by package@version.
type releaseCache struct {
	mu    sync.Mutex
	m     map[string]*Release
	group singleflight.Group
}

// release installs (or looks up) pkg@version once per executor; concurrent
// callers for one version share one install (which verifies the tarball's
// digest: not something to do sixteen times at once).
func (x *Executor) release(ctx context.Context, pkg *spec.Package, version string) (*Release, error) {
	key := state.RolloutKey(pkg.Name, version)
	x.rels.mu.Lock()
	if r := x.rels.m[key]; r != nil {
		x.rels.mu.Unlock()
		return r, nil
	}
	x.rels.mu.Unlock()
	v, err, _ := x.rels.group.Do(key, func() (any, error) {
		return x.Packages.Install(ctx, pkg, version)
	})
	if err != nil {
		return nil, err
	}
	r := v.(*Release)
	x.rels.mu.Lock()
	if x.rels.m == nil {
		x.rels.m = map[string]*Release{}
	}
	x.rels.m[key] = r
	x.rels.mu.Unlock()
	return r, nil
}

// databaseURL is merchant m's DATABASE_URL, or "" without a database.
func databaseURL(fl *spec.Fleet, m *spec.Merchant) (server, url string) {
	db := fl.Databases[m.Database]
	if db == nil {
		return "", ""
	}
	return db.DSN.Reveal(), DatabaseURL(db.DSN.Reveal(), m.DBName)
}

// readSchema reads m's schema version as rel says, and records it.
func (x *Executor) readSchema(ctx context.Context, d Desired, m *spec.Merchant, rel *Release, port int) (int64, error) {
	_, url := databaseURL(d.Fleet, m)
	v, err := x.Databases.SchemaVersion(ctx, url, rel.Schema, Launch{Merchant: m.ID, ReleaseDir: rel.Dir, Env: processEnv(d.Fleet, m, port), Port: port})
	if err != nil {
		return 0, err
	}
	x.mu.Lock()
	if rec := x.st.Merchants[m.ID]; rec != nil {
		rec.Schema = &v
	}
	x.mu.Unlock()
	return v, nil
}

// ObserveSchemas reads every merchant's schema version (where its database
// is up and its package declares a schema) and what the running and desired
// versions need, into o. Desired versions are installed to learn their
// needs; failures leave the entries out.
func (x *Executor) ObserveSchemas(ctx context.Context, d Desired, o *Observed) {
	if x.Databases == nil || d.Fleet == nil {
		return
	}
	if o.Schema == nil {
		o.Schema = map[string]int64{}
	}
	if o.Needs == nil {
		o.Needs = map[string]int64{}
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for _, id := range d.Fleet.MerchantIDs() {
		m := d.Fleet.Merchants[id]
		if m.Database == "" || o.DatabaseDown[m.Database] || o.DatabaseUnknown[m.Database] {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			schema, needs := x.observeSchema(ctx, d, m, o.State.Merchants[m.ID])
			mu.Lock()
			defer mu.Unlock()
			for k, v := range needs {
				o.Needs[k] = v
			}
			if schema != nil {
				o.Schema[m.ID] = *schema
			}
		}()
	}
	wg.Wait()
}

// observeSchema reads one merchant's schema and the needs of its running
// and wanted versions.
func (x *Executor) observeSchema(ctx context.Context, d Desired, m *spec.Merchant, rec *state.Merchant) (*int64, map[string]int64) {
	pkg := d.Fleet.Packages[m.Package]
	if pkg == nil {
		return nil, nil
	}
	needs := map[string]int64{}
	var reader *Release
	port := 0
	versions := []string{WantedVersion(m, rec)}
	if rec != nil && rec.Version != "" {
		versions = append([]string{rec.Version}, versions...)
		port = rec.Port
	}
	for _, v := range versions {
		rel, err := x.release(ctx, pkg, v)
		if err != nil || rel.Schema == nil {
			continue
		}
		needs[state.RolloutKey(m.Package, v)] = rel.Schema.Version
		if reader == nil {
			reader = rel
		}
	}
	if reader == nil || rec == nil {
		return nil, needs
	}
	v, err := x.readSchema(ctx, d, m, reader, port)
	if err != nil {
		x.Log.Debug("reading the schema version failed", "merchant", m.ID, "err", err)
		return nil, needs
	}
	return &v, needs
}

// migrate brings m's database from schema cur to schema need with rel's
// commands (forward: migrate; backward: down, which only a release newer
// than the target declares), under the database's migration lock, after a
// backup when the policy asks for one before a forward migration. It
// records what it did.
func (x *Executor) migrate(ctx context.Context, d Desired, m *spec.Merchant, rel *Release, need int64, fromVersion string, cur int64, port int, revision string) error {
	_, url := databaseURL(d.Fleet, m)
	timeout := rel.Schema.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	lctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	unlock, err := x.Databases.Lock(lctx, url)
	if err != nil {
		return fmt.Errorf("taking the migration lock of database %s: %w", m.DBName, err)
	}
	defer func() {
		if err := unlock(); err != nil {
			x.Log.Warn("releasing the migration lock", "merchant", m.ID, "err", err)
		}
	}()
	// Read again under the lock: another merchant sharing the database may
	// have migrated it meanwhile.
	if v, err := x.readSchema(lctx, d, m, rel, port); err == nil {
		cur = v
	}
	if cur == need {
		return nil
	}
	if pol := d.Fleet.BackupFor(m.Package); pol.Enabled && cur > 0 && cur < need {
		b, err := x.Databases.Dump(lctx, url, m.ID, fromVersion, cur, pol.Keep)
		if err != nil {
			return fmt.Errorf("backup before migrating (nothing was migrated): %w", err)
		}
		x.record(state.Event{Time: x.Now(), Merchant: m.ID, Action: "backup", Reason: fmt.Sprintf("before migrating schema %d → %d", cur, need), Result: "ok", Version: fromVersion, Revision: revision, Error: "", Detail: b.Path})
	}
	argv := rel.Schema.Migrate
	what := fmt.Sprintf("schema %d → %d", cur, need)
	if cur > need {
		if rel.Schema.Down == nil {
			return fmt.Errorf("%w: database %s is at schema %d and %s %s declares no down migration to %d", ErrSchema, m.DBName, cur, m.Package, rel.Version, need)
		}
		if argv, err = rel.Schema.Down(need); err != nil {
			return err
		}
		what += " (down)"
	}
	out, err := x.Runtime.Run(lctx, Launch{Merchant: m.ID, Argv: argv, ReleaseDir: rel.Dir, Env: processEnv(d.Fleet, m, port), Port: port}, timeout)
	ev := state.Event{Time: x.Now(), Merchant: m.ID, Action: "migrate", Reason: what, Result: "ok", Revision: revision, Detail: tail(out, 2000)}
	if err != nil {
		ev.Result, ev.Error = "error", err.Error()
		x.record(ev)
		return fmt.Errorf("migration %s failed: %w", what, err)
	}
	v, rerr := x.readSchema(lctx, d, m, rel, port)
	if rerr == nil && v != need {
		ev.Result, ev.Error = "error", fmt.Sprintf("the database is at schema %d afterwards, not %d", v, need)
		x.record(ev)
		return fmt.Errorf("migration %s left the database at schema %d", what, v)
	}
	x.record(ev)
	return nil
}

// prepareSchema makes m's database ready for rel before rel starts: it
// creates the database if missing and migrates forward. A database newer
// than rel needs is an error (ErrSchema): rolling back below a migration is
// the upgrade's business.
func (x *Executor) prepareSchema(ctx context.Context, d Desired, m *spec.Merchant, rel *Release, fromVersion string, port int, revision string) error {
	if x.Databases == nil || m.Database == "" {
		return nil
	}
	server, _ := databaseURL(d.Fleet, m)
	if server == "" {
		return nil
	}
	if created, err := x.Databases.Ensure(ctx, server, m.DBName); err != nil {
		return fmt.Errorf("creating database %s: %w", m.DBName, err)
	} else if created {
		x.Log.Info("created the merchant's database", "merchant", m.ID, "database", m.DBName)
	}
	if rel.Schema == nil {
		return nil
	}
	cur, err := x.readSchema(ctx, d, m, rel, port)
	if err != nil {
		return fmt.Errorf("reading the schema version: %w", err)
	}
	switch {
	case cur == rel.Schema.Version:
		return nil
	case cur > rel.Schema.Version:
		return fmt.Errorf("%w: database %s is at schema %d, but %s %s needs %d", ErrSchema, m.DBName, cur, m.Package, rel.Version, rel.Schema.Version)
	}
	return x.migrate(ctx, d, m, rel, rel.Schema.Version, fromVersion, cur, port, revision)
}

// lastBackup is the newest backup of merchant made while version ran.
func (x *Executor) lastBackup(merchant, version string) (Backup, bool) {
	if x.Databases == nil {
		return Backup{}, false
	}
	bs, err := x.Databases.Backups(merchant)
	if err != nil {
		return Backup{}, false
	}
	for i := len(bs) - 1; i >= 0; i-- {
		if version == "" || bs[i].Version == version {
			return bs[i], true
		}
	}
	return Backup{}, false
}

// RestoreBackup stops merchant m, restores backup b into its database and
// starts version on it; with version different from the specs' it pins
// the merchant there ("steward rollback -restore-backup").
func (x *Executor) RestoreBackup(ctx context.Context, d Desired, m *spec.Merchant, version string, b Backup, revision string) error {
	if x.Databases == nil || m.Database == "" {
		return fmt.Errorf("merchant %s has no database to restore", m.ID)
	}
	x.mu.Lock()
	rec := x.st.Merchants[m.ID]
	if rec == nil {
		x.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrUnknownMerchant, m.ID)
	}
	port := rec.Port
	x.mu.Unlock()
	if err := x.stop(ctx, m.ID, grace(m)); err != nil {
		return err
	}
	_, url := databaseURL(d.Fleet, m)
	err := x.Databases.Restore(ctx, url, b)
	ev := state.Event{Time: x.Now(), Merchant: m.ID, Action: "restore", Reason: fmt.Sprintf("restore the backup taken on %s at schema %d", b.Version, b.Schema), Result: "ok", Revision: revision, Detail: b.Path}
	if err != nil {
		ev.Result, ev.Error = "error", err.Error()
		x.record(ev)
		return fmt.Errorf("restoring %s: %w", b.Path, err)
	}
	x.record(ev)
	if version != m.Version {
		x.SetOverride(m.ID, version, m.Version)
	}
	a := Action{Kind: Rollback, Merchant: m.ID, Reason: fmt.Sprintf("start %s on the restored database", version), After: &Snapshot{Package: m.Package, Version: version, Port: port}}
	return x.Do(ctx, d, a, revision)
}

// BackupsOf lists merchant's backups, oldest first.
func (x *Executor) BackupsOf(merchant string) ([]Backup, error) {
	if x.Databases == nil {
		return nil, nil
	}
	return x.Databases.Backups(merchant)
}
