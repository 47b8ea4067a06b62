package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/singleflight"

	"steward/internal/dsn"
	"steward/pkgstore"
	"steward/reconcile"
	"steward/runtime"
	"steward/spec"
	"steward/state"
)

// haltedError is ErrHalted with the gate's reason, which already says
// that the rollout halted.
type haltedError string

func (h haltedError) Error() string        { return string(h) }
func (h haltedError) Is(target error) bool { return target == ErrHalted }

// Errors of the executor that callers tell apart.
var (
	// ErrUnknownMerchant: steward has no record of that merchant.
	ErrUnknownMerchant = errors.New("no record of that merchant")
	// ErrPortTaken: a merchant's port is held by a foreign process.
	ErrPortTaken = errors.New("port taken by another process")
	// ErrHalted: a version change skipped because its rollout halted.
	ErrHalted = errors.New("rollout halted")
	// ErrGateClosed: the rollout gate does not let the merchant change now.
	ErrGateClosed = errors.New("waiting for the rollout gate")
	// ErrSchema: a database schema the release cannot run on.
	ErrSchema = errors.New("schema mismatch")
	// ErrSuspended: the merchant is suspended.
	ErrSuspended = errors.New("merchant is suspended")
	// ErrRefused: the request makes no sense in the merchant's state.
	ErrRefused = errors.New("refused")
	// ErrInterrupted: steward was told to stop (Ctrl-C, SIGTERM) in the
	// middle of a change; the change stays recorded, neither failed nor
	// undone, and the next apply or steward run finishes it.
	ErrInterrupted = errors.New("interrupted")
)

// op is one action being carried out: the action, the merchant's spec and
// the context every step shares.
type op struct {
	e   *Engine
	d   Desired
	a   reconcile.Action
	m   *spec.Merchant // nil for a merchant removed from the specs
	pkg *spec.Package
	log *slog.Logger
	rid string
	// stopped is set once this action has stopped a process of the
	// merchant: a process still holding its port then is one it left
	// behind, never one to adopt.
	stopped bool
	// cred is the merchant's own user when the host gives merchants users
	// of their own (ensureCred); nil: the runtime's user.
	cred *syscall.Credential
}

func (o *op) ctxErr(ctx context.Context) error { return context.Cause(ctx) }

// Execute carries out one action and records it: an event with its reason
// and result, and the merchant's last error. rid is the reconcile id that
// ties its log lines and events together.
func (e *Engine) Execute(ctx context.Context, d Desired, a reconcile.Action, rid string, hooks Hooks) error {
	e.init()
	if hooks == nil {
		hooks = NopHooks{}
	}
	if rid == "" {
		rid = newReconcileID()
	}
	start := e.Now()
	hooks.ActionStart(a)
	o := &op{e: e, d: d, a: a, rid: rid, log: e.Log.With("merchant", a.Merchant, "reconcile", rid, "action", string(a.Kind))}
	if d.Fleet != nil {
		o.m = d.Fleet.Merchants[a.Merchant]
		if o.m != nil {
			o.pkg = d.Fleet.Packages[o.m.Package]
		}
	}
	var version string
	var err error
	switch {
	case a.Kind.IsChange() && a.Resume:
		version, err = o.resume(ctx)
	case a.Kind == reconcile.Hold:
		err = o.hold(ctx)
		hooks.ActionDone(a, nil, e.Now().Sub(start))
		return err
	case a.Kind == reconcile.Delete:
		err = o.delete(ctx)
	case a.Kind == reconcile.Stop:
		err = o.stopAction(ctx)
	case a.Kind == reconcile.Create || a.Kind == reconcile.Start:
		version, err = o.startAction(ctx)
	case a.Kind == reconcile.Restart:
		version, err = o.restartAction(ctx)
	case a.Kind.IsVersionChange():
		version, err = o.change(ctx)
	default:
		err = fmt.Errorf("unknown action %q", a.Kind)
	}
	class := reconcile.ClassOf(err)
	ev := state.Event{Time: e.Now(), Merchant: a.Merchant, Action: string(a.Kind), Reason: a.Reason, Result: "ok", Revision: o.revision(), Version: version, Reconcile: rid}
	if a.Kind != reconcile.Delete || err != nil {
		rec, uerr := e.update(ctx, a.Merchant, func(r *reconcile.Record) bool {
			switch {
			case errors.Is(err, ErrInterrupted):
				return false // nothing failed: the change is finished later
			case err != nil:
				r.NoteFailed(o.redact(err.Error()), class)
			default:
				r.NoteSucceeded()
			}
			return true
		})
		if rec != nil {
			ev.PID = rec.Current.PID
		}
		if err == nil && uerr != nil && !errors.Is(uerr, ErrUnknownMerchant) {
			err = uerr
		}
	}
	switch {
	case errors.Is(err, ErrHalted):
		ev.Result, ev.Error = "skipped", err.Error()
	case err != nil:
		ev.Result, ev.Error = "error", err.Error()
	}
	e.record(ctx, ev)
	e.syncRoute(d, a.Merchant)
	took := e.Now().Sub(start)
	if err != nil {
		o.log.Error("action failed", "reason", o.redact(a.Reason), "class", class, "err", o.redact(err.Error()))
	} else {
		o.log.Info("action done", "reason", o.redact(a.Reason), "pid", ev.PID, "version", o.redact(version), "took", took.Round(time.Millisecond))
	}
	e.Metrics.ActionDone(string(a.Kind), took, err)
	hooks.ActionDone(a, err, took)
	return err
}

