package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"steward/api"
	"steward/engine"
	"steward/reconcile"
	"steward/router"
)

func cmdApply(ctx context.Context, e *env, args []string) int {
	fs := e.flagSet("apply", " [PLANFILE]", `
Converges the fleet on the specs: makes a plan (as "steward plan" shows it),
asks for confirmation, and carries it out, printing each merchant's progress.
Every action is recorded in the history with its reason and result.

With PLANFILE (from "steward plan -out") exactly that plan is applied, without
asking; it is refused when a merchant it touches changed, or the specs
changed, since it was made.

Only one steward writes the state at a time: a second apply fails at once,
or waits up to -lock-timeout; while a daemon runs, apply goes through it.
That makes "apply -auto-approve" safe to run from cron.

Exit status: 0 when every action succeeded (merchants left held, with why,
are listed); 1 when an action failed or a rollout halted (the failed
merchants are listed), or on error.`)
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
	if *parallel < 1 {
		return e.errorf("-parallel must be at least 1, not %d", *parallel)
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
		l.renderDiags(e.stderr)
		fmt.Fprintf(e.stderr, "\n%s; nothing was changed.\n", l.what())
		return exitError
	}
	a, client, err := e.openWriter(ctx, l, "steward apply", *lockWait)
	if client != nil {
		return e.applyViaDaemon(ctx, client, saved, *auto)
	}
	if err != nil {
		return e.errorf("%s", err)
	}
	defer a.Close()
	x := a.Engine
	d := l.desired()
	x.SetRedactor(d.Redact)
	var p *reconcile.Plan
	var leftover *router.Router
	if saved != nil {
		if err := checkSaved(saved, x, l.fleet.Revision); err != nil {
			return e.errorf("%s", err)
		}
		p = saved.Reconcile()
	} else {
		p, leftover = makePlan(ctx, a, l)
		renderPlan(e.stdout, p)
		if !p.HasChanges() {
			// A halted rollout of a version the specs no longer ask for is
			// forgotten all the same, so that asking for it again retries it.
			x.ForgetRollouts(ctx, l.fleet)
			return e.stalledOutcome(p)
		}
		if code, ok := e.confirm(*auto); !ok {
			return code
		}
	}
	if err := x.NoteObservations(ctx, d, x.Observe(ctx, d, nil, cliObserve())); err != nil {
		return e.errorf("%s", err)
	}
	pr := &progress{w: e.stdout, total: countChanges(p), start: time.Now()}
	stopRouter := startRouter(ctx, a, d, e.stderr)
	res := x.Apply(ctx, d, p, pr, *parallel)
	rerr := stopRouter()
	if leftover != nil {
		if err := leftover.Stop(ctx); err != nil {
			rerr = fmt.Errorf("stopping the nginx no router asks for any more: %w", err)
		} else {
			fmt.Fprintln(e.stdout, "\nThe nginx steward started is stopped: the host config has no managed router any more.")
		}
	}
	x.CollectGarbage(ctx, d)
	x.ForgetRollouts(ctx, l.fleet)
	if ctx.Err() != nil {
		fmt.Fprintln(e.stdout, "\nApply interrupted; what was done is recorded. Run apply again to finish.")
		return exitError
	}
	outcome := e.applyOutcome(p, res, time.Since(pr.start))
	switch {
	case rerr != nil:
		fmt.Fprintf(e.stdout, "\nThe routing was not applied: %v\nSee \"steward status\".\n", rerr)
		return exitError
	case a.Router != nil:
		h := a.Router.Status()
		fmt.Fprintf(e.stdout, "The routing is live: %s, nginx pid %d.\n", plural(h.Routes, "route"), h.PID)
	}
	return outcome
}

// checkSaved refuses a saved plan made against another state history,
// from other specs, or touching a merchant whose record moved on since.
func checkSaved(sp *savedPlan, x *engine.Engine, revision string) error {
	// A state never written has no lineage yet: the records' revisions are
	// all a plan made then can be checked by.
	if sp.Lineage != "" && x.Lineage() != "" && sp.Lineage != x.Lineage() {
		return fmt.Errorf("the saved plan was made against another state (lineage %s, this state is %s); make a new plan", sp.Lineage, x.Lineage())
	}
	if sp.Revision != revision {
		return fmt.Errorf("the saved plan is stale: it was made from specs %s, the specs are now %s; run \"steward plan\" again", sp.Revision, revision)
	}
	for _, a := range sp.Actions {
		var rev uint64
		if r := x.Record(a.Merchant); r != nil {
			rev = r.Rev
		}
		if rev != a.Rev {
			return fmt.Errorf("the saved plan is stale: merchant %s changed since it was planned (record revision %d, now %d); run \"steward plan\" again", a.Merchant, a.Rev, rev)
		}
	}
	return nil
}

