package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"regexp"
	"strings"
	"time"

	"steward/api"
	"steward/engine"
	"steward/runtime"
	"steward/spec"
	"steward/state"
)

// parseMerchant parses a merchant command's flags and its one MERCHANT
// argument; when ok is false the command returns code.
func parseMerchant(e *env, fs *flag.FlagSet, args []string) (id string, code int, ok bool) {
	pos, code, ok := parse(fs, args)
	if !ok {
		return "", code, false
	}
	name := strings.TrimPrefix(fs.Name(), "steward ")
	if len(pos) != 1 {
		return "", e.errorf("%s takes exactly one MERCHANT; got %d arguments (see steward %s -help)", name, len(pos), name), false
	}
	if err := spec.ValidMerchantID(pos[0]); err != nil {
		return "", e.errorf("%s", err), false
	}
	return pos[0], 0, true
}

// hostStore loads only the host config and opens its state store,
// reporting what goes wrong.
func (e *env) hostStore(config string) (*spec.Host, *state.FileStore, bool) {
	h, files, diags := e.loadHost(config, false)
	if diags.HasErrors() {
		renderDiagnosticsRedacted(e.stderr, files, diags, hostRedactor(nil))
		return nil, nil, false
	}
	store, err := state.OpenFile(h.State.Path)
	if err != nil {
		e.errorf("opening state: %s", err)
		return nil, nil, false
	}
	return h, store, true
}

func cmdRestart(ctx context.Context, e *env, args []string) int {
	fs := e.flagSet("restart", " MERCHANT", `
Stops the merchant's process (SIGTERM, then SIGKILL after its stop grace)
and starts it again on the same port, on the version the rollout policy
holds for it (never a version that failed on it), waiting until it answers.
A restart never migrates the database. With a router the new process starts
beside the old one and takes its traffic first (not for a merchant whose
spec fixes its port: it is replaced in place). While a daemon runs, the
restart goes through it. It is recorded with the reason "restart requested".`)
	config := configFlag(fs)
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
	if l.fleet.Merchants[id] == nil {
		return e.errorf("merchant %q is not in the specs", id)
	}
	start := time.Now()
	a, c, err := e.openWriter(ctx, l, "steward restart "+id, *lockWait)
	if c != nil {
		if err := c.Restart(ctx, id); err != nil {
			return e.errorf("restarting %s through the daemon: %s", id, err)
		}
		took := time.Since(start).Round(time.Millisecond)
		var doc api.Status
		if err := c.Status(ctx, &doc); err == nil {
			for _, m := range doc.Merchants {
				if m.ID == id {
					fmt.Fprintf(e.stdout, "%s restarted by the daemon: pid %d on port %d, version %s (%s).\n", id, m.PID, m.Port, m.Version, took)
					return exitOK
				}
			}
		}
		fmt.Fprintf(e.stdout, "%s restarted by the daemon (%s).\n", id, took)
		return exitOK
	}
	if err != nil {
		return e.errorf("%s", err)
	}
	defer a.Close()
	d := l.desired()
	a.Engine.SetRedactor(d.Redact)
	if err := a.Engine.NoteObservations(ctx, d, a.Engine.Observe(ctx, d, []string{id}, cliObserve())); err != nil {
		return e.errorf("%s", err)
	}
	stopRouter := startRouter(ctx, a, d, e.stderr)
	err = a.Engine.Restart(ctx, d, id, nil)
	if rerr := stopRouter(); rerr != nil {
		fmt.Fprintf(e.stderr, "warning: the routing was not applied: %v\n", rerr)
	}
	if err != nil {
		return e.errorf("restarting %s: %s", id, err)
	}
	rec := a.Engine.Record(id)
	fmt.Fprintf(e.stdout, "%s restarted: pid %d on port %d (%s).\n", id, rec.Current.PID, rec.Current.Port, time.Since(start).Round(time.Millisecond))
	return exitOK
}

