package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"steward/api"
	"steward/probe"
	"steward/reconcile"
	"steward/spec"
	"steward/state"
)

// The status document's types are the API's: the CLI prints the same
// document as GET /v1/status.
type (
	statusDoc      = api.Status
	merchantStatus = api.MerchantStatus
	databaseStatus = api.DatabaseStatus
	rolloutStatus  = api.RolloutStatus
)

// healthFunc tells whether a running merchant is healthy.
type healthFunc func(ctx context.Context, id string, port int, m *spec.Merchant) bool

// liveHealth probes once.
func liveHealth(pr reconcile.Prober) healthFunc {
	return func(ctx context.Context, id string, port int, m *spec.Merchant) bool {
		path := m.Health.HTTP
		if m.Health.TCP {
			path = ""
		}
		return pr.Probe(ctx, port, path, m.Health.Status, min(m.Health.Timeout, 2*time.Second)) == nil
	}
}

// buildStatus combines the state, the specs (may be nil) and live checks;
// health may be nil (then healthy is reported false).
func buildStatus(ctx context.Context, st *state.State, fl *spec.Fleet, alive func(reconcile.Proc) bool, health healthFunc, now time.Time) statusDoc {
	doc := statusDoc{Merchants: []merchantStatus{}, Databases: []databaseStatus{}, Serial: st.Serial, Revision: st.Revision}
	ids := map[string]bool{}
	for id := range st.Merchants {
		ids[id] = true
	}
	if fl != nil {
		for id := range fl.Merchants {
			ids[id] = true
		}
	}
	sorted := make([]string, 0, len(ids))
	for id := range ids {
		sorted = append(sorted, id)
	}
	sort.Strings(sorted)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	doc.Merchants = make([]merchantStatus, len(sorted))
	for i, id := range sorted {
		ms := merchantStatus{ID: id, State: reconcile.PhaseStopped}
		var m *spec.Merchant
		if fl != nil {
			m = fl.Merchants[id]
		}
		if m != nil {
			ms.InSpecs, ms.DesiredVersion, ms.Database, ms.Port = true, m.Version, m.Database, m.Port
		}
		rec := st.Merchants[id]
		running := false
		if rec != nil {
			ms.Version, ms.Port, ms.Restarts, ms.Failures, ms.LastError, ms.Revision = rec.Version, rec.Port, rec.Restarts, rec.Failures, rec.LastError, rec.Revision
			ms.Schema = rec.Schema
			if ms.Database == "" {
				ms.Database = rec.Applied["database"]
			}
			running = rec.PID != 0 && alive(reconcile.Proc{PID: rec.PID, StartTime: rec.StartTime})
			if running {
				ms.PID = rec.PID
				t := rec.StartedAt
				ms.Since = &t
			}
			ms.State = phaseToState(rec, running, now)
			if ms.State == reconcile.PhaseCrashLoop && !rec.NextAttempt.IsZero() {
				t := rec.NextAttempt
				ms.NextAttempt = &t
			}
		} else if m != nil {
			ms.State = reconcile.PhaseStopped
			if db := st.Databases[m.Database]; db != nil && !db.Up && m.OnDatabaseDown != spec.OnDBDownIgnore {
				ms.State = reconcile.PhaseHeld // a new merchant waiting for its database
			}
		}
		doc.Merchants[i] = ms
		if running && health != nil && m != nil {
			wg.Add(1)
			sem <- struct{}{}
			go func(i int, m *spec.Merchant, port int) {
				defer wg.Done()
				defer func() { <-sem }()
				doc.Merchants[i].Healthy = health(ctx, m.ID, port, m)
			}(i, m, rec.Port)
		}
	}
	wg.Wait()
	names := map[string]bool{}
	if fl != nil {
		for n := range fl.Databases {
			names[n] = true
		}
	}
	for n := range st.Databases {
		names[n] = true
	}
	for _, k := range sortedKeysOf(st.Rollouts) {
		ro := st.Rollouts[k]
		// Show rollouts the specs still ask for.
		wanted := false
		if fl != nil {
			for _, m := range fl.Merchants {
				if m.Package == ro.Package && m.Version == ro.Version {
					wanted = true
					break
				}
			}
		}
		if !wanted {
			continue
		}
		rs := rolloutStatus{Package: ro.Package, Version: ro.Version, Halted: ro.Halted, Reason: ro.Reason, Succeeded: ro.Succeeded, Failed: ro.Failed}
		if rs.Succeeded == nil {
			rs.Succeeded = []string{}
		}
		if rs.Failed == nil {
			rs.Failed = []string{}
		}
		doc.Rollouts = append(doc.Rollouts, rs)
	}
	for _, n := range sortedSet(names) {
		ds := databaseStatus{Name: n, Up: true}
		if db := st.Databases[n]; db != nil {
			ds.Up, ds.LastError = db.Up, db.LastError
			if !db.Since.IsZero() {
				t := db.Since
				ds.Since = &t
			}
		}
		doc.Databases = append(doc.Databases, ds)
	}
	return doc
}