func (o *op) revision() string {
	if o.d.Fleet != nil {
		return o.d.Fleet.Revision
	}
	return ""
}

func (o *op) redact(s string) string {
	if o.d.Redact != nil {
		return o.d.Redact(s)
	}
	return s
}

// grace is the merchant's stop grace, else the host's.
func (o *op) grace() time.Duration {
	if o.m != nil && o.m.StopGrace > 0 {
		return o.m.StopGrace
	}
	return o.e.StopGrace
}

func (o *op) record(ctx context.Context, action, reason, result, detail string, err error) {
	ev := state.Event{Time: o.e.Now(), Merchant: o.a.Merchant, Action: action, Reason: reason, Result: result, Revision: o.revision(), Detail: detail, Reconcile: o.rid}
	if err != nil {
		ev.Error = err.Error()
	}
	o.e.record(ctx, ev)
}

// hold notes a merchant waiting for its database.
func (o *op) hold(ctx context.Context) error {
	if !o.a.ForDatabase {
		return nil
	}
	_, err := o.e.update(ctx, o.a.Merchant, func(r *reconcile.Record) bool {
		if r.Current.Running() || r.Phase == reconcile.PhaseHeld {
			return false
		}
		r.NoteHeld()
		return true
	})
	if errors.Is(err, ErrUnknownMerchant) {
		return nil
	}
	return err
}

// delete stops every process of a merchant removed from the specs and
// forgets it.
func (o *op) delete(ctx context.Context) error {
	rec := o.e.Record(o.a.Merchant)
	if rec == nil {
		return nil
	}
	if err := o.stopInstances(ctx, rec); err != nil {
		return err
	}
	return o.e.remove(ctx, rec.ID)
}

// stopAction stops the merchant's processes and keeps its record.
func (o *op) stopAction(ctx context.Context) error {
	rec := o.e.Record(o.a.Merchant)
	if rec == nil {
		return nil
	}
	return o.stopInstances(ctx, rec)
}

// stopInstances stops the candidate and the current instance and records
// them stopped.
func (o *op) stopInstances(ctx context.Context, rec *reconcile.Record) error {
	if c := rec.Candidate; c != nil {
		if err := o.e.stopProc(ctx, rec.ID, procOf(*c), o.grace()); err != nil {
			return err
		}
		o.stopped = true
		if _, err := o.e.update(ctx, rec.ID, func(r *reconcile.Record) bool { r.Candidate = nil; return true }); err != nil {
			return err
		}
	}
	if !rec.Current.Running() {
		return nil
	}
	if err := o.e.stopProc(ctx, rec.ID, procOf(rec.Current), o.grace()); err != nil {
		return err
	}
	o.stopped = true
	_, err := o.e.update(ctx, rec.ID, func(r *reconcile.Record) bool { r.NoteStopped(o.e.Now()); return true })
	if o.e.OnStopped != nil {
		o.e.OnStopped(rec.ID)
	}
	return err
}

