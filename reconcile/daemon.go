package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"steward/spec"
	"steward/state"
)

// Source loads the desired state. An error means the specs are unusable
// right now (for example a parse error): the daemon keeps the last good
// desired state in force and reports the error.
type Source func(ctx context.Context) (Desired, error)

// Daemon runs the reconcile loop: every event (a process exited, the specs
// changed, a timer, a request) puts merchant ids on one queue, and workers
// reconcile one merchant at a time. A periodic resync queues every merchant
// so that no missed notification leaves drift behind.
type Daemon struct {
	Exec    *Executor
	Source  Source
	Workers int
	Resync  time.Duration
	Log     *slog.Logger
	// Fetch, when set, is called by SyncNow before the specs are reloaded
	// (a git source fetches).
	Fetch func(ctx context.Context) error

	// Watchdog, when positive, makes Run call Heartbeat at that interval
	// from its main loop, so a stuck loop stops the heartbeats (systemd's
	// WatchdogSec then restarts steward; merchants keep running).
	Watchdog  time.Duration
	Heartbeat func()

	// Health, when set, probes running merchants; it reports merchants
	// that fail past their threshold through MarkUnhealthy.
	Health HealthWatch
	// OnDesired, when set, is called with every newly loaded desired state
	// (the database watcher follows the database blocks).
	OnDesired func(Desired)
	// WatchDatabases says a database watcher reports through
	// DatabaseChanged: databases are "unknown" until it has decided.
	WatchDatabases bool
	// RecoveryStagger spaces the restarts of merchants whose database came
	// back: RecoveryBurst of them every RecoveryStagger.
	RecoveryStagger time.Duration
	RecoveryBurst   int

	hmu       sync.Mutex
	gens      map[string]uint64
	nextGen   uint64
	unhealthy map[string]unhealthyMark
	dbKnown   map[string]bool

	// pause lets an API apply or restart act on merchants without racing
	// the workers: workers hold it shared, Exclusive holds it alone.
	pause sync.RWMutex

	queue   *Queue
	desired atomic.Pointer[Desired]
	// srcErr is the last source error, or nil when the last load was good.
	srcErr atomic.Pointer[error]
	// watchCtx bounds exit watchers; they end with Run.
	watchCtx context.Context
	reloadCh chan struct{}
	// reconciles counts reconcile passes, for tests and metrics.
	reconciles atomic.Int64
}

// HealthWatch probes running merchants.
type HealthWatch interface {
	// Watch starts (or restarts, for a new generation) probing merchant id.
	Watch(id string, generation uint64, port int, path string, h spec.Health)
	// Forget stops probing id.
	Forget(id string)
}

type unhealthyMark struct {
	gen    uint64
	reason string
}

// databaseUp reports whether the database watcher last saw name up.
func (dm *Daemon) databaseUp(name string) bool {
	dm.hmu.Lock()
	known := dm.dbKnown[name] || !dm.WatchDatabases
	dm.hmu.Unlock()
	if !known {
		return false
	}
	dm.Exec.mu.Lock()
	defer dm.Exec.mu.Unlock()
	db := dm.Exec.st.Databases[name]
	return db == nil || db.Up
}

// MarkUnhealthy reports that merchant id's process of the given generation
// failed its health checks; the next reconcile of id restarts it.
func (dm *Daemon) MarkUnhealthy(id string, generation uint64, reason string) {
	dm.hmu.Lock()
	if dm.gens[id] != generation {
		dm.hmu.Unlock()
		return // a process that is already gone
	}
	dm.unhealthy[id] = unhealthyMark{generation, reason}
	dm.hmu.Unlock()
	dm.Log.Warn("merchant unhealthy", "merchant", id, "reason", reason)
	dm.queue.Add(id)
}

