package main

import (
	"context"
	"fmt"
	"time"

	"steward/internal/app"
	"steward/router"
)

func cmdDestroy(ctx context.Context, e *env, args []string) int {
	fs := e.flagSet("destroy", "", `
Stops every merchant steward has a record of, each by the process steward
recorded for it (pid and process start time checked; never by name or
pattern), and forgets it. Like "terraform destroy" it shows what it will do
and asks first.

With -drop-databases it also drops each merchant's database, after a backup
named in the output (under the state directory's backups/). The daemon must
not run: stop it first.`)
	config := configFlag(fs)
	auto := fs.Bool("auto-approve", false, "destroy without asking for confirmation")
	drop := fs.Bool("drop-databases", false, "also back up and drop every merchant database")
	lockWait := fs.Duration("lock-timeout", 0, "wait this long for the state lock held by another steward")
	pos, code, ok := parse(fs, args)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return e.errorf("destroy takes no arguments; got %q", pos)
	}
	l := e.load(ctx, *config)
	if l.host == nil {
		l.renderDiags(e.stderr)
		return exitError
	}
	if *drop && l.fleet == nil {
		l.renderDiags(e.stderr)
		return e.errorf("-drop-databases needs valid specs to know the merchants' databases; fix them, or destroy without it")
	}
	a, c, err := e.openWriter(ctx, l, "steward destroy", *lockWait)
	if c != nil {
		return e.errorf("a steward daemon is running (%s); stop it first (it would start the merchants again)", c.Base)
	}
	if err != nil {
		return e.errorf("%s", err)
	}
	defer a.Close()
	x := a.Engine
	recs, _, _ := x.Snapshot()
	ids := sortedKeysOf(recs)
	rt := a.Router
	if rt == nil {
		rt = app.LeftoverRouter(l.host, nil)
	}
	var nginx *router.Health
	if rt != nil {
		if h := rt.Status(); h.Running {
			nginx = &h
		}
	}
	if len(ids) == 0 && !*drop && nginx == nil {
		fmt.Fprintln(e.stdout, "No merchants to destroy.")
		return exitOK
	}
	fmt.Fprint(e.stdout, "steward will destroy:\n\n")
	for _, id := range ids {
		r := recs[id]
		what := "no process"
		if r.Current.Running() {
			what = fmt.Sprintf("pid %d on port %d", r.Current.PID, r.Current.Port)
		}
		fmt.Fprintf(e.stdout, "  - %-20s %s\n", id, what)
	}
	dbs := 0
	if *drop {
		for _, id := range l.fleet.MerchantIDs() {
			if m := l.fleet.Merchants[id]; m.Database != "" {
				fmt.Fprintf(e.stdout, "  - database %s of %s (backed up first)\n", m.DBName, id)
				dbs++
			}
		}
	}
	if nginx != nil {
		fmt.Fprintf(e.stdout, "  - the router's nginx, pid %d\n", nginx.PID)
	}
	fmt.Fprintf(e.stdout, "\nPlan: %s to stop and forget", plural(len(ids), "merchant"))
	if *drop {
		fmt.Fprintf(e.stdout, ", %s to back up and drop", plural(dbs, "database"))
	}
	if nginx != nil {
		fmt.Fprint(e.stdout, ", nginx to stop")
	}
	fmt.Fprintln(e.stdout, ".")
	if code, ok := e.confirmTo(*auto, "Destroy all of this?", "destroy"); !ok {
		return code
	}
	start := time.Now()
	d := l.desired()
	res := x.Destroy(ctx, d, *drop, nil)
	if nginx != nil {
		if err := rt.Stop(ctx); err != nil {
			fmt.Fprintf(e.stdout, "router: stopping its nginx: %v\n", err)
		} else {
			fmt.Fprintln(e.stdout, "router: its nginx stopped")
		}
	}
	for _, id := range res.Stopped {
		fmt.Fprintf(e.stdout, "%s: stopped and forgotten\n", id)
	}
	for _, db := range sortedKeysOf(res.Backups) {
		fmt.Fprintf(e.stdout, "database %s: dropped; its backup is %s\n", db, res.Backups[db])
	}
	for _, db := range res.Absent {
		fmt.Fprintf(e.stdout, "database %s: does not exist; nothing to drop\n", db)
	}
	for _, id := range sortedKeysOf(res.Failed) {
		fmt.Fprintf(e.stdout, "%s: %v\n", id, res.Failed[id])
	}
	if len(res.Failed) > 0 {
		fmt.Fprintf(e.stdout, "\nDestroy finished with %s in %s.\n", plural(len(res.Failed), "failure"), time.Since(start).Round(time.Millisecond))
		return exitError
	}
	fmt.Fprintf(e.stdout, "\nDestroy complete in %s.\n", time.Since(start).Round(time.Millisecond))
	return exitOK
}
