package engine

import (
	"context"
	"sort"
	"sync"
	"time"

	"steward/reconcile"
	"steward/spec"
	"steward/state"
)

// Status is the state of the fleet as people and programs see it: every
// merchant's state, processes and versions, the databases and the
// rollouts. It is a model; the CLI and the API render it (as text, or as
// the stable JSON document of `steward status -o json`).
type Status struct {
	Merchants []MerchantStatus
	Databases []DatabaseStatus
	Rollouts  []RolloutStatus
	Revision  string
	Serial    uint64
	// PendingEvents are history events not written yet (the store refused
	// them; they are retried); DroppedEvents were given up after too many
	// waited.
	PendingEvents, DroppedEvents int
}

// MerchantStatus is one merchant.
type MerchantStatus struct {
	ID string
	// State is one of running, starting, stopped, crashloop, held,
	// suspended, failed.
	State string
	// PID, Port and Version are those of the instance serving (or, during
	// a change without a router, of the new one starting): status never
	// claims a version that is not running.
	PID            int
	Port           int
	Version        string
	DesiredVersion string
	Healthy        bool
	Database       string
	Restarts       int
	Schema         *int64
	Failures       int
	NextAttempt    time.Time
	Since          time.Time
	LastError      string
	ErrorClass     string
	Revision       string
	InSpecs        bool
	Suspended      bool
	// Pin is the version "steward rollback" holds it on ("" when none).
	Pin string
	// Hold says why it runs another version than its specs' (a failed
	// version, a halted rollout or one whose gate is closed, a pin); ""
	// when it runs its specs' version or a change is in progress.
	Hold string
	// Change describes a change in progress ("upgrade 1.0.0 → 1.1.0,
	// step started").
	Change    string
	Instances []InstanceStatus
	// Domains and PathPrefix are routed to RoutePort (the routed
	// instance's port; 0 while the merchant answers its maintenance page),
	// when a router is configured.
	Domains    []string
	PathPrefix string
	RoutePort  int
	// LastEvent is the newest event of its history, when known.
	LastEvent *state.Event
}

// InstanceStatus is one process of a merchant.
type InstanceStatus struct {
	Role    string // "current" or "candidate"
	PID     int
	Port    int
	Version string
	Routed  bool
	Alive   bool
}

// DatabaseStatus is one database server's reachability.
type DatabaseStatus struct {
	Name string
	Up   bool
	// Checked: Up is known, from a check; a database never checked yet is
	// neither up nor down.
	Checked   bool
	Since     time.Time
	LastError string
}

// RolloutStatus is the progress of one rollout the specs ask for.
type RolloutStatus struct {
	Package, Version  string
	Halted            bool
	Reason            string
	Succeeded, Failed []string
	// Pending lists merchants still to change.
	Pending []string
	// Merchants are all the merchants the rollout moves, canaries first.
	Merchants           []string
	Canary, MaxParallel int
	StartedAt, HaltedAt time.Time
}

// StatusOptions say where status's live facts come from.
type StatusOptions struct {
	// Healthy tells whether merchant id's process answers on port (nil:
	// health is not checked, and reported false).
	Healthy func(ctx context.Context, id string, port int, m *spec.Merchant) bool
	// SpecsInvalid says the specs did not load: merchants in the records
	// are not reported missing from them.
	SpecsInvalid bool
	// Databases gives a database's reachability when a watcher decided it
	// (the daemon); nil takes the recorded one.
	Databases func(name string) reconcile.DBState
	// Holds are the reasons of the holds of a plan made now, by merchant:
	// why each is not converging (nil: only the version policy's reasons
	// are shown).
	Holds map[string]string
}