// DatabaseChanged records a database's reachability as decided by the
// database watcher, and queues the merchants on it: on recovery, staggered.
func (dm *Daemon) DatabaseChanged(db state.Database) {
	x := dm.Exec
	x.mu.Lock()
	if x.st.Databases == nil {
		x.st.Databases = map[string]*state.Database{}
	}
	old := x.st.Databases[db.Name]
	changed := old == nil || old.Up != db.Up
	d := db
	x.st.Databases[db.Name] = &d
	if changed {
		what := "down"
		if db.Up {
			what = "up"
		}
		x.pending = append(x.pending, state.Event{Time: x.Now(), Action: "database " + what, Reason: fmt.Sprintf("database %s is %s", db.Name, what), Result: "observed", Error: db.LastError})
	}
	x.mu.Unlock()
	dm.hmu.Lock()
	first := !dm.dbKnown[db.Name]
	dm.dbKnown[db.Name] = true
	dm.hmu.Unlock()
	if changed || first {
		dm.Log.Info("database reachability", "database", db.Name, "up", db.Up, "error", db.LastError)
		x.Flush(context.Background())
	}
	if !changed && !first {
		return
	}
	des := dm.desired.Load()
	if des == nil {
		return
	}
	var ids []string
	for _, id := range des.Fleet.MerchantIDs() {
		if des.Fleet.Merchants[id].Database == db.Name {
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

// Reload asks the daemon to reload the specs and reconcile everything.
func (dm *Daemon) Reload() {
	select {
	case dm.reloadCh <- struct{}{}:
	default:
	}
}

// Enqueue asks for merchant id to be reconciled now.
func (dm *Daemon) Enqueue(id string) { dm.queue.Add(id) }

// Reconciles is the number of single-merchant reconcile passes so far.
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

// Init prepares the daemon; Run calls it when it was not called before.
func (dm *Daemon) Init() {
	if dm.queue != nil {
		return
	}
	dm.queue = NewQueue()
	dm.reloadCh = make(chan struct{}, 1)
	dm.gens = map[string]uint64{}
	dm.unhealthy = map[string]unhealthyMark{}
	dm.dbKnown = map[string]bool{}
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
}

// Run reconciles until ctx ends. Merchants are left running when it returns.
func (dm *Daemon) Run(ctx context.Context) error {
	dm.Init()
	x := dm.Exec
	dm.watchCtx = ctx
	x.OnStarted = dm.watch
	x.OnStopped = dm.forget
	dm.load(ctx)

	// Adopt what is running: watch every live recorded process, and note
	// the ones that died while no steward was watching.
	x.Observe(ctx)
	x.mu.Lock()
	var adopt []struct {
		id string
		p  Proc
	}
	for id, rec := range x.st.Merchants {
		if rec.PID != 0 {
			adopt = append(adopt, struct {
				id string
				p  Proc
			}{id, Proc{rec.PID, rec.StartTime}})
		}
	}
	x.mu.Unlock()
	for _, a := range adopt {
		dm.Log.Info("adopted running merchant", "merchant", a.id, "pid", a.p.PID)
		dm.watch(dm.adopted(ctx, a.id, a.p))
	}
	x.Flush(ctx)
	dm.enqueueAll()

	// Actions in flight finish even when ctx ends, so that no merchant is
	// left half-started; they are bounded by their own timeouts.
	workCtx := context.WithoutCancel(ctx)
	var wg sync.WaitGroup
	for range dm.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
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
		}()
	}
	tick := time.NewTicker(dm.Resync)
	defer tick.Stop()
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
			x.Flush(workCtx)
			dm.Log.Info("daemon stopped; merchants keep running")
			return nil
		case <-tick.C:
			dm.Log.Debug("resync")
			dm.load(ctx)
			dm.enqueueAll()
			if d := dm.desired.Load(); d != nil {
				go dm.Exec.CollectGarbage(ctx, *d)
			}
		case <-dm.reloadCh:
			dm.load(ctx)
			dm.enqueueAll()
		}
	}
}

