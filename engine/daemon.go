package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"steward/reconcile"
	"steward/spec"
	"steward/state"
)

// HealthWatch probes running merchants (package probe's Monitor).
type HealthWatch interface {
	// Watch starts (or restarts, for a new generation) probing merchant id.
	Watch(id string, generation uint64, port int, path string, h spec.Health)
	// Forget stops probing id.
	Forget(id string)
}

// Daemon is `steward run`: every event (a process exited, a probe failed,
// a database went down or came back, the specs changed, a timer, an API
// call) only puts merchant ids on one work queue, and workers reconcile one
// merchant at a time through the engine's controller. A periodic resync
// queues every merchant, so that no missed event leaves drift behind.
type Daemon struct {
	Engine *Engine
	// Source loads the desired state. An error means the specs are
	// unusable now (a parse error, a bad commit): the last good desired
	// state stays in force and the error is shown. Loads never overlap.
	Source func(ctx context.Context) (Desired, error)
	// Fetch, when set, is called by SyncNow before the specs are reloaded
	// (a git source fetches).
	Fetch   func(ctx context.Context) error
	Workers int
	Resync  time.Duration
	Log     *slog.Logger
	// Watchdog, when positive, makes Run call Heartbeat at that interval
	// from its main loop (systemd's watchdog).
	Watchdog  time.Duration
	Heartbeat func()
	// Health, when set, probes running merchants; it reports merchants
	// that fail past their threshold through MarkUnhealthy.
	Health HealthWatch
	// OnDesired is called with every newly loaded desired state.
	OnDesired func(Desired)
	// WatchDatabases says a database watcher reports through
	// DatabaseChanged: databases are unknown until it has decided.
	WatchDatabases bool
	// RecoveryStagger spaces the reconciles of merchants whose database
	// came back: RecoveryBurst of them every RecoveryStagger.
	RecoveryStagger time.Duration
	RecoveryBurst   int
	// OnResync is called at each resync tick (the router's supervision).
	OnResync func(ctx context.Context)

	queue    *Queue
	desired  atomic.Pointer[Desired]
	srcErr   atomic.Pointer[error]
	loadMu   sync.Mutex
	watchCtx context.Context
	reloadCh chan struct{}
	// pause lets a fleet-wide apply run without the workers: workers hold
	// it shared, ApplyPlan alone.
	pause sync.RWMutex
	// locks serialise work on one merchant between workers and the
	// operations the API runs.
	locks keyedMutex

	hmu  sync.Mutex
	gens map[string]uint64
	// ready holds processes left "starting" (their start's readiness
	// wait gave up) that the health monitor has since found healthy.
	ready     map[string]Proc
	nextGen   uint64
	unhealthy map[string]mark
	exits     map[string]mark
	dbState   map[string]reconcile.DBState

	reconciles atomic.Int64
	initOnce   sync.Once
}

// mark is something seen of one process of a merchant.
type mark struct {
	p      Proc
	gen    uint64
	reason string
	at     time.Time
}

// Init prepares the daemon; Run calls it.
func (dm *Daemon) Init() {
	dm.initOnce.Do(func() {
		dm.queue = NewQueue()
		dm.reloadCh = make(chan struct{}, 1)
		dm.gens = map[string]uint64{}
		dm.ready = map[string]Proc{}
		dm.unhealthy = map[string]mark{}
		dm.exits = map[string]mark{}
		dm.dbState = map[string]reconcile.DBState{}
		if dm.RecoveryStagger == 0 {
			dm.RecoveryStagger, dm.RecoveryBurst = 250*time.Millisecond, 4
		}
		if dm.Workers <= 0 {
			dm.Workers = 4
		}
		if dm.Resync <= 0 {
			dm.Resync = time.Minute
		}
		if dm.Log == nil {
			dm.Log = slog.New(slog.DiscardHandler)
		}
		dm.Engine.init()
		dm.Engine.OnStarted = dm.watch
		dm.Engine.OnStopped = dm.forget
	})
}

// Enqueue asks for merchant id to be reconciled now.
func (dm *Daemon) Enqueue(id string) { dm.Init(); dm.queue.Add(id) }