// Status builds the status of the fleet d describes (d.Fleet may be nil)
// from the records and /proc. It changes nothing.
func (e *Engine) Status(ctx context.Context, d Desired, opts StatusOptions) Status {
	e.init()
	recs, rollouts, dbs := e.Snapshot()
	now := e.Now()
	fl := d.Fleet
	st := Status{}
	st.PendingEvents, st.DroppedEvents = e.PendingEvents()
	ids := map[string]bool{}
	for id := range recs {
		ids[id] = true
	}
	if fl != nil {
		st.Revision = fl.Revision
		for id := range fl.Merchants {
			ids[id] = true
		}
	}
	for _, r := range recs {
		st.Serial = max(st.Serial, r.Rev)
	}
	sorted := make([]string, 0, len(ids))
	for id := range ids {
		sorted = append(sorted, id)
	}
	sort.Strings(sorted)
	st.Merchants = make([]MerchantStatus, len(sorted))
	last := e.LastEvents()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i, id := range sorted {
		var m *spec.Merchant
		if fl != nil {
			m = fl.Merchants[id]
		}
		ms := e.merchantStatus(id, m, recs[id], dbs, now, d, opts)
		if r := recs[id]; m != nil && r != nil && r.Change == nil && !r.Suspended && r.Current.Version != "" && r.Current.Version != m.Version {
			_, why := reconcile.Target(m, r, reconcile.Gate(fl, recs, rollouts, m, m.Version))
			ms.Hold = d.redact(why)
		}
		if why, ok := opts.Holds[id]; ok {
			ms.Hold = why
		}
		if ev, ok := last[id]; ok {
			ms.LastEvent = &ev
		}
		st.Merchants[i] = ms
		if ms.PID != 0 && opts.Healthy != nil && (m != nil || opts.SpecsInvalid) {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				hm := m
				if hm == nil {
					hm = &spec.Merchant{ID: id, Health: spec.Health{TCP: true, Timeout: 2 * time.Second}}
				}
				st.Merchants[i].Healthy = opts.Healthy(ctx, id, ms.Port, hm)
			})
		}
	}
	wg.Wait()
	// The databases the specs declare; without usable specs, those with a
	// record. A database the specs dropped is not shown.
	names := map[string]bool{}
	if fl != nil {
		for n := range fl.Databases {
			names[n] = true
		}
	} else {
		for n := range dbs {
			names[n] = true
		}
	}
	for _, n := range sortedKeys(names) {
		ds := DatabaseStatus{Name: n}
		if db := dbs[n]; db != nil {
			ds.Up, ds.Checked, ds.LastError, ds.Since = db.Up, true, db.LastError, db.Since
		}
		if opts.Databases != nil {
			switch opts.Databases(n) {
			case reconcile.DBUp:
				ds.Up, ds.Checked, ds.LastError = true, true, ""
			case reconcile.DBDown:
				ds.Up, ds.Checked = false, true
			}
		}
		st.Databases = append(st.Databases, ds)
	}
	if fl != nil {
		for _, k := range sortedKeys(rollouts) {
			ro := rollouts[k]
			var pending []string
			wanted := false
			for _, id := range fl.MerchantIDs() {
				m := fl.Merchants[id]
				if m.Package != ro.Package || m.Version != ro.Version {
					continue
				}
				wanted = true
				if r := recs[id]; r != nil && r.Current.Version != ro.Version {
					pending = append(pending, id)
				}
			}
			if !wanted {
				continue
			}
			r := reconcile.RolloutSettings(fl, ro.Package)
			members := append(append(append([]string{}, ro.Succeeded...), ro.Failed...), pending...)
			st.Rollouts = append(st.Rollouts, RolloutStatus{Package: ro.Package, Version: d.redact(ro.Version), Halted: ro.Halted, Reason: d.redact(ro.Reason),
				Succeeded: ro.Succeeded, Failed: ro.Failed, Pending: pending, Merchants: dedupe(members), Canary: r.Canary, MaxParallel: r.MaxParallel,
				StartedAt: ro.StartedAt, HaltedAt: ro.HaltedAt})
		}
	}
	return st
}

