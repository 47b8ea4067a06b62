package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"steward/api"
	"steward/engine"
	"steward/probe"
	"steward/reconcile"
	"steward/router"
	"steward/spec"
)

// The status document's types are the API's: the CLI prints the same
// document as GET /v1/status.
type (
	statusDoc      = api.Status
	merchantStatus = api.MerchantStatus
	databaseStatus = api.DatabaseStatus
	rolloutStatus  = api.RolloutStatus
)

// statusView is the status document of st, the same as GET /v1/status.
func statusView(st engine.Status) statusDoc {
	doc := statusDoc{Merchants: []merchantStatus{}, Databases: []databaseStatus{}, Revision: st.Revision, Serial: st.Serial, PendingEvents: st.PendingEvents}
	for _, m := range st.Merchants {
		ms := merchantStatus{ID: m.ID, State: m.State, PID: m.PID, Port: m.Port, Version: m.Version, DesiredVersion: m.DesiredVersion, Healthy: m.Healthy,
			Database: m.Database, Restarts: m.Restarts, Schema: m.Schema, Failures: m.Failures, LastError: m.LastError, Revision: m.Revision, InSpecs: m.InSpecs}
		if !m.NextAttempt.IsZero() {
			t := m.NextAttempt
			ms.NextAttempt = &t
		}
		if !m.Since.IsZero() && m.PID != 0 {
			t := m.Since
			ms.Since = &t
		}
		ms.Domains, ms.PathPrefix, ms.RoutePort = m.Domains, m.PathPrefix, m.RoutePort
		ms.LastEvent, ms.ErrorClass, ms.Pin, ms.Change, ms.HoldReason = m.LastEvent, m.ErrorClass, m.Pin, m.Change, m.Hold
		for _, in := range m.Instances {
			if in.PID == 0 && in.Role == "current" && len(m.Instances) == 1 {
				continue
			}
			ms.Instances = append(ms.Instances, api.InstanceStatus{Role: in.Role, PID: in.PID, Port: in.Port, Version: in.Version, Routed: in.Routed, Alive: in.Alive})
		}
		doc.Merchants = append(doc.Merchants, ms)
	}
	for _, d := range st.Databases {
		ds := databaseStatus{Name: d.Name, Up: d.Up, Checked: d.Checked, LastError: d.LastError}
		if !d.Since.IsZero() {
			t := d.Since
			ds.Since = &t
		}
		doc.Databases = append(doc.Databases, ds)
	}
	for _, r := range st.Rollouts {
		rs := rolloutStatus{Package: r.Package, Version: r.Version, Halted: r.Halted, Reason: r.Reason, Succeeded: r.Succeeded, Failed: r.Failed,
			Merchants: r.Merchants, Canary: r.Canary, MaxParallel: r.MaxParallel}
		if !r.StartedAt.IsZero() {
			t := r.StartedAt
			rs.StartedAt = &t
		}
		if !r.HaltedAt.IsZero() {
			t := r.HaltedAt
			rs.HaltedAt = &t
		}
		if rs.Succeeded == nil {
			rs.Succeeded = []string{}
		}
		if rs.Failed == nil {
			rs.Failed = []string{}
		}
		doc.Rollouts = append(doc.Rollouts, rs)
	}
	return doc
}