func (dm *Daemon) load(ctx context.Context) {
	d, err := dm.Source(ctx)
	if dm.Exec.Metrics != nil {
		rev := ""
		if err == nil {
			rev = d.Fleet.Revision
		}
		dm.Exec.Metrics.SourceLoaded(rev, err)
	}
	if err != nil {
		dm.srcErr.Store(&err)
		if dm.desired.Load() == nil {
			dm.Log.Error("specs are unusable and there is no last good state; nothing will be reconciled until they are fixed", "err", err)
		} else {
			dm.Log.Error("specs are unusable; the last good desired state stays in force", "err", err, "revision", dm.desired.Load().Fleet.Revision)
		}
		return
	}
	dm.srcErr.Store(nil)
	old := dm.desired.Swap(&d)
	if dm.OnDesired != nil {
		dm.OnDesired(d)
	}
	if old == nil || old.Fleet.Revision != d.Fleet.Revision {
		dm.Log.Info("desired state loaded", "revision", d.Fleet.Revision, "merchants", len(d.Fleet.Merchants))
	}
}

func (dm *Daemon) enqueueAll() {
	seen := map[string]bool{}
	if d := dm.desired.Load(); d != nil {
		for _, id := range d.Fleet.MerchantIDs() {
			seen[id] = true
			dm.queue.Add(id)
		}
	}
	dm.Exec.mu.Lock()
	ids := sortedIDs(dm.Exec.st.Merchants)
	dm.Exec.mu.Unlock()
	for _, id := range ids {
		if !seen[id] {
			dm.queue.Add(id)
		}
	}
}

// reconcile converges one merchant.
func (dm *Daemon) reconcile(ctx context.Context, id string) {
	dm.reconciles.Add(1)
	d := dm.desired.Load()
	if d == nil {
		return
	}
	x := dm.Exec
	log := dm.Log.With("merchant", id)
	// The schema is read before the state lock is taken: it is I/O.
	var schema *int64
	var needs map[string]int64
	if m := d.Fleet.Merchants[id]; m != nil && x.Databases != nil && m.Database != "" && dm.databaseUp(m.Database) {
		x.mu.Lock()
		rec := x.st.Merchants[id].Clone()
		x.mu.Unlock()
		schema, needs = x.observeSchema(ctx, *d, m, rec)
	}
	x.mu.Lock()
	now := x.Now()
	rec := x.st.Merchants[id]
	running := false
	if rec != nil && rec.PID != 0 {
		p := Proc{rec.PID, rec.StartTime}
		running = x.Runtime.Alive(p)
		if !running && !x.stopping[p] {
			// Died without its watcher noticing yet: count it the same way.
			x.Policy.NoteExit(rec, time.Time{}, now)
			x.pending = append(x.pending, state.Event{Time: now, Merchant: id, Action: "exited", Reason: fmt.Sprintf("process %d found dead", p.PID), Result: "observed", PID: p.PID, Version: rec.Version})
		}
	}
	o := Observed{Now: now, State: x.st, Running: map[string]bool{id: running}, DatabaseDown: map[string]bool{},
		DatabaseUnknown: map[string]bool{}, Unhealthy: map[string]string{}, Schema: map[string]int64{}, Needs: needs}
	if schema != nil {
		o.Schema[id] = *schema
	}
	for name, db := range x.st.Databases {
		if !db.Up {
			o.DatabaseDown[name] = true
		}
	}
	dm.hmu.Lock()
	if dm.WatchDatabases {
		for name := range d.Fleet.Databases {
			if !dm.dbKnown[name] {
				o.DatabaseUnknown[name] = true
				delete(o.DatabaseDown, name) // a verdict from an earlier run
			}
		}
	}
	mark, isUnhealthy := dm.unhealthy[id]
	if isUnhealthy && running && mark.gen == dm.gens[id] {
		o.Unhealthy[id] = mark.reason
	}
	dm.hmu.Unlock()
	a, ok := DiffOne(*d, o, id)
	if ok && a.Kind == Create && a.After != nil && a.After.Port != 0 {
		// Reserve the port now, so that no other worker assigns it too.
		x.st.Merchants[id] = &state.Merchant{ID: id, Package: a.After.Package, Port: a.After.Port, Phase: PhaseStarting}
	}
	x.mu.Unlock()
	if !ok {
		dm.queue.Forget(id)
		return
	}
	if a.Kind == Hold {
		if !a.NotBefore.IsZero() {
			dm.queue.AddAfter(id, a.NotBefore.Sub(now))
		}
		x.hold(a)
		log.Debug("held", "reason", a.Reason)
		return
	}
	log.Info("reconciling", "action", a.Kind, "reason", a.Reason)
	if a.Unhealthy {
		dm.hmu.Lock()
		delete(dm.unhealthy, id)
		dm.hmu.Unlock()
	}
	err := x.Do(ctx, *d, a, d.Fleet.Revision)
	if a.Unhealthy && err == nil {
		x.mu.Lock()
		if rec := x.st.Merchants[id]; rec != nil && rec.PID == 0 && rec.NextAttempt.After(x.Now()) {
			dm.queue.AddAfter(id, rec.NextAttempt.Sub(x.Now()))
		}
		x.mu.Unlock()
	}
	if err != nil {
		dm.queue.AddRateLimited(id)
		return
	}
	dm.queue.Forget(id)
}