func procOf(i reconcile.Instance) Proc { return Proc{PID: i.PID, StartTime: i.StartTime} }

// stopProc stops p on purpose: exit watchers do not count it. A process
// already gone is not an error; one that /proc cannot tell about is.
func (e *Engine) stopProc(ctx context.Context, id string, p Proc, grace time.Duration) error {
	if p.PID == 0 {
		return nil
	}
	e.mu.Lock()
	e.stopping[p] = true
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		delete(e.stopping, p)
		e.mu.Unlock()
	}()
	live, err := e.check(p)
	switch live {
	case reconcile.Dead:
		// Reap it if it is steward's child that died unwatched (a new
		// version that died during its health gate): no zombie is left.
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		e.Runtime.Wait(wctx, p)
		cancel()
		return nil
	case reconcile.NoProcess:
		return nil
	case reconcile.Unknown:
		return reconcile.WithClass(reconcile.Transient, fmt.Errorf("cannot tell whether process %d runs, so it is not signalled: %v", p.PID, err))
	}
	if err := e.Runtime.Stop(context.WithoutCancel(ctx), p, grace); err != nil {
		return fmt.Errorf("stopping process %d of %s: %w", p.PID, id, err)
	}
	return nil
}

// IsStopping reports whether p is being stopped on purpose.
func (e *Engine) IsStopping(p Proc) bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.stopping[p]
}

// target is the version the policy holds for m now (see reconcile.Target).
func (o *op) target(rec *reconcile.Record) (string, reconcile.GateVerdict) {
	gate := reconcile.GateVerdict{Allow: true}
	if rec != nil && rec.Current.Version != "" && o.m.Version != rec.Current.Version {
		gate = o.e.gate(o.d, o.m)
	}
	v, _ := reconcile.Target(o.m, rec, gate)
	return v, gate
}

// gate asks the rollout gate about m changing to its specs' version.
func (e *Engine) gate(d Desired, m *spec.Merchant) reconcile.GateVerdict {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return reconcile.Gate(d.Fleet, e.recs, e.rollouts, m, m.Version)
}

// needSpec fails when the merchant is not in the specs.
func (o *op) needSpec() error {
	if o.m == nil {
		return reconcile.WithClass(reconcile.Stalled, fmt.Errorf("merchant %s is not in the specs", o.a.Merchant))
	}
	if o.pkg == nil {
		return reconcile.WithClass(reconcile.Stalled, fmt.Errorf("package %q is not declared", o.m.Package))
	}
	return nil
}

// activeRecord returns the record of a merchant an action replaces the
// process of: one in the specs, started before and not suspended.
func (o *op) activeRecord() (*reconcile.Record, error) {
	if err := o.needSpec(); err != nil {
		return nil, err
	}
	rec := o.e.Record(o.m.ID)
	if rec == nil {
		return nil, reconcile.WithClass(reconcile.Stalled, fmt.Errorf("%w: %s has never been started", ErrUnknownMerchant, o.m.ID))
	}
	if rec.Suspended {
		return nil, reconcile.WithClass(reconcile.Stalled, fmt.Errorf("%w: resume it first", ErrSuspended))
	}
	return rec, nil
}