// applyOutcome prints how an apply ended and returns the exit code.
func (e *env) applyOutcome(p *reconcile.Plan, res engine.ApplyResult, took time.Duration) int {
	took = took.Round(time.Millisecond)
	if len(res.Held) > 0 {
		fmt.Fprintf(e.stdout, "\n%s left held:\n", plural(len(res.Held), "merchant"))
		for _, id := range sortedKeysOf(res.Held) {
			fmt.Fprintf(e.stdout, "  ! %s: %s\n", id, res.Held[id])
		}
	}
	if !res.OK() {
		what := plural(len(res.Failed), "failure")
		if len(res.Skipped) > 0 {
			what += fmt.Sprintf(" and %d skipped", len(res.Skipped))
		}
		fmt.Fprintf(e.stdout, "\nApply finished with %s in %s:\n", what, took)
		for _, id := range sortedKeysOf(res.Failed) {
			fmt.Fprintf(e.stdout, "  %s: %v\n", id, res.Failed[id])
		}
		for _, id := range res.Skipped {
			fmt.Fprintf(e.stdout, "  %s: skipped, its rollout halted\n", id)
		}
		fmt.Fprintln(e.stdout, "See \"steward history MERCHANT\" and \"steward status\".")
		return exitError
	}
	s := p.Summary()
	fmt.Fprintf(e.stdout, "\nApply complete in %s: %d created, %d changed, %d deleted.\n", took, s.Create, s.Change, s.Delete)
	return e.stalledOutcome(p)
}

// stalledOutcome is apply's exit code once everything it could do is
// done: 1 while a merchant is held by something only a person can fix (a
// missing package version, a port in use, a halted rollout, a version
// that failed on it), so that a periodic apply does not report success
// while it cannot converge; 0 otherwise (holds that end by themselves,
// such as a database still down or a rollout waiting for its canary, are
// no error).
func (e *env) stalledOutcome(p *reconcile.Plan) int {
	var stalled []string
	for _, a := range p.Actions {
		if a.Kind == reconcile.Hold && a.Class == reconcile.Stalled {
			stalled = append(stalled, a.Merchant)
		}
	}
	if len(stalled) == 0 {
		return exitOK
	}
	fmt.Fprintf(e.stdout, "\n%s cannot converge until you act (%s; see the holds above): exit status 1.\n", plural(len(stalled), "merchant"), strings.Join(stalled, ", "))
	return exitError
}

// applyViaDaemon shows the daemon's plan, asks, and has the daemon apply it.
func (e *env) applyViaDaemon(ctx context.Context, c *api.Client, saved *savedPlan, auto bool) int {
	fmt.Fprintf(e.stdout, "A steward daemon is running; applying through it (%s).\n\n", c.Base)
	doc, err := c.Plan(ctx)
	if err != nil {
		return e.errorf("asking the daemon for its plan: %s", err)
	}
	p := doc.Reconcile()
	if saved != nil {
		if saved.Reconcile().Digest() != p.Digest() {
			return e.errorf("the saved plan is stale: the daemon's plan now differs (specs %s); run \"steward plan\" again", p.Revision)
		}
	} else {
		renderPlan(e.stdout, p)
		if !p.HasChanges() {
			return e.stalledOutcome(p)
		}
		if code, ok := e.confirm(auto); !ok {
			return code
		}
	}
	start := time.Now()
	total, done := countChanges(p), 0
	res := engine.ApplyResult{Failed: map[string]error{}, Held: map[string]string{}}
	failed, err := c.Apply(ctx, doc, func(pr api.Progress) {
		done++
		took := time.Duration(pr.Seconds * float64(time.Second)).Round(time.Millisecond)
		if pr.Error != "" {
			res.Failed[pr.Merchant] = fmt.Errorf("%s", pr.Error)
			fmt.Fprintf(e.stdout, "[%d/%d] %s: %s failed after %s: %s\n", done, total, pr.Merchant, pr.Action, took, pr.Error)
			return
		}
		fmt.Fprintf(e.stdout, "[%d/%d] %s: %s done in %s\n", done, total, pr.Merchant, pr.Action, took)
	})
	if errors.Is(err, api.ErrStale) {
		return e.errorf("nothing was applied: %s. The daemon acts on its own while it runs (see \"steward status\"); run \"steward apply\" again to see its plan now", err)
	}
	if err != nil {
		return e.errorf("%s", err)
	}
	for _, a := range p.Actions {
		if a.Kind == reconcile.Hold {
			res.Held[a.Merchant] = a.Reason
		}
	}
	if failed > 0 && len(res.Failed) == 0 {
		res.Failed["(daemon)"] = fmt.Errorf("%d actions failed", failed)
	}
	return e.applyOutcome(p, res, time.Since(start))
}

// confirm asks for "yes" on a terminal unless auto.
func (e *env) confirm(auto bool) (int, bool) {
	return e.confirmTo(auto, "Apply these actions?", "apply")
}

// confirmTo asks question on a terminal (unless auto) and accepts only
// "yes"; verb names the command in the messages.
func (e *env) confirmTo(auto bool, question, verb string) (int, bool) {
	if !auto {
		f, isFile := e.stdin.(*os.File)
		if !isFile || !isTerminal(f) {
			return e.errorf("not %sing: confirmation needs a terminal; pass -auto-approve to %s without asking", strings.TrimSuffix(verb, "e"), verb), false
		}
		fmt.Fprintf(e.stdout, "\n%s Only 'yes' is accepted: ", question)
		line, _ := bufio.NewReader(e.stdin).ReadString('\n')
		if strings.TrimSpace(line) != "yes" {
			fmt.Fprintf(e.stdout, "%s cancelled; nothing was changed.\n", strings.ToUpper(verb[:1])+verb[1:])
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

// progress prints one line per finished action: "[3/6] acme: create done in 210ms".
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

func sortedKeysOf[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