// Reconciles is the number of single-merchant reconciles so far.
func (dm *Daemon) Reconciles() int64 { return dm.reconciles.Load() }

// SourceError is the last error loading the specs, or nil.
func (dm *Daemon) SourceError() error {
	if p := dm.srcErr.Load(); p != nil {
		return *p
	}
	return nil
}

// Desired is the desired state in force (nil before the first good load).
func (dm *Daemon) Desired() *Desired { return dm.desired.Load() }

// Reload asks the daemon to reload the specs and reconcile everything.
func (dm *Daemon) Reload() {
	select {
	case dm.reloadCh <- struct{}{}:
	default:
	}
}

// ObserveOptions are the daemon's sources of observation: the database
// watcher's verdicts, the health monitor's, the exit watchers'.
func (dm *Daemon) ObserveOptions() ObserveOptions {
	return ObserveOptions{
		Databases: dm.databaseState,
		Unhealthy: func(id string, p Proc) string {
			dm.hmu.Lock()
			defer dm.hmu.Unlock()
			if m, ok := dm.unhealthy[id]; ok && m.p == p && m.gen == dm.gens[id] {
				return m.reason
			}
			return ""
		},
		Exited: func(id string, p Proc) (time.Time, string) {
			dm.hmu.Lock()
			defer dm.hmu.Unlock()
			if m, ok := dm.exits[id]; ok && m.p == p {
				return m.at, m.reason
			}
			return time.Time{}, ""
		},
	}
}

func (dm *Daemon) databaseState(name string) reconcile.DBState {
	if !dm.WatchDatabases {
		return reconcile.DBUp
	}
	dm.hmu.Lock()
	defer dm.hmu.Unlock()
	return dm.dbState[name]
}

// DatabaseState is a database's reachability as the watcher last decided.
func (dm *Daemon) DatabaseState(name string) reconcile.DBState { return dm.databaseState(name) }

// MarkUnhealthy reports that merchant id's process of the given
// generation failed its health checks; the next reconcile restarts it.
func (dm *Daemon) MarkUnhealthy(id string, generation uint64, reason string) {
	dm.hmu.Lock()
	if dm.gens[id] != generation {
		dm.hmu.Unlock()
		return // a process that is already gone
	}
	rec := dm.Engine.Record(id)
	if rec == nil {
		dm.hmu.Unlock()
		return
	}
	dm.unhealthy[id] = mark{p: procOf(rec.Current), gen: generation, reason: reason}
	dm.hmu.Unlock()
	dm.Log.Warn("merchant unhealthy", "merchant", id, "reason", reason)
	dm.Engine.Metrics.Unhealthy(id)
	dm.queue.Add(id)
}

// MarkHealthy reports that merchant id's process of the given generation
// passed a health check. A process left "starting" (its start stopped
// waiting for it, say while it was stopped with SIGSTOP) is then running:
// the next reconcile records it ready.
func (dm *Daemon) MarkHealthy(id string, generation uint64) {
	dm.hmu.Lock()
	defer dm.hmu.Unlock()
	if dm.gens[id] != generation {
		return
	}
	rec := dm.Engine.Record(id)
	if rec == nil || rec.Phase != reconcile.PhaseStarting || rec.Change != nil || !rec.Current.Running() {
		return
	}
	if _, queued := dm.ready[id]; !queued {
		dm.ready[id] = procOf(rec.Current)
		dm.queue.Add(id)
	}
}

// DatabaseChanged records a database's reachability as the database
// watcher decided it, and queues the merchants on it: on recovery,
// staggered.
func (dm *Daemon) DatabaseChanged(db state.Database) {
	dm.Init()
	s := reconcile.DBDown
	if db.Up {
		s = reconcile.DBUp
	}
	dm.hmu.Lock()
	old, known := dm.dbState[db.Name]
	dm.dbState[db.Name] = s
	dm.hmu.Unlock()
	changed := dm.Engine.SetDatabase(context.Background(), db)
	if known && old == s {
		return
	}
	what := "down"
	if db.Up {
		what = "up"
	}
	dm.Log.Info("database reachability", "database", db.Name, "up", db.Up, "error", db.LastError)
	if changed || !known {
		dm.Engine.record(context.Background(), state.Event{Action: "database " + what, Reason: fmt.Sprintf("database %s is %s", db.Name, what), Result: "observed", Error: db.LastError})
	}
	d := dm.desired.Load()
	if d == nil {
		return
	}
	var ids []string
	for _, id := range d.Fleet.MerchantIDs() {
		if d.Fleet.Merchants[id].Database == db.Name {
			ids = append(ids, id)
		}
	}
	burst, every := max(dm.RecoveryBurst, 1), dm.RecoveryStagger
	for i, id := range ids {
		if db.Up && every > 0 {
			dm.queue.AddAfter(id, time.Duration(i/burst)*every)
		} else {
			dm.queue.Add(id)
		}
	}
}