// adopted describes a running process found at start, for watching.
func (dm *Daemon) adopted(ctx context.Context, id string, p Proc) Started {
	s := Started{Merchant: id, Proc: p}
	x := dm.Exec
	x.mu.Lock()
	rec := x.st.Merchants[id]
	if rec != nil {
		s.Port = rec.Port
	}
	var pkg, version string
	if rec != nil {
		pkg, version = rec.Package, rec.Version
	}
	x.mu.Unlock()
	d := dm.desired.Load()
	if d == nil {
		return s
	}
	m := d.Fleet.Merchants[id]
	if m == nil {
		return s
	}
	s.Health = m.Health
	var rel *Release
	if p := d.Fleet.Packages[pkg]; p != nil && version != "" {
		rel, _ = x.Packages.Install(ctx, p, version) // already installed: a lookup
	}
	s.HealthPath = healthPath(m, rel)
	return s
}

// forget stops health probes of id.
func (dm *Daemon) forget(id string) {
	dm.hmu.Lock()
	delete(dm.gens, id)
	delete(dm.unhealthy, id)
	dm.hmu.Unlock()
	if dm.Health != nil {
		dm.Health.Forget(id)
	}
}

// watch probes a started process's health and waits for it to exit; then
// it records the exit and queues the merchant. Exits of processes steward
// ends on purpose are ignored.
func (dm *Daemon) watch(s Started) {
	ctx := dm.watchCtx
	if ctx == nil {
		return
	}
	id, p := s.Merchant, s.Proc
	dm.hmu.Lock()
	dm.nextGen++
	gen := dm.nextGen
	dm.gens[id] = gen
	delete(dm.unhealthy, id)
	dm.hmu.Unlock()
	if dm.Health != nil && s.Port != 0 {
		dm.Health.Watch(id, gen, s.Port, s.HealthPath, s.Health)
	}
	go func() {
		exitedAt, how, err := dm.Exec.Runtime.Wait(ctx, p)
		if err != nil || ctx.Err() != nil {
			return
		}
		x := dm.Exec
		x.mu.Lock()
		rec := x.st.Merchants[id]
		if x.stopping[p] || rec == nil || rec.PID != p.PID || rec.StartTime != p.StartTime {
			x.mu.Unlock()
			return
		}
		now := x.Now()
		// While its database is down (policy hold) a crash does not count
		// towards the crash loop: the merchant is held until it is back.
		db := rec.Applied["database"]
		held := false
		if dbst := x.st.Databases[db]; db != "" && dbst != nil && !dbst.Up {
			if d := dm.desired.Load(); d != nil {
				if m := d.Fleet.Merchants[id]; m != nil && m.OnDatabaseDown == spec.OnDBDownHold {
					held = true
				}
			}
		}
		loop := false
		if held {
			rec.PID, rec.StartTime, rec.ExitedAt, rec.Phase, rec.Died = 0, 0, exitedAt, PhaseHeld, true
		} else {
			loop = x.Policy.NoteExit(rec, exitedAt, now)
		}
		x.pending = append(x.pending, state.Event{Time: now, Merchant: id, Action: "exited", Reason: fmt.Sprintf("process %d %s", p.PID, how), Result: "observed", PID: p.PID, Version: rec.Version})
		next := rec.NextAttempt
		suspended := rec.Suspended
		x.mu.Unlock()
		dm.forget(id)
		dm.Log.Warn("merchant process exited", "merchant", id, "pid", p.PID, "how", how, "crashloop", loop, "held", held)
		if x.Metrics != nil {
			x.Metrics.ProcessExited(id)
		}
		x.Flush(context.WithoutCancel(ctx))
		if suspended {
			return
		}
		dm.queue.AddAfter(id, next.Sub(x.Now()))
	}()
}

