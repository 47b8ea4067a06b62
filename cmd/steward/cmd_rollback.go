package main

import (
	"context"
	"fmt"
	"time"

	"steward/api"
)

func cmdRollback(ctx context.Context, e *env, args []string) int {
	fs := e.flagSet("rollback", " MERCHANT", `
Returns a merchant to its previous good version (or to -to VERSION) through
the same health gate as an upgrade, and pins it there while the specs ask
for the version they ask for now. The pin is kept like every other record:
it survives crashes and daemon restarts, and shows in plan and status.
Changing the merchant's version in the specs ends it. While a daemon runs,
the rollback goes through it. It is recorded in the history.`)
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
		l.renderDiags(e.stderr)
		return exitError
	}
	m := l.fleet.Merchants[id]
	if m == nil {
		return e.errorf("merchant %q is not in the specs", id)
	}
	start := time.Now()
	a, c, err := e.openWriter(ctx, l, "steward rollback "+id, *lockWait)
	if c != nil {
		v, err := c.Rollback(ctx, id, api.RollbackRequest{To: *to, RestoreBackup: *restore})
		if err != nil {
			return e.errorf("rolling %s back through the daemon: %s", id, err)
		}
		fmt.Fprintf(e.stdout, "%s rolled back to %s by the daemon in %s; it stays on %s while the specs ask for %s.\n", id, v, time.Since(start).Round(time.Millisecond), v, m.Version)
		return exitOK
	}
	if err != nil {
		return e.errorf("%s", err)
	}
	defer a.Close()
	d := l.desired()
	x := a.Engine
	x.SetRedactor(d.Redact)
	if err := x.NoteObservations(ctx, d, x.Observe(ctx, d, []string{id}, cliObserve())); err != nil {
		return e.errorf("%s", err)
	}
	target := *to
	if target == "" {
		if target, err = x.RollbackTarget(id); err != nil {
			return e.errorf("%s", err)
		}
	}
	from := ""
	if rec := x.Record(id); rec != nil {
		from = rec.Current.Version
	}
	if *restore {
		fmt.Fprintf(e.stdout, "Restoring the newest backup of %s taken while %s ran, then starting %s.\n", id, target, target)
	}
	stopRouter := startRouter(ctx, a, d, e.stderr)
	err = x.Rollback(ctx, d, id, target, *restore, nil)
	if rerr := stopRouter(); rerr != nil {
		fmt.Fprintf(e.stderr, "warning: the routing was not applied: %v\n", rerr)
	}
	if err != nil {
		return e.errorf("rolling %s back to %s: %s", id, target, err)
	}
	fmt.Fprintf(e.stdout, "%s rolled back %s → %s in %s; it stays on %s while the specs ask for %s.\n", id, from, target, time.Since(start).Round(time.Millisecond), target, m.Version)
	return exitOK
}