// Run reconciles until ctx ends. Merchants are left running when it
// returns; actions in flight finish first, bounded by their own timeouts.
func (dm *Daemon) Run(ctx context.Context) error {
	dm.Init()
	dm.watchCtx = ctx
	e := dm.Engine
	dm.load(ctx)
	// Adopt what runs: watch every live recorded process. The ones that
	// died while no steward watched are noted by their first reconcile.
	recs, _, _ := e.Snapshot()
	for id, rec := range recs {
		if l := e.liveness(rec.Current); l == reconcile.Alive {
			dm.Log.Info("adopted running merchant", "merchant", id, "pid", rec.Current.PID)
			dm.watch(id, procOf(rec.Current), rec.Current.Port, dm.healthPath(id, rec), dm.health(id))
		}
	}
	dm.enqueueAll()

	workCtx := context.WithoutCancel(ctx)
	var wg sync.WaitGroup
	for range dm.Workers {
		wg.Go(func() {
			for {
				id, ok := dm.queue.Get()
				if !ok {
					return
				}
				dm.pause.RLock()
				dm.reconcile(workCtx, id)
				dm.pause.RUnlock()
				dm.queue.Done(id)
			}
		})
	}
	tick := time.NewTicker(dm.Resync)
	defer tick.Stop()
	flush := time.NewTicker(5 * time.Second)
	defer flush.Stop()
	var beat <-chan time.Time
	if dm.Watchdog > 0 && dm.Heartbeat != nil {
		t := time.NewTicker(dm.Watchdog)
		defer t.Stop()
		beat = t.C
		dm.Heartbeat()
	}
	for {
		select {
		case <-beat:
			dm.Heartbeat()
		case <-ctx.Done():
			dm.queue.ShutDown()
			wg.Wait()
			e.FlushEvents(workCtx)
			dm.Log.Info("daemon stopped; merchants keep running")
			return nil
		case <-flush.C:
			if n, _ := e.PendingEvents(); n > 0 {
				e.FlushEvents(ctx)
			}
		case <-tick.C:
			dm.Log.Debug("resync")
			dm.load(ctx)
			dm.enqueueAll()
			if dm.OnResync != nil {
				dm.OnResync(ctx)
			}
			if d := dm.desired.Load(); d != nil {
				go func() {
					e.CollectGarbage(ctx, *d)
					e.ForgetRollouts(ctx, d.Fleet)
				}()
			}
		case <-dm.reloadCh:
			dm.load(ctx)
			dm.enqueueAll()
		}
	}
}

// load reads the specs; a failure keeps the last good desired state.
// Loads never run at once (the resync, a spec change and POST /v1/sync
// may all ask).
func (dm *Daemon) load(ctx context.Context) {
	dm.loadMu.Lock()
	defer dm.loadMu.Unlock()
	d, err := dm.Source(ctx)
	rev := ""
	if err == nil {
		rev = d.Fleet.Revision
	}
	dm.Engine.Metrics.SourceLoaded(rev, err)
	if err != nil {
		dm.srcErr.Store(&err)
		if old := dm.desired.Load(); old == nil {
			dm.Log.Error("specs are unusable and there is no last good state; nothing will be reconciled until they are fixed", "err", err)
		} else {
			dm.Log.Error("specs are unusable; the last good desired state stays in force", "err", err, "revision", old.Fleet.Revision)
		}
		return
	}
	dm.srcErr.Store(nil)
	old := dm.desired.Swap(&d)
	dm.Engine.SetRedactor(d.Redact)
	if dm.OnDesired != nil {
		dm.OnDesired(d)
	}
	if old == nil || old.Fleet.Revision != d.Fleet.Revision {
		dm.Log.Info("desired state loaded", "revision", d.Fleet.Revision, "merchants", len(d.Fleet.Merchants))
	}
}