// Plan is the plan the daemon would apply to the whole fleet now.
func (dm *Daemon) Plan(ctx context.Context) (*Plan, error) {
	d := dm.desired.Load()
	if d == nil {
		return nil, fmt.Errorf("no usable specs yet: %v", dm.SourceError())
	}
	return Diff(*d, dm.Exec.Observe(ctx)), nil
}

// ErrPlanChanged is returned by ApplyPlan when the plan is no longer the
// one the caller saw.
var ErrPlanChanged = errors.New("the plan changed")

// ApplyPlan applies the whole-fleet plan, provided it is still the plan
// with the given digest, while the workers are paused.
func (dm *Daemon) ApplyPlan(ctx context.Context, digest string, hooks Hooks) (int, error) {
	dm.pause.Lock()
	defer dm.pause.Unlock()
	p, err := dm.Plan(ctx)
	if err != nil {
		return 0, err
	}
	if p.Digest() != digest {
		return 0, fmt.Errorf("%w since it was shown (specs %s now); make a new plan", ErrPlanChanged, p.Revision)
	}
	d := dm.desired.Load()
	failed := dm.Exec.ApplyWith(ctx, *d, p, hooks)
	dm.enqueueAll()
	return failed, nil
}

// RestartMerchant restarts one merchant while the workers are paused.
func (dm *Daemon) RestartMerchant(ctx context.Context, id string) error {
	d := dm.desired.Load()
	if d == nil || d.Fleet.Merchants[id] == nil {
		return fmt.Errorf("merchant %q is not in the specs", id)
	}
	dm.pause.Lock()
	defer dm.pause.Unlock()
	x := dm.Exec
	x.mu.Lock()
	rec := x.st.Merchants[id]
	var port int
	var version string
	if rec != nil {
		port, version = rec.Port, rec.Version
	}
	suspended := rec != nil && rec.Suspended
	x.mu.Unlock()
	switch {
	case rec == nil || port == 0:
		return fmt.Errorf("merchant %q has never been started", id)
	case suspended:
		return fmt.Errorf("merchant %q is suspended; resume it first", id)
	}
	a := Action{Kind: Restart, Merchant: id, Reason: "restart requested", After: &Snapshot{Port: port, Version: version}}
	return x.Do(ctx, *d, a, d.Fleet.Revision)
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

// SetSuspended suspends or resumes a merchant. A suspended merchant is left
// exactly as it is: no restarts, no upgrades, no drift correction.
func (dm *Daemon) SetSuspended(ctx context.Context, id string, suspend bool) error {
	dm.pause.Lock()
	defer dm.pause.Unlock()
	if err := dm.Exec.SetSuspended(id, suspend); err != nil {
		return err
	}
	dm.Exec.Flush(ctx)
	dm.queue.Add(id)
	return nil
}
