package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"steward/reconcile"
)

func cmdRollback(ctx context.Context, e *env, args []string) int {
	fs := e.flagSet("rollback", " MERCHANT", `
Returns a merchant to its previous good version (or to -to VERSION) through
the same health gate as an upgrade, and keeps it there while the specs ask
for the version it was rolled back from. Changing the merchant's version in
the specs ends the rollback. The rollback is recorded in the history.`)
	config := configFlag(fs)
	to := fs.String("to", "", "roll back to `VERSION` instead of the previous good one")
	restore := fs.Bool("restore-backup", false, "restore the newest database backup taken while VERSION ran, then start it (for a release without a down migration)")
	lockWait := fs.Duration("lock-timeout", 0, "wait this long for the state lock held by another steward")
	id, code, ok := parseMerchant(e, fs, args)
	if !ok {
		return code
	}
	l := e.load(ctx, *config)
	if l.diags.HasErrors() {
		renderDiagnostics(e.stderr, l.files, l.diags)
		return exitError
	}
	m := l.fleet.Merchants[id]
	if m == nil {
		return e.errorf("merchant %q is not in the specs", id)
	}
	s, err := e.openStack(ctx, l, "steward rollback "+id, *lockWait, newLogger(io.Discard, slog.LevelInfo))
	if err != nil {
		return e.errorf("%s", err)
	}
	defer s.close()
	s.exec.Observe(ctx)
	rec := s.exec.State().Merchants[id]
	if rec == nil || rec.Version == "" {
		return e.errorf("merchant %q has never been started; nothing to roll back", id)
	}
	target := *to
	if target == "" {
		good := slices.DeleteFunc(slices.Clone(rec.GoodVersions), func(v string) bool { return v == rec.Version })
		if len(good) == 0 {
			return e.errorf("%s has no previous good version on record (good versions: %v); name one with -to VERSION", id, rec.GoodVersions)
		}
		target = good[len(good)-1]
	}
	if target == rec.Version && !*restore {
		return e.errorf("%s already runs %s", id, target)
	}
	d := reconcile.Desired{Fleet: l.fleet, Ports: l.host.Runtime.Ports}
	if *restore {
		backups, err := s.exec.BackupsOf(id)
		if err != nil {
			return e.errorf("listing backups: %s", err)
		}
		var pick *reconcile.Backup
		for i := len(backups) - 1; i >= 0; i-- {
			if backups[i].Version == target {
				pick = &backups[i]
				break
			}
		}
		if pick == nil {
			var have []string
			for _, b := range backups {
				have = append(have, fmt.Sprintf("%s (%s, schema %d)", b.Path, b.Version, b.Schema))
			}
			return e.errorf("no backup of %s taken while %s ran; backups: %v", id, target, have)
		}
		fmt.Fprintf(e.stdout, "Restoring %s (taken on %s at schema %d) into %s's database, then starting %s.\n", pick.Path, pick.Version, pick.Schema, id, target)
		start := time.Now()
		if err := s.exec.RestoreBackup(ctx, d, m, target, *pick, l.fleet.Revision); err != nil {
			s.exec.Flush(ctx)
			return e.errorf("%s", err)
		}
		s.exec.Flush(ctx)
		fmt.Fprintf(e.stdout, "%s restored and running %s in %s.\n", id, target, time.Since(start).Round(time.Millisecond))
		return exitOK
	}
	s.exec.SetOverride(id, target, m.Version)
	a := reconcile.Action{Kind: reconcile.Rollback, Merchant: id, Reason: fmt.Sprintf("steward rollback: version %s → %s", rec.Version, target),
		Before: &reconcile.Snapshot{Package: rec.Package, Version: rec.Version, Port: rec.Port},
		After:  &reconcile.Snapshot{Package: m.Package, Version: target, Port: rec.Port}}
	start := time.Now()
	err = s.exec.Do(ctx, d, a, l.fleet.Revision)
	s.exec.Flush(ctx)
	if err != nil {
		s.exec.SetOverride(id, "", "")
		s.exec.Flush(ctx)
		return e.errorf("rolling %s back to %s: %s", id, target, err)
	}
	fmt.Fprintf(e.stdout, "%s rolled back %s → %s in %s; it stays on %s while the specs ask for %s.\n", id, rec.Version, target, time.Since(start).Round(time.Millisecond), target, m.Version)
	return exitOK
}
