package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"steward/dbadmin"
	"steward/internal/dsn"
	"steward/reconcile"
	"steward/spec"
	"steward/state"
)

// The operations people ask for by name. The CLI runs them itself when no
// daemon runs, and through the daemon's API when one does: either way
// they are these functions.

// Restart restarts one merchant on the version the policy holds for it
// (never a version that failed on it), without a migration, and returns
// once the new process answers.
func (e *Engine) Restart(ctx context.Context, d Desired, id string, hooks Hooks) error {
	rec := e.Record(id)
	switch {
	case d.Fleet == nil || d.Fleet.Merchants[id] == nil:
		return fmt.Errorf("%w: merchant %q is not in the specs", ErrUnknownMerchant, id)
	case rec == nil || rec.Port == 0:
		return fmt.Errorf("%w: merchant %q has never been started; run \"steward apply\"", ErrUnknownMerchant, id)
	case rec.Suspended:
		return fmt.Errorf("%w: \"steward resume %s\" first", ErrSuspended, id)
	}
	a := reconcile.Action{Kind: reconcile.Restart, Merchant: id, Reason: "restart requested", Rev: rec.Rev,
		After: &reconcile.Snapshot{Package: rec.Package, Version: rec.Current.Version, Port: rec.Port}}
	if !rec.Current.Running() {
		a.Kind = reconcile.Start
	}
	return e.Execute(ctx, d, a, "", hooks)
}

// SetSuspended suspends (on) or resumes a merchant. A suspended merchant
// is left exactly as it is: no restarts, no upgrades, no drift correction.
// It reports whether anything changed.
func (e *Engine) SetSuspended(ctx context.Context, id string, on bool) (bool, error) {
	changed := false
	rec, err := e.update(ctx, id, func(r *reconcile.Record) bool {
		if r.Suspended == on {
			return false
		}
		r.Suspended, changed = on, true
		return true
	})
	if err != nil || !changed {
		return false, err
	}
	action := "resume"
	if on {
		action = "suspend"
	}
	e.record(ctx, state.Event{Merchant: id, Action: action, Reason: action + " requested", Result: "ok", PID: rec.Current.PID, Version: rec.Current.Version})
	return true, nil
}

// RollbackTarget is the version "steward rollback" returns merchant id to
// without -to: its newest good version other than the one it runs.
func (e *Engine) RollbackTarget(id string) (string, error) {
	rec := e.Record(id)
	if rec == nil || rec.Current.Version == "" {
		return "", fmt.Errorf("%w: merchant %q has never been started; nothing to roll back", ErrUnknownMerchant, id)
	}
	good := slices.DeleteFunc(slices.Clone(rec.GoodVersions), func(v string) bool { return v == rec.Current.Version })
	if len(good) == 0 {
		return "", fmt.Errorf("%s has no previous good version on record (good versions: %v); name one with -to VERSION", id, rec.GoodVersions)
	}
	return good[len(good)-1], nil
}

// leftOnPorts reports a process of merchant id's (working in its
// directory) that still holds one of rec's ports after its processes were
// stopped.
func (e *Engine) leftOnPorts(id string, rec *reconcile.Record) error {
	if rec == nil || e.Paths == nil {
		return nil
	}
	for _, port := range []int{rec.Port, rec.AltPort} {
		if port == 0 {
			continue
		}
		if owner, mine, found, err := e.Runtime.PortOwner(port, e.Paths.WorkDir(id)); err == nil && found && mine {
			return fmt.Errorf("stopped and forgotten, but port %d is still held by pid %d, a process it started and left behind; steward stops only the processes it started: stop pid %d", port, owner.PID, owner.PID)
		}
	}
	return nil
}

// NoteReady records merchant id's current process p ready (running) when
// it is still the current one, left "starting", with no change under way.
func (e *Engine) NoteReady(ctx context.Context, id string, p Proc) error {
	_, err := e.update(ctx, id, func(r *reconcile.Record) bool {
		if r.Phase != reconcile.PhaseStarting || r.Change != nil || procOf(r.Current) != p {
			return false
		}
		r.NoteReady()
		return true
	})
	return err
}