func sortedKeysOf[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sortedSet(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// phaseToState maps a record to the status contract's state names.
func phaseToState(rec *state.Merchant, running bool, now time.Time) string {
	switch {
	case rec.Suspended:
		return reconcile.PhaseSuspended
	case running && rec.Phase == reconcile.PhaseStarting:
		return reconcile.PhaseStarting
	case running:
		return reconcile.PhaseRunning
	case rec.Phase == reconcile.PhaseCrashLoop && now.Before(rec.NextAttempt):
		return reconcile.PhaseCrashLoop
	case rec.Phase == reconcile.PhaseHeld, rec.Phase == reconcile.PhaseFailed:
		return rec.Phase
	default:
		return reconcile.PhaseStopped
	}
}

func cmdStatus(ctx context.Context, e *env, args []string) int {
	fs := e.flagSet("status", "", `
Shows every merchant: its state (running, starting, stopped, crashloop, held,
suspended, failed), pid, port, running and desired version, health, database
and restart count, and every database's reachability. Health is probed live.

-o json prints the same as the daemon's GET /v1/status: a stable document
for programs.`)
	config := configFlag(fs)
	output := fs.String("o", "text", "output `format`: text or json")
	if _, code, ok := parse(fs, args); !ok {
		return code
	}
	if *output != "text" && *output != "json" {
		return e.errorf("-o must be text or json, not %q", *output)
	}
	l := e.load(ctx, *config)
	if l.host == nil {
		renderDiagnostics(e.stderr, l.files, l.diags)
		return exitError
	}
	store, err := stateStore(l)
	if err != nil {
		return e.errorf("%s", err)
	}
	defer store.Close()
	st, err := store.Load(ctx)
	if err != nil {
		return e.errorf("loading state: %s", err)
	}
	doc := buildStatus(ctx, st, l.fleet, func(p reconcile.Proc) bool { return procChecker{}.Alive(p.PID, p.StartTime) }, liveHealth(probe.New()), time.Now())
	if l.diags.HasErrors() {
		doc.SpecError = fmt.Sprintf("the specs are invalid (%s); run \"steward validate\"", plural(len(l.diags.Errs()), "error"))
	}
	if *output == "json" {
		writeJSON(e.stdout, doc)
		return exitOK
	}
	renderStatus(e.stdout, doc, time.Now())
	return exitOK
}

func stateStore(l *loaded) (*state.FileStore, error) {
	st, err := state.OpenFile(l.host.State.Path)
	if err != nil {
		return nil, fmt.Errorf("opening state: %w", err)
	}
	return st, nil
}

// renderStatus prints one line a merchant and a summary.
func renderStatus(w io.Writer, doc statusDoc, now time.Time) {
	if doc.SpecError != "" {
		fmt.Fprintf(w, "! %s\n\n", doc.SpecError)
	}
	if len(doc.Merchants) == 0 {
		fmt.Fprintln(w, "No merchants.")
	}
	idw := len("MERCHANT")
	for _, m := range doc.Merchants {
		idw = max(idw, len(m.ID))
	}
	counts := map[string]int{}
	if len(doc.Merchants) > 0 {
		fmt.Fprintf(w, "  %-*s  %-9s  %7s  %5s  %-15s  %6s  %-7s  %-8s  %s\n", idw, "MERCHANT", "STATE", "PID", "PORT", "VERSION", "SCHEMA", "HEALTH", "RESTARTS", "NOTE")
	}
	for _, m := range doc.Merchants {
		counts[m.State]++
		sym := " "
		switch m.State {
		case "crashloop", "failed", "held":
			sym = "!"
		case "stopped":
			if m.InSpecs {
				sym = "!"
			}
		}
		pid, port, health := "-", "-", "-"
		if m.PID != 0 {
			pid = fmt.Sprint(m.PID)
			health = "down"
			if m.Healthy {
				health = "ok"
			}
		}
		if m.Port != 0 {
			port = fmt.Sprint(m.Port)
		}
		ver := m.Version
		if ver == "" {
			ver = "-"
		}
		if m.DesiredVersion != "" && m.DesiredVersion != m.Version {
			ver += "→" + m.DesiredVersion
		}
		var note string
		switch {
		case m.NextAttempt != nil:
			note = fmt.Sprintf("next attempt in %s", m.NextAttempt.Sub(now).Round(time.Second))
		case !m.InSpecs:
			note = "not in specs"
		case m.LastError != "":
			note = m.LastError
		}
		schema := "-"
		if m.Schema != nil {
			schema = fmt.Sprint(*m.Schema)
		}
		fmt.Fprintf(w, "%s %-*s  %-9s  %7s  %5s  %-15s  %6s  %-7s  %8d  %s\n", sym, idw, m.ID, m.State, pid, port, ver, schema, health, m.Restarts, note)
	}
	if len(doc.Databases) > 0 {
		fmt.Fprintln(w)
		for _, d := range doc.Databases {
			up := "up"
			if !d.Up {
				up = "DOWN"
				if d.LastError != "" {
					up += ": " + d.LastError
				}
			}
			fmt.Fprintf(w, "  database %-12s %s\n", d.Name, up)
		}
	}
	for _, r := range doc.Rollouts {
		if r.Halted {
			fmt.Fprintf(w, "\n! rollout of %s %s HALTED: %s\n", r.Package, r.Version, r.Reason)
		} else {
			fmt.Fprintf(w, "\n  rollout of %s %s: %d passed, %d failed\n", r.Package, r.Version, len(r.Succeeded), len(r.Failed))
		}
	}
	var parts []string
	for _, s := range []string{"running", "starting", "stopped", "crashloop", "held", "suspended", "failed"} {
		if counts[s] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[s], s))
		}
	}
	fmt.Fprintf(w, "\n%s", plural(len(doc.Merchants), "merchant"))
	if len(parts) > 0 {
		fmt.Fprintf(w, ": %s", strings.Join(parts, ", "))
	}
	fmt.Fprintln(w, ".")
}
