package engine

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"steward/reconcile"
	"steward/state"
)

// Result says when a merchant should be reconciled again.
type Result struct {
	// Requeue: again soon (after a success, to confirm convergence; after
	// a transient failure, with backoff).
	Requeue bool
	// RequeueAfter: again after this long (a backoff hold, a dependency
	// being waited for). Zero: only when an event or the resync asks.
	RequeueAfter time.Duration
}

// Reconcile converges one merchant: it observes it, lets the planner
// decide, saves what the observation alone changes (a death noted, a pin
// ended), and carries out the decided action. The error is the action's,
// with its class (reconcile.ClassOf): stalled errors wait for a person,
// waiting ones for a dependency, transient ones are retried with backoff.
func (e *Engine) Reconcile(ctx context.Context, d Desired, id string, opts ObserveOptions) (Result, error) {
	rid := newReconcileID()
	log := e.Log.With("merchant", id, "reconcile", rid)
	if d.Fleet == nil {
		return Result{}, nil
	}
	obs := e.Observe(ctx, d, []string{id}, opts)
	dec, err := e.decide(ctx, d, id, obs)
	if err != nil {
		return Result{Requeue: true}, err
	}
	for _, n := range dec.Notes {
		log.Warn("observed", "what", n.Action, "reason", n.Reason)
		e.record(ctx, state.Event{Merchant: id, Action: n.Action, Reason: n.Reason, Result: "observed", PID: n.PID, Version: n.Version, Reconcile: rid})
		if n.Action == "exited" {
			e.Metrics.ProcessExited(id)
		}
	}
	a := dec.Action
	defer e.syncRoute(d, id)
	if a == nil {
		return Result{}, nil
	}
	if a.Kind == reconcile.Hold {
		log.Debug("held", "reason", a.Reason)
		err := e.Execute(ctx, d, *a, rid, nil)
		switch {
		case !a.NotBefore.IsZero():
			return Result{RequeueAfter: max(a.NotBefore.Sub(e.Now()), time.Millisecond)}, err
		case a.Class == reconcile.Transient:
			return Result{RequeueAfter: 5 * time.Second}, err
		}
		return Result{}, err
	}
	log.Info("reconciling", "action", a.Kind, "reason", a.Reason)
	err = e.Execute(ctx, d, *a, rid, nil)
	switch reconcile.ClassOf(err) {
	case "":
		return Result{Requeue: true}, nil
	case reconcile.Waiting:
		return Result{RequeueAfter: 5 * time.Second}, err
	case reconcile.Stalled:
		return Result{}, err
	}
	if errors.Is(err, ErrPersist) {
		return Result{Requeue: true}, err
	}
	return Result{Requeue: true}, err
}

// input0 is Input without copying: the caller holds e.mu for reading
// while the planner runs.
func (e *Engine) input0(d Desired, obs reconcile.Observation) reconcile.Input {
	return reconcile.Input{Fleet: d.Fleet, Ports: d.Ports, Reserved: d.Reserved, Records: e.recs, Rollouts: e.rollouts, Obs: obs,
		Policy: reconcile.PolicyOf(d.Fleet), Router: e.Router != nil, Key: e.key, Jitter: e.Jitter(), Redact: d.Redact}
}

// NoteObservations saves what the observation alone changes in every
// merchant's record (deaths noted, ended pins), before apply carries out a
// plan: a start after a death then counts as a restart.
func (e *Engine) NoteObservations(ctx context.Context, d Desired, obs reconcile.Observation) error {
	if d.Fleet == nil {
		return nil
	}
	recs, rollouts, _ := e.Snapshot()
	in := e.input(d, obs, recs, rollouts)
	var errs []error
	ids := make([]string, 0, len(recs))
	for id := range recs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		dec := reconcile.Decide(in, id)
		if dec.Record != nil {
			if err := e.save(ctx, dec.Record); err != nil {
				errs = append(errs, err)
				continue
			}
			// The next decisions see it (a second port it took, say).
			in.Records[id] = dec.Record
		}
		for _, n := range dec.Notes {
			e.record(ctx, state.Event{Merchant: id, Action: n.Action, Reason: n.Reason, Result: "observed", PID: n.PID, Version: n.Version})
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("noting what was observed: %w", errors.Join(errs...))
	}
	return nil
}

// decide runs the planner for one merchant and saves what the observation
// alone changes. A decision that assigns ports is made and saved under
// portMu (a new merchant's record is made at once, reserving its port), so
// that two merchants reconciled at once never get the same port.
func (e *Engine) decide(ctx context.Context, d Desired, id string, obs reconcile.Observation) (reconcile.Decision, error) {
	if rec := e.Record(id); rec == nil || (e.beside(d.Fleet.Merchants[id]) && rec.AltPort == 0) {
		e.portMu.Lock()
		defer e.portMu.Unlock()
	}
	e.mu.RLock()
	dec := reconcile.Decide(e.input0(d, obs), id)
	e.mu.RUnlock()
	if dec.Record != nil {
		if err := e.save(ctx, dec.Record); err != nil {
			return dec, reconcile.WithClass(reconcile.Transient, err)
		}
	}
	if a := dec.Action; a != nil && a.Kind == reconcile.Create && a.After != nil && a.After.Port != 0 && e.Record(id) == nil {
		m := d.Fleet.Merchants[id]
		if err := e.save(ctx, &reconcile.Record{ID: id, Package: m.Package, Port: a.After.Port, Phase: reconcile.PhaseStarting}); err != nil {
			return dec, reconcile.WithClass(reconcile.Transient, err)
		}
	}
	return dec, nil
}