// enqueueAll queues every merchant of the specs and of the records.
func (dm *Daemon) enqueueAll() {
	seen := map[string]bool{}
	if d := dm.desired.Load(); d != nil {
		for _, id := range d.Fleet.MerchantIDs() {
			seen[id] = true
			dm.queue.Add(id)
		}
	}
	recs, _, _ := dm.Engine.Snapshot()
	for id := range recs {
		if !seen[id] {
			dm.queue.Add(id)
		}
	}
}

// reconcile converges one merchant and requeues it as its result says.
func (dm *Daemon) reconcile(ctx context.Context, id string) {
	dm.reconciles.Add(1)
	d := dm.desired.Load()
	if d == nil {
		return
	}
	unlock := dm.locks.Lock(id)
	dm.hmu.Lock()
	p, ready := dm.ready[id]
	delete(dm.ready, id)
	dm.hmu.Unlock()
	if ready {
		if err := dm.Engine.NoteReady(ctx, id, p); err != nil {
			dm.Log.Error("recording a healthy process ready failed", "merchant", id, "err", err)
		}
	}
	res, err := dm.Engine.Reconcile(ctx, *d, id, dm.ObserveOptions())
	unlock()
	switch {
	case err != nil && reconcile.ClassOf(err) == reconcile.Transient:
		dm.queue.AddRateLimited(id)
		return
	case res.RequeueAfter > 0:
		dm.queue.AddAfter(id, res.RequeueAfter)
	}
	dm.queue.Forget(id)
}

// healthPath is the HTTP path a running merchant is probed on.
func (dm *Daemon) healthPath(id string, rec *reconcile.Record) string {
	d := dm.desired.Load()
	if d == nil {
		return ""
	}
	m := d.Fleet.Merchants[id]
	if m == nil {
		return ""
	}
	rel, _ := dm.Engine.Packages.Get(m.Package, rec.Current.Version)
	return HealthPath(m, rel)
}

func (dm *Daemon) health(id string) spec.Health {
	if d := dm.desired.Load(); d != nil {
		if m := d.Fleet.Merchants[id]; m != nil {
			return m.Health
		}
	}
	return spec.DefaultHealth
}

// forget stops watching merchant id's health.
func (dm *Daemon) forget(id string) {
	dm.hmu.Lock()
	delete(dm.gens, id)
	delete(dm.unhealthy, id)
	dm.hmu.Unlock()
	if dm.Health != nil {
		dm.Health.Forget(id)
	}
}

// watch probes a merchant's new current process and waits for it to exit;
// an exit steward did not ask for is noted and the merchant queued.
func (dm *Daemon) watch(id string, p Proc, port int, path string, h spec.Health) {
	ctx := dm.watchCtx
	if ctx == nil {
		return
	}
	dm.hmu.Lock()
	dm.nextGen++
	gen := dm.nextGen
	dm.gens[id] = gen
	delete(dm.unhealthy, id)
	delete(dm.exits, id)
	dm.hmu.Unlock()
	if dm.Health != nil && port != 0 {
		dm.Health.Watch(id, gen, port, path, h)
	}
	go func() {
		es, err := dm.Engine.Runtime.Wait(ctx, p)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			// Not an exit: the process could not be watched (out of
			// descriptors, say). Its next reconcile looks at /proc.
			dm.Log.Warn("cannot watch a merchant's process; its reconciles check /proc instead", "merchant", id, "pid", p.PID, "err", err)
			dm.queue.AddAfter(id, 5*time.Second)
			return
		}
		if dm.Engine.IsStopping(p) {
			return
		}
		dm.hmu.Lock()
		dm.exits[id] = mark{p: p, at: es.Time, reason: es.String()}
		current := dm.gens[id] == gen
		dm.hmu.Unlock()
		if current {
			dm.forget(id)
		}
		dm.Log.Warn("merchant process exited", "merchant", id, "pid", p.PID, "how", es.String())
		dm.queue.Add(id)
	}()
}