// refusedError is err as ErrRefused, with err's message alone.
type refusedError struct{ error }

func (r refusedError) Is(target error) bool { return target == ErrRefused }

func refused(err error) error { return refusedError{err} }

// Rollback returns merchant id to version through the same health gate as
// an upgrade, and pins it there while the specs ask for the version they
// ask for now (a change of the version in the specs ends the pin). The pin
// is a record like any other: it survives crashes and restarts, and shows
// in plan and status. With restore, the newest database backup taken while
// version ran is restored first (for a release without a down migration).
func (e *Engine) Rollback(ctx context.Context, d Desired, id, version string, restore bool, hooks Hooks) error {
	m := d.Fleet.Merchants[id]
	if m == nil {
		return fmt.Errorf("%w: merchant %q is not in the specs", ErrUnknownMerchant, id)
	}
	rec := e.Record(id)
	if rec == nil || rec.Current.Version == "" {
		return fmt.Errorf("%w: merchant %q has never been started; nothing to roll back", ErrUnknownMerchant, id)
	}
	if rec.Suspended {
		return fmt.Errorf("%w: \"steward resume %s\" first", ErrSuspended, id)
	}
	if rec.Change != nil {
		return fmt.Errorf("%s is changing from %s to %s; wait for it to finish", id, d.redact(rec.Change.From), d.redact(rec.Change.To))
	}
	if version == rec.Current.Version && !restore {
		return fmt.Errorf("%s already runs %s", id, d.redact(version))
	}
	from := rec.Current.Version
	if spec.CompareVersions(version, from) > 0 && !slices.Contains(rec.GoodVersions, version) {
		// Forward goes through the specs, the rollout and its gate; a
		// rollback may return to a newer version only where it ran well.
		return refused(fmt.Errorf("%s is newer than %s, which %s runs, and never ran well on it; rollback returns to a version it ran, and new versions come through the specs (and their rollout)",
			d.redact(version), d.redact(from), id))
	}
	if restore {
		if err := e.restoreBackup(ctx, d, id, version); err != nil {
			return err
		}
	}
	pin := func(r *reconcile.Record) bool {
		if version == m.Version {
			r.Pin = nil
		} else {
			r.Pin = &reconcile.Pin{Version: version, ForSpec: m.Version, At: e.Now()}
		}
		r.BadVersions = slices.DeleteFunc(r.BadVersions, func(v string) bool { return v == version })
		return true
	}
	if _, err := e.update(ctx, id, pin); err != nil {
		return err
	}
	kind := reconcile.Rollback
	if restore && version == from {
		kind = reconcile.Start
	}
	a := reconcile.Action{Kind: kind, Merchant: id, Reason: fmt.Sprintf("steward rollback: version %s → %s", from, version),
		Before: &reconcile.Snapshot{Package: rec.Package, Version: from, Port: rec.Port},
		After:  &reconcile.Snapshot{Package: m.Package, Version: version, Port: rec.Port}}
	if err := e.Execute(ctx, d, a, "", hooks); err != nil {
		e.update(ctx, id, func(r *reconcile.Record) bool {
			if r.Pin == nil || r.Pin.Version != version {
				return false
			}
			r.Pin = nil
			return true
		})
		return err
	}
	return nil
}

// Backups lists merchant id's database backups, oldest first.
func (e *Engine) Backups(id string) ([]dbadmin.Backup, error) {
	if e.Databases == nil {
		return nil, nil
	}
	return e.Databases.Backups(id)
}