func cmdSuspend(ctx context.Context, e *env, args []string) int {
	return setSuspended(ctx, e, args, true)
}

func cmdResume(ctx context.Context, e *env, args []string) int {
	return setSuspended(ctx, e, args, false)
}

func setSuspended(ctx context.Context, e *env, args []string, suspend bool) int {
	name, help := "resume", `
Hands a suspended merchant back to steward: the next apply or reconcile
converges it on the specs again.`
	if suspend {
		name, help = "suspend", `
Leaves the merchant exactly as it is until "steward resume": no restarts, no
upgrades, no drift correction, whatever happens to its process. For
maintenance by hand without fighting the reconcile loop.`
	}
	fs := e.flagSet(name, " MERCHANT", help)
	config := configFlag(fs)
	lockWait := fs.Duration("lock-timeout", 0, "wait this long for the state lock held by another steward")
	id, code, ok := parseMerchant(e, fs, args)
	if !ok {
		return code
	}
	h, files, diags := e.loadHost(*config, false)
	if diags.HasErrors() {
		renderDiagnosticsRedacted(e.stderr, files, diags, hostRedactor(nil))
		return exitError
	}
	l := &loaded{host: h}
	a, c, err := e.openWriter(ctx, l, "steward "+name+" "+id, *lockWait)
	if c != nil {
		if err := c.Suspend(ctx, id, suspend); err != nil {
			return e.errorf("%s %s through the daemon: %s", name, id, err)
		}
		e.suspendedMessage(id, suspend)
		return exitOK
	}
	if err != nil {
		return e.errorf("%s", err)
	}
	defer a.Close()
	changed, err := a.Engine.SetSuspended(ctx, id, suspend)
	if errors.Is(err, engine.ErrUnknownMerchant) {
		return e.errorf("steward has no record of merchant %q; only merchants it has started can be suspended or resumed", id)
	}
	if err != nil {
		return e.errorf("%s", err)
	}
	if !changed {
		if suspend {
			fmt.Fprintf(e.stdout, "%s is already suspended; nothing to do.\n", id)
		} else {
			fmt.Fprintf(e.stdout, "%s is not suspended; nothing to resume.\n", id)
		}
		return exitOK
	}
	e.suspendedMessage(id, suspend)
	return exitOK
}

func (e *env) suspendedMessage(id string, suspend bool) {
	if suspend {
		fmt.Fprintf(e.stdout, "%s suspended: steward leaves it exactly as it is until \"steward resume %s\".\n", id, id)
	} else {
		fmt.Fprintf(e.stdout, "%s resumed: the next apply or reconcile converges it on the specs.\n", id)
	}
}

func cmdHistory(ctx context.Context, e *env, args []string) int {
	fs := e.flagSet("history", " MERCHANT", `
Shows what steward did to a merchant and what it observed, oldest first:
time, action, result, version, pid, spec revision and reason.`)
	config := configFlag(fs)
	output := fs.String("o", "text", "output `format`: text or json")
	n := fs.Int("n", 50, "show at most the last `N` entries (0: all)")
	id, code, ok := parseMerchant(e, fs, args)
	if !ok {
		return code
	}
	if *n < 0 {
		return e.errorf("-n must be 0 (all) or more, not %d", *n)
	}
	_, store, ok := e.hostStore(*config)
	if !ok {
		return exitError
	}
	defer store.Close()
	events, err := store.Events(ctx, id, *n)
	if err != nil {
		return e.errorf("reading history: %s", err)
	}
	if *output == "json" {
		if events == nil {
			events = []state.Event{}
		}
		writeJSON(e.stdout, struct {
			Merchant string        `json:"merchant"`
			Events   []state.Event `json:"events"`
		}{id, events})
		return exitOK
	}
	if len(events) == 0 {
		if rec, err := store.Merchant(ctx, id); err == nil && rec == nil {
			if l := e.load(ctx, *config); l.fleet != nil && l.fleet.Merchants[id] == nil {
				return e.errorf("no history for %s: steward has no record of a merchant of that name, and the specs do not name one (see \"steward status\")", id)
			}
		}
		fmt.Fprintf(e.stdout, "No history for %s.\n", id)
		return exitOK
	}
	for _, ev := range events {
		line := fmt.Sprintf("%s  %-9s %-8s", ev.Time.Local().Format("2006-01-02 15:04:05"), ev.Action, ev.Result)
		if ev.Version != "" {
			line += "  v" + ev.Version
		}
		if ev.PID != 0 {
			line += fmt.Sprintf("  pid %d", ev.PID)
		}
		if ev.Revision != "" {
			line += "  " + shortRev(ev.Revision)
		}
		if ev.Reason != "" {
			line += "  " + ev.Reason
		}
		if ev.Error != "" {
			line += "  error: " + ev.Error
		}
		detail := ev.Detail != "" && ev.Action != "backup" && ev.Action != "restore" && ev.Action != "drop"
		if ev.Detail != "" && !detail {
			line += "  " + ev.Detail
		}
		fmt.Fprintln(e.stdout, line)
		if detail && ev.Result == "error" {
			// The end of the failed command's output, indented below it.
			for _, l := range lastN(strings.Split(strings.TrimRight(ev.Detail, "\n"), "\n"), 10) {
				fmt.Fprintf(e.stdout, "    | %s\n", l)
			}
		}
	}
	return exitOK
}