// startAction starts a merchant that has no process: a new merchant (its
// record is made first, reserving its port) or a known one, on the version
// the policy holds for it now. Only a merchant that never ran migrates its
// database; a start of a known merchant never does.
func (o *op) startAction(ctx context.Context) (string, error) {
	if err := o.needSpec(); err != nil {
		return "", err
	}
	e, m := o.e, o.m
	rec := e.Record(m.ID)
	port := 0
	if o.a.After != nil {
		port = o.a.After.Port
	}
	if rec == nil {
		if port == 0 {
			return "", reconcile.WithClass(reconcile.Stalled, fmt.Errorf("no port for merchant %s", m.ID))
		}
		rec = &reconcile.Record{ID: m.ID, Package: m.Package, Port: port, Phase: reconcile.PhaseStarting}
		if err := e.save(ctx, rec); err != nil {
			return "", err
		}
	} else if port == 0 {
		port = rec.Port
	}
	if rec.Suspended {
		return "", reconcile.WithClass(reconcile.Stalled, fmt.Errorf("%w: resume it first", ErrSuspended))
	}
	if live, _ := e.check(procOf(rec.Current)); rec.Current.Running() && live != reconcile.Dead {
		return rec.Current.Version, nil // it runs (or cannot be told): never a second process
	}
	version, _ := o.target(rec)
	firstRun := len(rec.GoodVersions) == 0
	return version, o.launch(ctx, version, port, firstRun)
}

// launch installs version and starts it as the merchant's current
// instance on port, then waits until it answers. migrate allows forward
// migrations (a merchant's first start).
func (o *op) launch(ctx context.Context, version string, port int, migrate bool) error {
	e, m := o.e, o.m
	rel, err := o.release(ctx, version)
	if err != nil {
		return err
	}
	if err := o.ensureCred(ctx); err != nil {
		return err
	}
	spec, err := o.launchSpec(rel, port)
	if err != nil {
		return err
	}
	if err := e.Runtime.Preflight(spec); err != nil {
		return reconcile.WithClass(reconcile.Stalled, fmt.Errorf("%s %s cannot start: %w", m.Package, version, err))
	}
	var p Proc
	owner, mine, found, err := e.Runtime.PortOwner(port, spec.WorkDir)
	if err == nil && found && mine && !o.stopped {
		if found, err = o.stopStray(ctx, owner, port, rel); err != nil {
			return err
		}
	}
	switch {
	case err != nil:
		return reconcile.WithClass(reconcile.Transient, fmt.Errorf("checking port %d: %w", port, err))
	case found && owner.PID == 0:
		return busyPort(port)
	case found && !mine:
		return reconcile.WithClass(reconcile.Stalled, fmt.Errorf("%w: port %d is held by pid %d, which is not merchant %s's process; free the port or give %s another one", ErrPortTaken, port, owner.PID, m.ID, m.ID))
	case found && o.stopped:
		return o.leftBehind(owner, port)
	case found:
		// A process of this merchant whose start was never recorded
		// (steward died between starting it and saving): adopt it.
		o.log.Warn("adopting an unrecorded process on the merchant's port", "pid", owner.PID, "port", port)
		p = owner
	default:
		if err := o.schemaForStart(ctx, rel, port, migrate); err != nil {
			return err
		}
		if p, err = e.Runtime.Start(ctx, spec); err != nil {
			e.update(ctx, m.ID, func(r *reconcile.Record) bool {
				r.NoteExit(o.policy(), time.Time{}, e.Now(), e.Jitter(), false)
				return true
			})
			return fmt.Errorf("starting %s %s: %w", m.Package, version, err)
		}
	}
	inst := reconcile.Instance{PID: p.PID, StartTime: p.StartTime, Port: port, Version: version, StartedAt: e.Now()}
	_, serr := e.update(ctx, m.ID, func(r *reconcile.Record) bool {
		r.Package, r.Port = m.Package, port
		r.NoteStarted(inst, o.fingerprints(), o.revision())
		return true
	})
	o.started(p, port, rel)
	if serr != nil {
		return serr
	}
	if err := o.waitReady(ctx, rel, p, port); err != nil {
		return err
	}
	_, err = e.update(ctx, m.ID, func(r *reconcile.Record) bool {
		if r.Current.PID != p.PID {
			return false
		}
		r.NoteReady()
		return true
	})
	return err
}

// started tells the daemon about a process that became a merchant's
// current instance.
func (o *op) started(p Proc, port int, rel *pkgstore.Release) {
	if o.e.OnStarted != nil {
		o.e.OnStarted(o.m.ID, p, port, HealthPath(o.m, rel), o.m.Health)
	}
}