// restoreBackup stops the merchant and restores the newest backup taken
// while version ran into its database.
func (e *Engine) restoreBackup(ctx context.Context, d Desired, id, version string) error {
	m := d.Fleet.Merchants[id]
	if e.Databases == nil || m.Database == "" {
		return fmt.Errorf("merchant %s has no database to restore", id)
	}
	bs, err := e.Databases.Backups(id)
	if err != nil {
		return fmt.Errorf("listing backups: %w", err)
	}
	var pick *dbadmin.Backup
	for i := len(bs) - 1; i >= 0; i-- {
		if bs[i].Version == version {
			pick = &bs[i]
			break
		}
	}
	if pick == nil {
		var have []string
		for _, b := range bs {
			have = append(have, fmt.Sprintf("%s (%s, schema %d)", b.Path, b.Version, b.Schema))
		}
		return fmt.Errorf("no backup of %s taken while %s ran; backups: %v", id, version, have)
	}
	o := &op{e: e, d: d, m: m, pkg: d.Fleet.Packages[m.Package], a: reconcile.Action{Merchant: id}, rid: newReconcileID(), log: e.Log.With("merchant", id)}
	rec := e.Record(id)
	if err := o.stopInstances(ctx, rec); err != nil {
		return err
	}
	_, url := o.databaseURLs()
	err = e.Databases.Restore(ctx, url, *pick)
	o.record(ctx, "restore", fmt.Sprintf("restore the backup taken on %s at schema %d", pick.Version, pick.Schema), map[bool]string{true: "error", false: "ok"}[err != nil], pick.Path, err)
	if err != nil {
		return fmt.Errorf("restoring %s: %w", pick.Path, err)
	}
	return nil
}

// DestroyResult is what Destroy did.
type DestroyResult struct {
	Stopped []string
	// Backups maps each dropped database to the backup taken before.
	Backups map[string]string
	// Absent lists the merchant databases that did not exist (nothing to
	// back up or drop).
	Absent []string
	Failed map[string]error
}

// Destroy stops every merchant steward has a record of (by its recorded
// process, never by pattern) and forgets it. With dropDatabases, every
// merchant database of the specs is backed up and then dropped.
func (e *Engine) Destroy(ctx context.Context, d Desired, dropDatabases bool, hooks Hooks) DestroyResult {
	res := DestroyResult{Backups: map[string]string{}, Failed: map[string]error{}}
	recs, _, _ := e.Snapshot()
	ids := make([]string, 0, len(recs))
	for id := range recs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	// The schema version each merchant's database was last seen at, for
	// the backups' names.
	schema := map[string]int64{}
	for id, r := range recs {
		if r.Schema != nil {
			schema[id] = *r.Schema
		}
	}
	for _, id := range ids {
		a := reconcile.Action{Kind: reconcile.Delete, Merchant: id, Reason: "steward destroy"}
		if err := e.Execute(ctx, d, a, "", hooks); err != nil {
			res.Failed[id] = err
			continue
		}
		// A process the merchant started and detached from itself
		// outlives it: say so, with its pid, rather than "stopped".
		if left := e.leftOnPorts(id, recs[id]); left != nil {
			res.Failed[id] = left
			continue
		}
		res.Stopped = append(res.Stopped, id)
	}
	if !dropDatabases || d.Fleet == nil || e.Databases == nil {
		return res
	}
	for _, id := range d.Fleet.MerchantIDs() {
		m := d.Fleet.Merchants[id]
		db := d.Fleet.Databases[m.Database]
		if db == nil {
			continue
		}
		server := db.DSN.Reveal()
		if ok, err := e.Databases.Exists(ctx, server, m.DBName); err != nil {
			res.Failed[id] = fmt.Errorf("looking up database %s (it was not dropped): %w", m.DBName, err)
			continue
		} else if !ok {
			res.Absent = append(res.Absent, m.DBName)
			continue
		}
		b, err := e.Databases.Dump(ctx, dsn.WithDatabase(server, m.DBName), dbadmin.Backup{Merchant: id, Version: "destroy", Schema: schema[id]}, 0)
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				res.Failed[id] = fmt.Errorf("backing up database %s (it was not dropped): %w", m.DBName, err)
			}
			continue
		}
		if err := e.Databases.Drop(ctx, server, m.DBName); err != nil {
			res.Failed[id] = fmt.Errorf("dropping database %s (backed up to %s): %w", m.DBName, b.Path, err)
			continue
		}
		res.Backups[m.DBName] = b.Path
		e.record(ctx, state.Event{Merchant: id, Action: "drop", Reason: "steward destroy -drop-databases", Result: "ok", Detail: b.Path})
	}
	return res
}

func (d Desired) redact(s string) string {
	if d.Redact != nil {
		return d.Redact(s)
	}
	return s
}