// ErrNoDesiredState: the daemon has no usable specs yet.
var ErrNoDesiredState = errors.New("no usable specs yet")

func (dm *Daemon) desiredOrErr() (Desired, error) {
	d := dm.desired.Load()
	if d == nil {
		return Desired{}, fmt.Errorf("%w: %v", ErrNoDesiredState, dm.SourceError())
	}
	return *d, nil
}

// Plan is the plan the daemon would apply to the whole fleet now. It
// changes nothing.
func (dm *Daemon) Plan(ctx context.Context) (*reconcile.Plan, error) {
	d, err := dm.desiredOrErr()
	if err != nil {
		return nil, err
	}
	return dm.Engine.Plan(ctx, d, dm.ObserveOptions()), nil
}

// ErrPlanChanged is returned by ApplyPlan when the plan is no longer the
// one the caller saw.
var ErrPlanChanged = errors.New("the plan changed")

// ApplyPlan applies the whole-fleet plan, provided it is still the plan
// with the given digest, while the workers wait.
func (dm *Daemon) ApplyPlan(ctx context.Context, digest string, hooks Hooks) (ApplyResult, error) {
	dm.pause.Lock()
	defer dm.pause.Unlock()
	d, err := dm.desiredOrErr()
	if err != nil {
		return ApplyResult{}, err
	}
	opts := dm.ObserveOptions()
	obs := dm.Engine.Observe(ctx, d, nil, opts)
	p := reconcile.Diff(dm.Engine.Input(d, obs))
	if p.Digest() != digest {
		return ApplyResult{}, fmt.Errorf("%w since it was shown (specs %s now); make a new plan", ErrPlanChanged, p.Revision)
	}
	if err := dm.Engine.NoteObservations(ctx, d, obs); err != nil {
		return ApplyResult{}, err
	}
	res := dm.Engine.Apply(ctx, d, p, hooks, 16)
	dm.enqueueAll()
	return res, nil
}

// Restart restarts one merchant, waiting for its worker to finish first.
func (dm *Daemon) Restart(ctx context.Context, id string, hooks Hooks) error {
	d, err := dm.desiredOrErr()
	if err != nil {
		return err
	}
	defer dm.locks.Lock(id)()
	return dm.Engine.Restart(ctx, d, id, hooks)
}

// SetSuspended suspends or resumes one merchant.
func (dm *Daemon) SetSuspended(ctx context.Context, id string, on bool) (bool, error) {
	unlock := dm.locks.Lock(id)
	changed, err := dm.Engine.SetSuspended(ctx, id, on)
	unlock()
	dm.queue.Add(id)
	return changed, err
}

// Rollback rolls one merchant back (see Engine.Rollback).
func (dm *Daemon) Rollback(ctx context.Context, id, version string, restore bool, hooks Hooks) error {
	d, err := dm.desiredOrErr()
	if err != nil {
		return err
	}
	defer dm.locks.Lock(id)()
	if version == "" {
		if version, err = dm.Engine.RollbackTarget(id); err != nil {
			return err
		}
	}
	return dm.Engine.Rollback(ctx, d, id, version, restore, hooks)
}

// SyncNow fetches (git), reloads the specs and queues every merchant. It
// returns the revision in force and the load error, if any.
func (dm *Daemon) SyncNow(ctx context.Context) (string, error) {
	dm.Init()
	if dm.Fetch != nil {
		if err := dm.Fetch(ctx); err != nil {
			return "", err
		}
	}
	dm.load(ctx)
	dm.enqueueAll()
	rev := ""
	if d := dm.desired.Load(); d != nil {
		rev = d.Fleet.Revision
	}
	return rev, dm.SourceError()
}

// keyedMutex is a mutex per key.
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*keyedEntry
}

type keyedEntry struct {
	mu   sync.Mutex
	refs int
}

// Lock locks key and returns its unlock.
func (k *keyedMutex) Lock(key string) func() {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*keyedEntry{}
	}
	e := k.locks[key]
	if e == nil {
		e = &keyedEntry{}
		k.locks[key] = e
	}
	e.refs++
	k.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
}