func (o *op) fingerprints() map[string]string {
	o.e.mu.RLock()
	key := o.e.key
	o.e.mu.RUnlock()
	return reconcile.Fingerprints(o.d.Fleet, o.m, key)
}

func (o *op) policy() reconcile.RestartPolicy { return reconcile.PolicyOf(o.d.Fleet) }

// restartAction replaces a running process on the version the policy holds
// for the merchant now (never a version that failed on it), without a
// migration. Everything the new process needs is checked before the old
// one stops. With a router the new process starts beside the old one and
// takes its traffic before the old one stops.
func (o *op) restartAction(ctx context.Context) (string, error) {
	rec, err := o.activeRecord()
	if err != nil {
		return "", err
	}
	e, m := o.e, o.m
	version, _ := o.target(rec)
	rel, err := o.release(ctx, version)
	if err != nil {
		return "", err
	}
	port := rec.Port
	if o.a.After != nil && o.a.After.Port != 0 {
		port = o.a.After.Port
	}
	if err := o.ensureCred(ctx); err != nil {
		return "", err
	}
	ls, err := o.launchSpec(rel, port)
	if err != nil {
		return "", err
	}
	if err := e.Runtime.Preflight(ls); err != nil {
		return "", reconcile.WithClass(reconcile.Stalled, fmt.Errorf("%s %s cannot start, so the running process was left alone: %w", m.Package, version, err))
	}
	if err := o.checkSchema(ctx, rel, port); err != nil {
		return "", fmt.Errorf("the running process was left alone: %w", err)
	}
	if e.beside(m) && rec.AltPort != 0 && rec.Current.Running() && !o.a.Unhealthy && port == rec.Port {
		return version, o.replace(ctx, rec, version, rel)
	}
	if err := o.checkMovePort(rec, port, ls.WorkDir); err != nil {
		return "", err
	}
	if err := o.stopInstances(ctx, rec); err != nil {
		return "", err
	}
	// Stopped: the start is carried through an interruption, so that the
	// merchant is not left without a process.
	ctx = context.WithoutCancel(ctx)
	if o.a.Unhealthy {
		now := e.Now()
		r, err := e.update(ctx, m.ID, func(r *reconcile.Record) bool {
			r.NoteExit(o.policy(), now, now, e.Jitter(), false)
			return true
		})
		if err != nil {
			return "", err
		}
		if r.NextAttempt.After(now) {
			return "", nil // backing off: the next start waits
		}
	}
	return version, o.launch(ctx, version, port, false)
}

// busyPort is the error of a port that is held, but by no process steward
// can name (one exiting, or in another namespace): tried again.
func busyPort(port int) error {
	return reconcile.WithClass(reconcile.Transient, fmt.Errorf("%w: port %d is still held, by no process steward can see (one that is exiting?); trying again", ErrPortTaken, port))
}

// stopStray stops owner, an unrecorded process of the merchant's own (in
// its work dir, on its port) that runs another release than rel: a
// steward that died between starting it and recording it left it. It
// would otherwise be adopted in rel's place and answer rel's health gate.
// It reports whether the port is still held (false: it was stopped; true:
// owner runs rel, and may be adopted).
func (o *op) stopStray(ctx context.Context, owner Proc, port int, rel *pkgstore.Release) (bool, error) {
	if owner.PID == 0 || o.e.Runtime.RunsFrom(owner, rel.Dir) {
		return true, nil
	}
	o.log.Warn("stopping an unrecorded process of another release on the merchant's port", "pid", owner.PID, "port", port, "release", o.redact(rel.Version))
	if err := o.e.stopProc(ctx, o.m.ID, owner, o.grace()); err != nil {
		return true, err
	}
	return false, nil
}