func cmdStatus(ctx context.Context, e *env, args []string) int {
	fs := e.flagSet("status", "", `
Shows every merchant: its state (running, starting, stopped, crashloop, held,
suspended, failed), pid, port, running and desired version, health, database
and restart count, and every database's reachability. Health is probed live.
Nothing is changed.

When the specs do not load, the processes are still shown as they are,
with a line saying so; "steward validate" shows the errors.

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
		l.renderDiags(e.stderr)
		return exitError
	}
	a, err := e.openReader(ctx, l)
	if err != nil {
		return e.errorf("%s", err)
	}
	defer a.Close()
	a.Engine.LoadLastEvents(ctx, 5000)
	pr := probe.New()
	opts := engine.StatusOptions{SpecsInvalid: l.diags.HasErrors()}
	if l.fleet != nil && !l.diags.HasErrors() {
		// What plan would say now: the databases checked once, and why
		// each held merchant is held.
		d := l.desired()
		obs := a.Engine.Observe(ctx, d, nil, cliObserve())
		opts.Databases = func(name string) reconcile.DBState { return obs.Databases[name] }
		opts.Holds = map[string]string{}
		for _, act := range reconcile.Diff(a.Engine.Input(d, obs)).Actions {
			if act.Kind == reconcile.Hold {
				opts.Holds[act.Merchant] = act.Reason
			}
		}
	}
	opts.Healthy = func(ctx context.Context, id string, port int, m *spec.Merchant) bool {
		path := m.Health.HTTP
		if m.Health.TCP {
			path = ""
		}
		return pr.Probe(ctx, port, path, m.Health.Status, min(max(m.Health.Timeout, time.Second), 2*time.Second)) == nil
	}
	st := a.Engine.Status(ctx, l.desired(), opts)
	doc := statusView(st)
	doc.Router = routerView(a.Router, l.host)
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

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// routerView is the router's health for the status document (nil without
// a router).
func routerView(r *router.Router, h *spec.Host) *api.RouterStatus {
	if r == nil {
		return nil
	}
	hl := r.Status()
	rs := &api.RouterStatus{Mode: string(hl.Mode), Running: hl.Running, PID: hl.PID, Routes: hl.Routes, Reloads: hl.Reloads + hl.Starts,
		Failing: hl.Failing, Failures: hl.Failures, LastError: hl.LastError}
	if h != nil && h.Router != nil {
		rs.Listen = h.Router.Nginx.Listen
	}
	if !hl.LastReload.IsZero() {
		t := hl.LastReload
		rs.LastReload = &t
	}
	if !hl.LastErrorAt.IsZero() {
		t := hl.LastErrorAt
		rs.LastErrorAt = &t
	}
	return rs
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
		case m.HoldReason != "":
			note = m.HoldReason
		case m.Change != "":
			note = "in progress: " + m.Change
		case m.LastError != "" && (m.State != "running" || !m.Healthy || m.Version != m.DesiredVersion || m.ErrorClass == "stalled"):
			// The last error explains a merchant that is not where it
			// should be, or a change a person must unblock; once it is
			// where it should be, an old error is history, not news.
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
			switch {
			case !d.Checked:
				up = "unknown (not checked yet)"
			case !d.Up:
				up = "DOWN"
				if d.LastError != "" {
					up += ": " + d.LastError
				}
			}
			fmt.Fprintf(w, "  database %-12s %s\n", d.Name, up)
		}
	}
	if rt := doc.Router; rt != nil {
		state := "running"
		if !rt.Running && rt.Mode == "managed" {
			state = "NOT RUNNING"
		}
		fmt.Fprintf(w, "\n  router nginx (%s) on %s: %s, %s, %s", rt.Mode, rt.Listen, state, plural(rt.Routes, "route"), plural(rt.Reloads, "reload"))
		if rt.LastReload != nil {
			fmt.Fprintf(w, ", last %s", rt.LastReload.Local().Format("15:04:05"))
		}
		fmt.Fprintln(w)
		if rt.Failing {
			fmt.Fprintf(w, "! router: the last routing change was refused; the one before stays in force: %s\n", firstLine(rt.LastError))
		}
		for _, m := range doc.Merchants {
			for _, dom := range m.Domains {
				if m.RoutePort != 0 {
					fmt.Fprintf(w, "  route %s → %s port %d\n", dom, m.ID, m.RoutePort)
				} else {
					fmt.Fprintf(w, "  route %s → %s: maintenance page (503)\n", dom, m.ID)
				}
			}
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
