package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"steward/reconcile"
)

func cmdApply(ctx context.Context, e *env, args []string) int {
	fs := e.flagSet("apply", " [PLANFILE]", `
Converges the fleet on the specs: makes a plan (as "steward plan" shows it),
asks for confirmation, and carries it out, printing each merchant's progress.
Every action is recorded in the state's history with its reason and result.

With PLANFILE (from "steward plan -out") exactly that plan is applied, without
asking; it is refused when the state or the specs changed since it was made.

Only one steward writes the state at a time: a second apply (or a running
daemon) makes this one fail at once, or wait up to -lock-timeout. That makes
"apply -auto-approve" safe to run from cron.`)
	config := configFlag(fs)
	auto := fs.Bool("auto-approve", false, "apply without asking for confirmation")
	lockWait := fs.Duration("lock-timeout", 0, "wait this long for the state lock held by another steward (0: fail at once)")
	parallel := fs.Int("parallel", 16, "how many merchants are acted on at once")
	pos, code, ok := parse(fs, args)
	if !ok {
		return code
	}
	if len(pos) > 1 {
		return e.errorf("apply takes at most one plan file; got %q", pos)
	}
	var saved *savedPlan
	if len(pos) == 1 {
		sp, err := readPlanFile(pos[0])
		if err != nil {
			return e.errorf("%s", err)
		}
		saved = sp
		if *config == "" && e.getenv("STEWARD_CONFIG") == "" {
			*config = sp.Config
		}
	}
	l := e.load(ctx, *config)
	if l.diags.HasErrors() {
		renderDiagnostics(e.stderr, l.files, l.diags)
		fmt.Fprintln(e.stderr, "\nThe specs are invalid; nothing was changed.")
		return exitError
	}
	s, err := e.openStack(ctx, l, "steward apply", *lockWait, newLogger(io.Discard, slog.LevelInfo))
	if c := daemonClient(l, err); c != nil {
		return e.applyViaDaemon(ctx, c, saved, *auto)
	}
	if err != nil {
		return e.errorf("%s", err)
	}
	defer s.close()
	x := s.exec
	x.Parallel = *parallel
	desired := reconcile.Desired{Fleet: l.fleet, Ports: l.host.Runtime.Ports}

	var p *reconcile.Plan
	if saved != nil {
		cur := x.State()
		switch {
		// A state never saved has no lineage yet: serial 0 is all it says.
		case saved.Serial != 0 && saved.Lineage != cur.Lineage:
			return e.errorf("the saved plan was made against another state (lineage %s, this state is %s); make a new plan", saved.Lineage, cur.Lineage)
		case saved.Serial != cur.Serial:
			return e.errorf("the saved plan is stale: it was made at state serial %d, the state is now at serial %d; run \"steward plan\" again", saved.Serial, cur.Serial)
		case saved.Revision != l.fleet.Revision:
			return e.errorf("the saved plan is stale: it was made from specs %s, the specs are now %s; run \"steward plan\" again", saved.Revision, l.fleet.Revision)
		}
		x.Observe(ctx)
		p = saved.Plan
	} else {
		o := x.Observe(ctx)
		o.DatabaseDown = databasesDown(ctx, l.fleet)
		x.ObserveSchemas(ctx, desired, &o)
		p = reconcile.Diff(desired, o)
		renderPlan(e.stdout, p)
		if !p.HasChanges() {
			x.Flush(ctx)
			return exitOK
		}
		if code, ok := e.confirm(*auto); !ok {
			return code
		}
	}
	pr := &progress{w: e.stdout, total: countChanges(p), start: time.Now()}
	x.Hooks = pr
	failed := x.Apply(ctx, desired, p)
	x.CollectGarbage(ctx, desired)
	s.store.Close()
	sum := p.Summary()
	if failed > 0 {
		fmt.Fprintf(e.stdout, "\nApply finished with %s in %s: see the messages above and \"steward history MERCHANT\".\n", plural(failed, "failure"), time.Since(pr.start).Round(time.Millisecond))
		return exitError
	}
	if ctx.Err() != nil {
		fmt.Fprintln(e.stdout, "\nApply interrupted; what was done is recorded. Run apply again to finish.")
		return exitError
	}
	fmt.Fprintf(e.stdout, "\nApply complete in %s: %d created, %d changed, %d deleted.\n", time.Since(pr.start).Round(time.Millisecond), sum.Create, sum.Change, sum.Delete)
	return exitOK
}

// confirm asks for "yes" on a terminal unless auto.
func (e *env) confirm(auto bool) (int, bool) {
	if !auto {
		f, isFile := e.stdin.(*os.File)
		if !isFile || !isTerminal(f) {
			return e.errorf("not applying: confirmation needs a terminal; pass -auto-approve to apply without asking"), false
		}
		fmt.Fprint(e.stdout, "\nApply these actions? Only 'yes' is accepted: ")
		line, _ := bufio.NewReader(e.stdin).ReadString('\n')
		if strings.TrimSpace(line) != "yes" {
			fmt.Fprintln(e.stdout, "Apply cancelled; nothing was changed.")
			return exitError, false
		}
	}
	fmt.Fprintln(e.stdout)
	return 0, true
}

func countChanges(p *reconcile.Plan) int {
	n := 0
	for _, a := range p.Actions {
		if a.Kind.IsChange() {
			n++
		}
	}
	return n
}

// progress prints one line per finished action: "[3/6] acme: create done (0.21s)".
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	total int
	done  int
	start time.Time
}

func (p *progress) ActionStart(a reconcile.Action) {}

func (p *progress) ActionDone(a reconcile.Action, err error, took time.Duration) {
	if !a.Kind.IsChange() {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done++
	if err != nil {
		fmt.Fprintf(p.w, "[%d/%d] %s: %s failed after %s: %v\n", p.done, p.total, a.Merchant, a.Kind, took.Round(time.Millisecond), err)
		return
	}
	fmt.Fprintf(p.w, "[%d/%d] %s: %s done in %s\n", p.done, p.total, a.Merchant, a.Kind, took.Round(time.Millisecond))
}