// leftBehind is the error of a port still held, after the merchant's
// process was stopped, by a process of the merchant's (one it started and
// detached from itself): steward stops only the processes it started.
func (o *op) leftBehind(owner Proc, port int) error {
	return reconcile.WithClass(reconcile.Stalled, fmt.Errorf("%w: port %d is still held by pid %d after %s's process was stopped: a process it started and left behind, which steward does not stop (it stops only the processes it started); stop pid %d, then start %s again",
		ErrPortTaken, port, owner.PID, o.m.ID, owner.PID, o.m.ID))
}

// checkMovePort refuses, before anything is stopped, to move a running
// merchant to a port that a foreign process holds: it keeps serving on
// its old port.
func (o *op) checkMovePort(rec *reconcile.Record, port int, workDir string) error {
	if !rec.Current.Running() || port == rec.Current.Port {
		return nil
	}
	owner, mine, found, err := o.e.Runtime.PortOwner(port, workDir)
	if err != nil || !found || mine || owner.PID == 0 {
		return nil // the start finds out, with the error
	}
	return reconcile.WithClass(reconcile.Stalled, fmt.Errorf("%w: port %d is held by pid %d, which is not merchant %s's process; free the port or give %s another one (%s still runs on port %d)",
		ErrPortTaken, port, owner.PID, o.m.ID, o.m.ID, o.redact(rec.Current.Version), rec.Current.Port))
}

// launchSpec is the runtime spec of rel for this merchant on port.
func (o *op) launchSpec(rel *pkgstore.Release, port int) (runtime.Spec, error) {
	argv, err := rel.Command(port, o.m.ID)
	if err != nil {
		return runtime.Spec{}, reconcile.WithClass(reconcile.Stalled, err)
	}
	if o.d.UIDs.High != 0 && o.cred == nil {
		return runtime.Spec{}, fmt.Errorf("merchant %s has no user of its own yet", o.m.ID) // ensureCred was not called
	}
	return runtime.Spec{Merchant: o.m.ID, Argv: argv, ReleaseDir: rel.Dir, WorkDir: o.e.Paths.WorkDir(o.m.ID), LogDir: o.e.Paths.LogDir(o.m.ID),
		Env: o.env(port), Credential: o.cred}, nil
}

// ensureCred gives the merchant its own user id when the host asks for
// users of their own (Desired.UIDs): the one its record keeps, or the
// lowest id of the range no record holds, saved at once (under portMu, so
// that two merchants never get the same).
func (o *op) ensureCred(ctx context.Context) error {
	r := o.d.UIDs
	if r.High == 0 || o.cred != nil {
		return nil
	}
	rec := o.e.Record(o.m.ID)
	if rec == nil {
		return fmt.Errorf("merchant %s has no record", o.m.ID)
	}
	uid := rec.UID
	if !r.Contains(uid) {
		o.e.portMu.Lock()
		defer o.e.portMu.Unlock()
		taken := map[int]bool{}
		recs, _, _ := o.e.Snapshot()
		for _, x := range recs {
			taken[x.UID] = true
		}
		uid = 0
		for u := r.Low; u <= r.High; u++ {
			if !taken[u] {
				uid = u
				break
			}
		}
		if uid == 0 {
			return reconcile.WithClass(reconcile.Stalled, fmt.Errorf("no free user id left in runtime.uids %s for merchant %s", r, o.m.ID))
		}
		if _, err := o.e.update(ctx, o.m.ID, func(x *reconcile.Record) bool { x.UID = uid; return true }); err != nil {
			return err
		}
	}
	o.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid), Groups: []uint32{}}
	return nil
}

// env is the complete environment of the merchant's process on port.
func (o *op) env(port int) []string {
	m := o.m
	env := []string{fmt.Sprintf("PORT=%d", port), "MERCHANT=" + m.ID}
	if db := o.d.Fleet.Databases[m.Database]; db != nil {
		env = append(env, "DATABASE_URL="+dsn.WithDatabase(db.DSN.Reveal(), m.DBName))
	}
	keys := make([]string, 0, len(m.Env))
	for k := range m.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+m.Env[k].Value.Reveal())
	}
	return env
}