func (e *Engine) merchantStatus(id string, m *spec.Merchant, rec *reconcile.Record, dbs map[string]*state.Database, now time.Time, d Desired, opts StatusOptions) MerchantStatus {
	ms := MerchantStatus{ID: id, State: string(reconcile.PhaseStopped), InSpecs: m != nil || opts.SpecsInvalid}
	if m != nil {
		ms.DesiredVersion, ms.Database, ms.Port = m.Version, m.Database, m.Port
	}
	if rec == nil {
		if m != nil && m.Database != "" && m.OnDatabaseDown != spec.OnDBDownIgnore {
			down := false
			if opts.Databases != nil {
				down = opts.Databases(m.Database) == reconcile.DBDown
			} else if db := dbs[m.Database]; db != nil {
				down = !db.Up
			}
			if down {
				ms.State = string(reconcile.PhaseHeld) // a new merchant waiting for its database
			}
		}
		ms.DesiredVersion = d.redact(ms.DesiredVersion)
		return ms
	}
	ms.Version, ms.Port, ms.Restarts, ms.Failures = rec.Current.Version, rec.Port, rec.Restarts, rec.Failures
	ms.LastError, ms.ErrorClass, ms.Revision, ms.Schema, ms.Suspended = rec.LastError, string(rec.ErrorClass), rec.Revision, rec.Schema, rec.Suspended
	if ms.Database == "" {
		ms.Database = rec.Applied["database"]
	}
	if msg := e.PersistErrors()[id]; msg != "" {
		ms.LastError = "the record could not be saved: " + msg
	}
	if rec.Pin != nil && (m == nil || rec.Pin.ForSpec == m.Version) {
		ms.Pin = rec.Pin.Version
	}
	if c := rec.Change; c != nil {
		ms.Change = string(c.Kind) + " " + d.redact(c.From) + " → " + d.redact(c.To) + ", step " + c.Step.String()
		if c.Undo {
			ms.Change += ", returning"
		}
	}
	curAlive := e.liveness(rec.Current) != reconcile.Dead && rec.Current.Running()
	candAlive := false
	// Routed is what nginx is sent to: the routed candidate, else the
	// current instance when it runs (also a merchant with a fixed port,
	// which is replaced in place, never beside).
	curRouted := rec.Current.Routed
	if m != nil && e.routed(m) {
		curRouted = rec.Current.Running() && (rec.Candidate == nil || !rec.Candidate.Routed)
	}
	ms.Instances = append(ms.Instances, InstanceStatus{Role: "current", PID: rec.Current.PID, Port: rec.Current.Port, Version: d.redact(rec.Current.Version), Routed: curRouted, Alive: curAlive})
	if c := rec.Candidate; c != nil {
		candAlive = e.liveness(*c) != reconcile.Dead
		ms.Instances = append(ms.Instances, InstanceStatus{Role: "candidate", PID: c.PID, Port: c.Port, Version: d.redact(c.Version), Routed: c.Routed, Alive: candAlive})
	}
	switch {
	case curAlive:
		ms.PID, ms.Since = rec.Current.PID, rec.Current.StartedAt
		if rec.Current.Port != 0 {
			ms.Port = rec.Current.Port
		}
	case candAlive:
		// A change without a router: the new version is starting in place.
		ms.PID, ms.Port, ms.Version, ms.Since = rec.Candidate.PID, rec.Candidate.Port, rec.Candidate.Version, rec.Candidate.StartedAt
	}
	running := ms.PID != 0
	switch {
	case rec.Suspended:
		ms.State = "suspended"
	case running && (rec.Phase == reconcile.PhaseStarting || !curAlive):
		ms.State = string(reconcile.PhaseStarting)
	case running:
		ms.State = string(reconcile.PhaseRunning)
	case rec.Phase == reconcile.PhaseCrashLoop && now.Before(rec.NextAttempt):
		ms.State = string(reconcile.PhaseCrashLoop)
		ms.NextAttempt = rec.NextAttempt
	case rec.Phase == reconcile.PhaseHeld, rec.Phase == reconcile.PhaseFailed:
		ms.State = string(rec.Phase)
	}
	if e.routed(m) {
		ms.Domains, ms.PathPrefix = m.Domains, m.PathPrefix
		if rt, ok := e.routeFor(d, id); ok && !rt.Maintenance {
			ms.RoutePort = rt.Upstream
		}
	}
	ms.Version, ms.DesiredVersion = d.redact(ms.Version), d.redact(ms.DesiredVersion)
	ms.Pin, ms.LastError = d.redact(ms.Pin), d.redact(ms.LastError)
	return ms
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// dedupe keeps the first of each string.
func dedupe(list []string) []string {
	seen := map[string]bool{}
	out := list[:0]
	for _, s := range list {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
