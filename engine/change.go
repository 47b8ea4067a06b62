package engine

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"steward/pkgstore"
	"steward/reconcile"
	"steward/runtime"
	"steward/spec"
)

// runtimeSpec is the spec of a one-off command of rel run the way the
// merchant runs.
func runtimeSpec(o *op, rel *pkgstore.Release, argv []string, port int) runtime.Spec {
	return runtime.Spec{Merchant: o.m.ID, Argv: argv, ReleaseDir: rel.Dir, WorkDir: o.e.Paths.WorkDir(o.m.ID), LogDir: o.e.Paths.LogDir(o.m.ID), Env: o.env(port), Credential: o.cred}
}

// parseVersionOutput reads the schema version a command printed last.
func parseVersionOutput(cmd, out string) (int64, error) {
	fields := strings.Fields(out)
	if len(fields) == 0 {
		return 0, fmt.Errorf("%s printed no schema version", filepath.Base(cmd))
	}
	v, err := strconv.ParseInt(fields[len(fields)-1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s printed %q, not a schema version", filepath.Base(cmd), fields[len(fields)-1])
	}
	return v, nil
}

// change carries out a version change (upgrade or rollback), or finishes
// or undoes one that steward's death interrupted, as an ordered chain of
// steps each recorded in the merchant's record (Change.Step) before the
// next begins:
//
//	resolve   the version the policy holds for the merchant; the rollout gate
//	install   the release is verified and unpacked (nothing stops if it fails)
//	schema    forward migrations (after a backup) run while the old process serves
//	start     without a router: the old process stops, then the new one starts
//	          on the merchant's port; with one: the new one starts on the
//	          second port beside the old one
//	ready     the new process answers
//	gate      it stays healthy for min_healthy_time
//	route     with a router: traffic moves to it, the old one drains and stops
//	commit    it becomes the merchant's current instance, the version good
//
// A failure at schema or later marks the version bad for the merchant,
// counts in its rollout (which may halt), and returns the merchant to the
// version it came from, undoing the migration; with a router the old
// process never stopped and keeps serving.
func (o *op) change(ctx context.Context) (string, error) {
	rec, err := o.activeRecord()
	if err != nil {
		return "", err
	}
	if rec.Change == nil {
		if rec, err = o.begin(ctx, rec); err != nil || rec.Change == nil {
			return rec.Current.Version, err
		}
	}
	c := rec.Change
	if c.Undo {
		return o.undo(ctx, errors.New(c.Reason))
	}
	rel, err := o.release(ctx, c.To)
	if err != nil {
		// Nothing stopped: the change is abandoned, the merchant serves as before.
		o.endChange(ctx)
		return rec.Current.Version, fmt.Errorf("%s not started, %s still runs (nothing was stopped): %w", c.To, rec.Current.Version, err)
	}
	var fromRel *pkgstore.Release
	if c.From != "" && c.From != c.To {
		fromRel, _ = o.release(ctx, c.From)
	}
	if c.Step < reconcile.StepInstalled {
		if rec, err = o.step(ctx, reconcile.StepInstalled, nil); err != nil {
			return "", err
		}
	}
	if err := o.gateChain(ctx, rec, rel, fromRel); err != nil {
		if ctx.Err() != nil {
			return "", o.interrupted(c, err)
		}
		return o.undo(ctx, err)
	}
	return c.To, nil
}

// interrupted is the error of a change cut short because steward was told
// to stop: the version has not failed, so nothing is undone or counted
// against it; like a steward killed mid-change, the change stays recorded
// where it got to and the next apply or steward run finishes it.
func (o *op) interrupted(c *reconcile.Change, cause error) error {
	o.log.Warn("change interrupted; the next apply or steward run finishes it", "from", o.redact(c.From), "to", o.redact(c.To), "err", o.redact(cause.Error()))
	return reconcile.WithClass(reconcile.Transient, fmt.Errorf("%w: the change from %s to %s stays recorded; the next apply or steward run finishes it", ErrInterrupted, c.From, c.To))
}

// begin starts a change to the version the policy holds for the merchant:
// it checks the rollout gate and records the change in one step, so that
// no more merchants pass the gate than it lets through. A merchant whose
// target is its version already needs no change (nil Change).
func (o *op) begin(ctx context.Context, rec *reconcile.Record) (*reconcile.Record, error) {
	e, m := o.e, o.m
	e.gateMu.Lock()
	defer e.gateMu.Unlock()
	rec = e.Record(m.ID)
	target, gate := o.target(rec)
	if target == rec.Current.Version {
		switch {
		case gate.Halted:
			return rec, haltedError(gate.Reason)
		case !gate.Allow && m.Version != rec.Current.Version:
			return rec, reconcile.WithClass(reconcile.Waiting, fmt.Errorf("%w: %s", ErrGateClosed, gate.Reason))
		}
		return rec, nil
	}
	kind := reconcile.Upgrade
	if spec.CompareVersions(target, rec.Current.Version) < 0 {
		kind = reconcile.Rollback
	}
	c := &reconcile.Change{Kind: kind, From: rec.Current.Version, To: target, Step: reconcile.StepPlanned, StartedAt: e.Now()}
	if target == m.Version && (rec.Pin == nil || rec.Pin.ForSpec != m.Version) {
		c.Rollout, c.Canary = gate.Rollout, gate.Canary
	}
	return e.update(ctx, m.ID, func(r *reconcile.Record) bool { r.Change = c; return true })
}

// step records that the change got to s; set, when not nil, changes the
// record along with it.
func (o *op) step(ctx context.Context, s reconcile.Step, set func(r *reconcile.Record)) (*reconcile.Record, error) {
	return o.e.update(ctx, o.m.ID, func(r *reconcile.Record) bool {
		if r.Change == nil {
			return false
		}
		r.Change.Step = max(r.Change.Step, s)
		if set != nil {
			set(r)
		}
		return true
	})
}

// endChange forgets the change in progress.
func (o *op) endChange(ctx context.Context) {
	o.e.update(ctx, o.m.ID, func(r *reconcile.Record) bool { r.Change = nil; return true })
}

// gateChain runs the steps from schema to commit, resuming after the last
// one recorded.
func (o *op) gateChain(ctx context.Context, rec *reconcile.Record, rel, fromRel *pkgstore.Release) error {
	e, m := o.e, o.m
	c := rec.Change
	r := reconcile.RolloutSettings(o.d.Fleet, m.Package)
	viaRouter := e.beside(m) && rec.AltPort != 0
	downFirst := false
	if err := o.ensureCred(ctx); err != nil {
		return err
	}
	if c.Step < reconcile.StepMigrated {
		var err error
		if downFirst, err = o.schemaBeforeChange(ctx, rel, fromRel, c.From, rec.Port); err != nil {
			return err
		}
		if rec, err = o.step(ctx, reconcile.StepMigrated, nil); err != nil {
			return err
		}
	} else if o.managesSchema(rel) && o.managesSchema(fromRel) {
		// Resumed: a down migration may still be due.
		if cur, err := o.readSchema(ctx, rel, rec.Port); err == nil && cur > rel.Manifest.Schema.Version {
			downFirst = true
		}
	}
	// A change that needs a down migration cannot run beside the newer
	// process: it stops first, router or not.
	beside := viaRouter && !downFirst && rec.Current.Running()
	port := rec.Port
	if beside {
		port = rec.AltPort
		if rec.Current.Port == rec.AltPort {
			port = rec.Port
		}
	}
	spec, err := o.launchSpec(rel, port)
	if err != nil {
		return err
	}
	if err := e.Runtime.Preflight(spec); err != nil {
		return reconcile.WithClass(reconcile.Stalled, fmt.Errorf("%s %s cannot start: %w", m.Package, rel.Version, err))
	}
	gateCtx := ctx
	if c.Step < reconcile.StepStarted || rec.Candidate == nil {
		if !beside {
			if err := o.checkMovePort(rec, port, spec.WorkDir); err != nil {
				return err
			}
		}
		if !beside && rec.Current.Running() {
			if err := o.stopInstances(ctx, rec); err != nil {
				return err
			}
			// From the stop to the new process's start the merchant has no
			// process: an interruption (Ctrl-C, SIGTERM) waits for the
			// start, so that it leaves the merchant served; the health gate
			// after it may be interrupted again.
			ctx = context.WithoutCancel(ctx)
			if rec, err = o.step(ctx, reconcile.StepStopped, nil); err != nil {
				return err
			}
		}
		if downFirst {
			if err := o.downgrade(ctx, fromRel, rel.Manifest.Schema.Version, c.From, port); err != nil {
				return err
			}
		}
		owner, mine, found, perr := e.Runtime.PortOwner(port, spec.WorkDir)
		if perr == nil && found && mine && !o.stopped {
			if found, err = o.stopStray(ctx, owner, port, rel); err != nil {
				return err
			}
		}
		var p Proc
		switch {
		case perr != nil:
			return fmt.Errorf("checking port %d: %w", port, perr)
		case found && owner.PID == 0:
			return busyPort(port)
		case found && !mine:
			return reconcile.WithClass(reconcile.Stalled, fmt.Errorf("%w: port %d is held by pid %d, which is not merchant %s's process", ErrPortTaken, port, owner.PID, m.ID))
		case found && o.stopped:
			return o.leftBehind(owner, port)
		case found:
			p = owner // started before steward died, never recorded
		default:
			if p, err = e.Runtime.Start(ctx, spec); err != nil {
				return fmt.Errorf("starting %s %s: %w", m.Package, rel.Version, err)
			}
		}
		inst := reconcile.Instance{PID: p.PID, StartTime: p.StartTime, Port: port, Version: rel.Version, StartedAt: e.Now()}
		if rec, err = o.step(ctx, reconcile.StepStarted, func(r *reconcile.Record) { r.NoteCandidate(inst) }); err != nil {
			return err
		}
		o.log.Info("started the new version", "version", o.redact(rel.Version), "pid", p.PID, "port", port, "beside", beside)
		ctx = gateCtx
	} else {
		o.log.Info("resuming the health gate of an interrupted change", "from", o.redact(c.From), "to", o.redact(c.To), "pid", rec.Candidate.PID, "step", c.Step.String())
	}
	cand := *rec.Candidate
	cp := procOf(cand)
	if live, _ := e.check(cp); live == reconcile.Dead {
		return fmt.Errorf("process %d of %s exited", cp.PID, rel.Version)
	}
	if err := o.waitReady(ctx, rel, cp, cand.Port); err != nil {
		return err
	}
	if rec, err = o.step(ctx, reconcile.StepReady, nil); err != nil {
		return err
	}
	if err := o.holdHealthy(ctx, rel, cp, cand.Port, r.MinHealthyTime); err != nil {
		return err
	}
	if rec, err = o.step(ctx, reconcile.StepGated, nil); err != nil {
		return err
	}
	if viaRouter {
		if err := o.routeTo(ctx, cand.Port); err != nil {
			return fmt.Errorf("routing traffic to %s: %w", rel.Version, err)
		}
		if rec, err = o.step(ctx, reconcile.StepRouted, func(r *reconcile.Record) {
			r.Candidate.Routed, r.Current.Routed = true, false
		}); err != nil {
			return err
		}
		if old := rec.Current; old.Running() && old.PID != cand.PID {
			// steward's own probe connection to the old instance goes first
			// (the commit watches the new one); then the requests nginx
			// still has in flight there finish, within the stop grace.
			if e.OnStopped != nil {
				e.OnStopped(m.ID)
			}
			dctx, cancel := context.WithTimeout(ctx, o.grace())
			err := e.Router.Drain(dctx, old.Port)
			cancel()
			if err != nil {
				o.log.Warn("the old instance did not drain within its stop grace; stopping it", "port", old.Port, "err", err)
			}
			if err := e.stopProc(ctx, m.ID, procOf(old), o.grace()); err != nil {
				return err
			}
		}
	}
	return o.commit(ctx, rel)
}

// commit makes the candidate the merchant's current instance, marks the
// version good, ends the change and counts the success in its rollout.
func (o *op) commit(ctx context.Context, rel *pkgstore.Release) error {
	e, m := o.e, o.m
	var c reconcile.Change
	rec, err := e.update(ctx, m.ID, func(r *reconcile.Record) bool {
		if r.Change != nil {
			c = *r.Change
		}
		r.Promote(o.fingerprints(), o.revision())
		r.NoteGood(rel.Version)
		r.Change = nil
		return true
	})
	if err != nil {
		return err
	}
	o.started(procOf(rec.Current), rec.Current.Port, rel)
	if c.Rollout != "" {
		if _, err := e.updateRollout(ctx, m.Package, c.To, func(ro *reconcile.Rollout) {
			ro.NoteGateResult(o.d.Fleet, m.ID, c.Canary, "", e.Now())
		}); err != nil {
			o.log.Error("recording the rollout's progress failed", "err", err)
		}
	}
	return nil
}

// undo returns the merchant to the version it came from after its change
// failed (also when the failure was found by a steward that resumed it):
// the version is marked bad here, the failure counted in its rollout, the
// candidate stopped, and, unless the old process still serves, the
// migration undone and the old version started again.
func (o *op) undo(ctx context.Context, cause error) (string, error) {
	e, m := o.e, o.m
	var c reconcile.Change
	first := false // the failure is new (not an undo resumed or retried)
	rec, err := e.update(ctx, m.ID, func(r *reconcile.Record) bool {
		if r.Change == nil {
			return false
		}
		if first = !r.Change.Undo; first {
			r.Change.Undo, r.Change.Reason = true, o.redact(cause.Error())
			r.NoteBad(r.Change.To)
		}
		c = *r.Change
		return true
	})
	if err != nil {
		return "", errors.Join(cause, err)
	}
	if c.To == "" {
		return rec.Current.Version, cause
	}
	if c.Rollout != "" && first {
		ro, rerr := e.updateRollout(ctx, m.Package, c.To, func(ro *reconcile.Rollout) {
			if ro.NoteGateResult(o.d.Fleet, m.ID, c.Canary, o.redact(cause.Error()), e.Now()) {
				o.log.Error("rollout halted", "package", m.Package, "version", o.redact(c.To), "reason", o.redact(ro.Reason))
			}
		})
		if rerr != nil {
			o.log.Error("recording the rollout's failure failed", "err", rerr)
		} else if ro.Halted {
			o.record(ctx, "halt", ro.Reason, "ok", "", nil)
		}
	}
	if cand := rec.Candidate; cand != nil {
		if err := e.stopProc(ctx, m.ID, procOf(*cand), o.grace()); err != nil {
			return "", errors.Join(cause, err)
		}
		rec, _ = e.update(ctx, m.ID, func(r *reconcile.Record) bool { r.Candidate = nil; return true })
		if e.beside(m) && rec.Current.Running() {
			// The route may have moved already: send it back.
			if err := o.routeTo(ctx, rec.Current.Port); err != nil {
				o.log.Error("routing back to the old instance failed", "err", err)
			}
			e.update(ctx, m.ID, func(r *reconcile.Record) bool { r.Current.Routed = true; return true })
		}
	}
	if live, _ := e.check(procOf(rec.Current)); rec.Current.Running() && live != reconcile.Dead {
		// The old process never stopped (a router, or a failure before the
		// stop): it still serves. A forward migration made for the failed
		// version is undone, as on the way back without a router.
		if failed, ferr := o.release(ctx, c.To); ferr == nil && c.From != c.To {
			if prev, perr := o.release(ctx, c.From); perr == nil {
				if err := o.schemaForReturn(ctx, failed, prev, c.To, rec.Port); err != nil {
					if reconcile.ClassOf(err) == reconcile.Transient {
						// The change stays, being undone: the next attempt
						// returns the schema.
						return c.From, fmt.Errorf("%s failed (%v), %s still runs; returning the database to its schema waits: %w", c.To, cause, c.From, err)
					}
					o.endChange(ctx)
					return c.From, fmt.Errorf("%s failed (%v), %s still runs, but the database could not be returned to its schema: %w", c.To, cause, c.From, err)
				}
			}
		}
		o.endChange(ctx)
		return c.From, fmt.Errorf("%s not started, %s still runs: %w", c.To, c.From, cause)
	}
	if c.From == "" || c.From == c.To {
		o.endChange(ctx)
		return c.To, fmt.Errorf("%s failed its health gate: %w", c.To, cause)
	}
	failed, ferr := o.release(ctx, c.To)
	prev, perr := o.release(ctx, c.From)
	if perr != nil {
		return c.To, fmt.Errorf("%s failed its health gate (%v), and %s cannot be installed again: %w", c.To, cause, c.From, perr)
	}
	if ferr == nil {
		if err := o.schemaForReturn(ctx, failed, prev, c.To, rec.Port); err != nil {
			if reconcile.ClassOf(err) == reconcile.Transient {
				// The change stays, being undone: the next attempt
				// returns the schema and starts c.From.
				return c.To, fmt.Errorf("%s failed its health gate (%v); starting %s again waits: %w", c.To, cause, c.From, err)
			}
			e.update(ctx, m.ID, func(r *reconcile.Record) bool {
				r.Change = nil
				r.NoteFailed(o.redact(err.Error()), reconcile.Stalled)
				return true
			})
			return c.To, fmt.Errorf("%s failed its health gate (%v), and %s cannot start again: %w", c.To, cause, c.From, err)
		}
	}
	o.endChange(ctx)
	if err := o.launch(ctx, c.From, rec.Port, false); err != nil {
		return c.From, fmt.Errorf("%s failed its health gate (%v), and starting %s again failed too: %w", c.To, cause, c.From, err)
	}
	return c.From, fmt.Errorf("%s failed its health gate, rolled back to %s: %w", c.To, c.From, cause)
}

// replace restarts a running merchant behind a router without a failed
// request: a new process of version starts on the merchant's second port,
// passes the same gate as an upgrade, takes the traffic, and only then the
// old one drains and stops. A new process that fails is stopped and the
// old one keeps serving; the version is not marked bad (it runs already).
func (o *op) replace(ctx context.Context, rec *reconcile.Record, version string, rel *pkgstore.Release) error {
	e, m := o.e, o.m
	c := &reconcile.Change{Kind: reconcile.Restart, From: version, To: version, Step: reconcile.StepInstalled, StartedAt: e.Now()}
	rec, err := e.update(ctx, m.ID, func(r *reconcile.Record) bool { r.Change = c; return true })
	if err != nil {
		return err
	}
	return o.replaceResume(ctx, rec, rel)
}

// resume finishes or undoes the change steward's death interrupted.
func (o *op) resume(ctx context.Context) (string, error) {
	if err := o.needSpec(); err != nil {
		return "", err
	}
	rec := o.e.Record(o.m.ID)
	if rec == nil || rec.Change == nil {
		return "", nil
	}
	if rec.Change.Kind != reconcile.Restart {
		return o.change(ctx)
	}
	rel, err := o.release(ctx, rec.Change.To)
	if err != nil {
		return "", err
	}
	return rec.Change.To, o.replaceResume(ctx, rec, rel)
}

func (o *op) replaceResume(ctx context.Context, rec *reconcile.Record, rel *pkgstore.Release) error {
	e, m := o.e, o.m
	if err := o.gateChain(ctx, rec, rel, rel); err != nil {
		if ctx.Err() != nil {
			return o.interrupted(rec.Change, err)
		}
		rec = e.Record(m.ID)
		if cand := rec.Candidate; cand != nil && cand.Routed {
			return err // traffic moved already: the next reconcile finishes the switch
		}
		if cand := rec.Candidate; cand != nil {
			if serr := e.stopProc(ctx, m.ID, procOf(*cand), o.grace()); serr != nil {
				return errors.Join(err, serr)
			}
		}
		e.update(ctx, m.ID, func(r *reconcile.Record) bool { r.Candidate = nil; r.Change = nil; return true })
		return fmt.Errorf("the new process failed, the old one still serves: %w", err)
	}
	return nil
}