// release installs (or looks up) version of the merchant's package; one
// install per version at a time across the engine.
func (o *op) release(ctx context.Context, version string) (*pkgstore.Release, error) {
	rel, err := o.e.release(ctx, o.pkg, version)
	if err != nil {
		class := reconcile.Transient
		if errors.Is(err, pkgstore.ErrBadPackage) {
			class = reconcile.Stalled
		}
		return nil, reconcile.WithClass(class, fmt.Errorf("installing %s %s: %w", o.m.Package, version, err))
	}
	return rel, nil
}

// releaseCache remembers installed releases by package@version.
type releaseCache struct {
	mu    sync.Mutex
	m     map[string]*pkgstore.Release
	group singleflight.Group
}

func (e *Engine) release(ctx context.Context, pkg *spec.Package, version string) (*pkgstore.Release, error) {
	key := reconcile.RolloutKey(pkg.Name, version)
	e.rels.mu.Lock()
	if r := e.rels.m[key]; r != nil {
		e.rels.mu.Unlock()
		return r, nil
	}
	e.rels.mu.Unlock()
	v, err, _ := e.rels.group.Do(key, func() (any, error) {
		return e.Packages.Install(context.WithoutCancel(ctx), pkg.Source, pkg.Name, version)
	})
	if err != nil {
		return nil, err
	}
	r := v.(*pkgstore.Release)
	e.rels.mu.Lock()
	if e.rels.m == nil {
		e.rels.m = map[string]*pkgstore.Release{}
	}
	e.rels.m[key] = r
	e.rels.mu.Unlock()
	return r, nil
}

// HealthPath is the HTTP path a merchant is probed on: its spec's, else its
// release manifest's; "" means a TCP check.
func HealthPath(m *spec.Merchant, rel *pkgstore.Release) string {
	switch {
	case m.Health.TCP:
		return ""
	case m.Health.HTTP != "":
		return m.Health.HTTP
	case rel != nil && rel.Manifest != nil:
		return rel.Manifest.Health.HTTP
	}
	return ""
}

// readyTimeout bounds the wait for a started process to answer.
func (o *op) readyTimeout() time.Duration {
	if o.e.ReadyTimeout > 0 {
		return o.e.ReadyTimeout
	}
	if d := reconcile.RolloutSettings(o.d.Fleet, o.m.Package).HealthDeadline; d > 0 {
		return d
	}
	return time.Minute
}

// waitReady polls the merchant's health until it answers, the process
// dies, or the deadline passes.
func (o *op) waitReady(ctx context.Context, rel *pkgstore.Release, p Proc, port int) error {
	timeout := o.readyTimeout()
	path, status := HealthPath(o.m, rel), o.m.Health.Status
	if status == 0 {
		status = 200
	}
	probeTimeout := o.m.Health.Timeout
	if probeTimeout <= 0 {
		probeTimeout = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	delay := 5 * time.Millisecond
	var last error
	for {
		if live, _ := o.e.check(p); live == reconcile.Dead {
			return fmt.Errorf("process %d exited before it answered on port %d", p.PID, port)
		}
		if last = o.e.Prober.Probe(ctx, port, path, status, probeTimeout); last == nil {
			return nil
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("not healthy within %s: %v", timeout, last)
		case <-t.C:
		}
		delay = min(delay*2, 50*time.Millisecond)
	}
}

// holdHealthy requires p to stay alive and healthy for d.
func (o *op) holdHealthy(ctx context.Context, rel *pkgstore.Release, p Proc, port int, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	path, status := HealthPath(o.m, rel), o.m.Health.Status
	if status == 0 {
		status = 200
	}
	every := min(max(d/5, 50*time.Millisecond), time.Second)
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return nil
		case <-tick.C:
			if live, _ := o.e.check(p); live == reconcile.Dead {
				return fmt.Errorf("process %d exited within min_healthy_time (%s)", p.PID, d)
			}
			if err := o.e.Prober.Probe(ctx, port, path, status, max(o.m.Health.Timeout, time.Second)); err != nil {
				return fmt.Errorf("unhealthy within min_healthy_time (%s): %v", d, err)
			}
		}
	}
}

// tail returns the end of s, at most n bytes.
func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