func shortRev(r string) string {
	r = strings.TrimPrefix(r, "sha256:")
	if len(r) > 12 {
		return r[:12]
	}
	return r
}

func cmdLogs(ctx context.Context, e *env, args []string) int {
	fs := e.flagSet("logs", " MERCHANT", `
Prints the end of a merchant's log (its stdout and stderr, across rotated
files). With -f it keeps printing new lines, across rotations, until
interrupted.`)
	config := configFlag(fs)
	n := fs.Int("n", 50, "print the last `N` lines (0: all)")
	grep := fs.String("grep", "", "only lines matching the regular expression `RE`")
	follow := fs.Bool("f", false, "follow: keep printing new lines")
	id, code, ok := parseMerchant(e, fs, args)
	if !ok {
		return code
	}
	if *n < 0 {
		return e.errorf("-n must be 0 (all) or more, not %d", *n)
	}
	var re *regexp.Regexp
	if *grep != "" {
		var err error
		if re, err = regexp.Compile(*grep); err != nil {
			return e.errorf("-grep: %s", err)
		}
	}
	// The specs are read for their secrets only: a value steward knows as
	// secret is redacted in the log as everywhere else. Broken specs still
	// give the log, with the secrets of what parsed.
	l := e.load(ctx, *config)
	if l.host == nil {
		l.renderDiags(e.stderr)
		return exitError
	}
	red := l.red
	if red == nil {
		red = l.host.Redactor()
	}
	filter := logFilter(red, re)
	if *follow {
		if err := runtime.FollowMerchant(ctx, l.host.Runtime.Root, id, *n, filter, e.stdout); err != nil && ctx.Err() == nil {
			return e.errorf("%s", err)
		}
		return exitOK
	}
	lines, err := runtime.TailMerchant(l.host.Runtime.Root, id, *n, filter)
	if err != nil {
		return e.errorf("%s", err)
	}
	for _, line := range lines {
		fmt.Fprintln(e.stdout, line)
	}
	return exitOK
}

// logFilter shows a merchant's log line with every secret red knows
// redacted, and only when re (nil: any) matches the line as shown, so
// that a grep cannot probe what was redacted.
func logFilter(red *spec.Redactor, re *regexp.Regexp) runtime.LineFilter {
	return func(line string, cut bool) (string, bool) {
		if cut {
			line = red.RedactCut(line) + runtime.CutMark
		} else {
			line = red.Redact(line)
		}
		return line, re == nil || re.MatchString(line)
	}
}

// lastN is the last n elements of s.
func lastN(s []string, n int) []string { return s[max(0, len(s)-n):] }
