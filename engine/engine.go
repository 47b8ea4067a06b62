package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"sync"
	"time"

	"steward/reconcile"
	"steward/router"
	"steward/spec"
	"steward/state"
)

// Desired is the desired state in force: a validated fleet and the host
// settings planning depends on.
type Desired struct {
	Fleet *spec.Fleet
	Ports spec.PortRange
	// Reserved are ports steward itself listens on, by what uses them.
	Reserved map[int]string
	// Redact hides every secret value steward knows in a text.
	Redact func(string) string
	// UIDs, when set, gives every merchant a user id (and group id) of its
	// own from the range, kept in its record (runtime.uids).
	UIDs spec.PortRange
}

// Hooks receive progress; the CLI and the API render it. Methods may be
// called from several goroutines at once.
type Hooks interface {
	ActionStart(a reconcile.Action)
	ActionDone(a reconcile.Action, err error, took time.Duration)
}

// NopHooks ignores progress.
type NopHooks struct{}

func (NopHooks) ActionStart(reconcile.Action)                      {}
func (NopHooks) ActionDone(reconcile.Action, error, time.Duration) {}

// Metrics is what the engine records; package metrics implements it.
type Metrics interface {
	ActionDone(kind string, took time.Duration, err error)
	ProcessExited(merchant string)
	Unhealthy(merchant string)
	SourceLoaded(revision string, err error)
	PersistFailed(what string)
	EventsPending(n int)
}

type nopMetrics struct{}

func (nopMetrics) ActionDone(string, time.Duration, error) {}
func (nopMetrics) ProcessExited(string)                    {}
func (nopMetrics) Unhealthy(string)                        {}
func (nopMetrics) SourceLoaded(string, error)              {}
func (nopMetrics) PersistFailed(string)                    {}
func (nopMetrics) EventsPending(int)                       {}

// Engine carries out what the planner decides, against the machine, and
// records it. The CLI and the daemon share it: one executor, one
// observer, one set of operations (restart, suspend, rollback, ...).
//
// The engine keeps the records it loaded in memory and writes every
// change through the store with compare-and-swap on that record; a write
// refused as stale reloads that one record and fails the action, which the
// caller retries.
type Engine struct {
	Store     state.Store
	Runtime   Runtime
	Packages  Packages
	Prober    Prober
	Databases Databases // nil: merchant databases are not managed
	Router    Router    // nil: no router; instances are replaced stop-then-start
	Paths     Paths
	Log       *slog.Logger
	Metrics   Metrics
	// Policy is the restart policy when the fleet sets none.
	Now    func() time.Time
	Jitter func() float64
	// ReadyTimeout bounds the wait for a started process to answer (the
	// rollout's health_deadline when zero).
	ReadyTimeout time.Duration
	// StopGrace is the host's default stop grace (runtime.stop_grace).
	StopGrace time.Duration
	// OnStarted is called after a process started or was adopted, and
	// OnStopped after steward stopped one; the daemon watches them.
	OnStarted func(id string, p Proc, port int, healthPath string, h spec.Health)
	OnStopped func(id string)
	// Notify, when set, is called after every record written (nil event)
	// and after every event written to the history. It must not block.
	Notify func(ev *state.Event)

	mu       sync.RWMutex
	recs     map[string]*reconcile.Record
	rollouts map[string]*reconcile.Rollout
	dbs      map[string]*state.Database
	lineage  string
	key      []byte
	// persistErr holds, per merchant, a write that could not be saved, for
	// status until a later write of it succeeds.
	persistErr map[string]string
	// stopping holds processes steward is ending on purpose, so that exit
	// watchers do not count their exits.
	stopping map[Proc]bool
	// routes are the routes last put, by merchant; dbObs the databases'
	// reachability last observed.
	routes map[string]router.Route
	dbObs  map[string]reconcile.DBState
	// gateMu makes a rollout gate's check and the record of a change it
	// lets through one step, so that no more merchants pass than it allows.
	gateMu sync.Mutex
	// portMu makes a decision that assigns ports and the save of the
	// record holding them one step.
	portMu sync.Mutex

	evMu      sync.Mutex
	lastEvent map[string]state.Event // per merchant, the newest event
	pending   []state.Event
	dropped   int
	flushing  sync.Mutex
	redactMu  sync.RWMutex
	redactFn  func(string) string
	rels      releaseCache
	initOnce  sync.Once
	writeable bool
}

// maxPending bounds the events kept while the store cannot take them.
const maxPending = 100_000

// Load reads every record into the engine. forWrite also makes sure the
// store has a fingerprint key (a write); read-only users leave it false.
func (e *Engine) Load(ctx context.Context, forWrite bool) error {
	e.init()
	if forWrite {
		// A writer makes the key (and with it the store's lineage) first,
		// so that what it loads next carries both.
		if _, err := e.Store.Key(ctx); err != nil {
			return err
		}
	}
	s, err := e.Store.Load(ctx)
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.recs, e.rollouts, e.dbs = s.Merchants, s.Rollouts, s.Databases
	e.lineage, e.key, e.writeable = s.Lineage, s.Key, forWrite
	return nil
}

func (e *Engine) init() {
	e.initOnce.Do(func() {
		if e.Log == nil {
			e.Log = slog.New(slog.DiscardHandler)
		}
		if e.Metrics == nil {
			e.Metrics = nopMetrics{}
		}
		if e.Now == nil {
			e.Now = time.Now
		}
		if e.Jitter == nil {
			e.Jitter = mrand.Float64
		}
		if e.StopGrace <= 0 {
			e.StopGrace = spec.DefaultStopGrace
		}
		e.persistErr = map[string]string{}
		e.stopping = map[Proc]bool{}
		e.recs = map[string]*reconcile.Record{}
		e.rollouts = map[string]*reconcile.Rollout{}
		e.dbs = map[string]*state.Database{}
		e.routes = map[string]router.Route{}
		e.dbObs = map[string]reconcile.DBState{}
	})
}

// Record returns a copy of merchant id's record, nil when there is none.
func (e *Engine) Record(id string) *reconcile.Record {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.recs[id].Clone()
}

// records returns copies of the records of ids (those that exist).
func (e *Engine) records(ids []string) map[string]*reconcile.Record {
	e.mu.RLock()
	defer e.mu.RUnlock()
	out := make(map[string]*reconcile.Record, len(ids))
	for _, id := range ids {
		if r := e.recs[id]; r != nil {
			out[id] = r.Clone()
		}
	}
	return out
}

// Snapshot returns copies of every record, rollout and database.
func (e *Engine) Snapshot() (recs map[string]*reconcile.Record, rollouts map[string]*reconcile.Rollout, dbs map[string]*state.Database) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	recs = make(map[string]*reconcile.Record, len(e.recs))
	for k, v := range e.recs {
		recs[k] = v.Clone()
	}
	rollouts = make(map[string]*reconcile.Rollout, len(e.rollouts))
	for k, v := range e.rollouts {
		rollouts[k] = v.Clone()
	}
	dbs = make(map[string]*state.Database, len(e.dbs))
	for k, v := range e.dbs {
		d := *v
		dbs[k] = &d
	}
	return recs, rollouts, dbs
}

// Lineage is the state history's id ("" before the first write).
func (e *Engine) Lineage() string {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.lineage
}

// PersistErrors lists, per merchant, the last write that failed and was
// not saved since.
func (e *Engine) PersistErrors() map[string]string {
	e.mu.RLock()
	defer e.mu.RUnlock()
	out := make(map[string]string, len(e.persistErr))
	for k, v := range e.persistErr {
		out[k] = v
	}
	return out
}

// ErrPersist marks an action that could not record what it did.
var ErrPersist = errors.New("could not save the merchant's record")

// save writes r (a copy the caller owns) with compare-and-swap. On
// success the engine's copy is replaced and r.Rev is the new revision. A
// stale write reloads the stored record into the engine and fails; any
// failure is kept for status and counted.
func (e *Engine) save(ctx context.Context, r *reconcile.Record) error {
	if !e.writeable {
		return errors.New("the engine was loaded read-only")
	}
	ctx = context.WithoutCancel(ctx)
	err := e.Store.PutMerchant(ctx, r)
	if err == nil {
		e.mu.Lock()
		e.recs[r.ID] = r.Clone()
		delete(e.persistErr, r.ID)
		e.mu.Unlock()
		e.notify(nil)
		return nil
	}
	e.Metrics.PersistFailed("merchant")
	e.Log.Error("saving a merchant's record failed", "merchant", r.ID, "err", err)
	if errors.Is(err, state.ErrStale) {
		if stored, rerr := e.Store.Merchant(ctx, r.ID); rerr == nil {
			e.mu.Lock()
			if stored == nil {
				delete(e.recs, r.ID)
			} else {
				e.recs[r.ID] = stored
			}
			e.mu.Unlock()
		}
	}
	e.mu.Lock()
	e.persistErr[r.ID] = err.Error()
	e.mu.Unlock()
	return fmt.Errorf("%w: %w", ErrPersist, err)
}

// update applies fn to a copy of merchant id's record and saves it. fn
// returning false leaves the record unsaved.
func (e *Engine) update(ctx context.Context, id string, fn func(r *reconcile.Record) bool) (*reconcile.Record, error) {
	r := e.Record(id)
	if r == nil {
		return nil, fmt.Errorf("%w: %s", ErrUnknownMerchant, id)
	}
	if !fn(r) {
		return r, nil
	}
	return r, e.save(ctx, r)
}

// remove deletes merchant id's record.
func (e *Engine) remove(ctx context.Context, id string) error {
	r := e.Record(id)
	if r == nil {
		return nil
	}
	if err := e.Store.DeleteMerchant(context.WithoutCancel(ctx), id, r.Rev); err != nil {
		e.Metrics.PersistFailed("merchant")
		return fmt.Errorf("%w: %w", ErrPersist, err)
	}
	e.mu.Lock()
	delete(e.recs, id)
	delete(e.persistErr, id)
	e.mu.Unlock()
	e.notify(nil)
	return nil
}

// updateRollout applies fn to the rollout key (made from pkg and version
// when missing) and saves it, reloading and retrying when another writer
// moved it.
func (e *Engine) updateRollout(ctx context.Context, pkg, version string, fn func(ro *reconcile.Rollout)) (*reconcile.Rollout, error) {
	key := reconcile.RolloutKey(pkg, version)
	ctx = context.WithoutCancel(ctx)
	for attempt := 0; ; attempt++ {
		e.mu.RLock()
		ro := e.rollouts[key].Clone()
		e.mu.RUnlock()
		if ro == nil {
			ro = &reconcile.Rollout{Package: pkg, Version: version, StartedAt: e.Now()}
		}
		fn(ro)
		err := e.Store.PutRollout(ctx, ro)
		if err == nil {
			e.mu.Lock()
			e.rollouts[key] = ro.Clone()
			e.mu.Unlock()
			e.notify(nil)
			return ro, nil
		}
		if !errors.Is(err, state.ErrStale) || attempt >= 5 {
			e.Metrics.PersistFailed("rollout")
			return ro, fmt.Errorf("saving the rollout %s: %w", key, err)
		}
		s, lerr := e.Store.Load(ctx)
		if lerr != nil {
			return ro, lerr
		}
		e.mu.Lock()
		if stored := s.Rollouts[key]; stored != nil {
			e.rollouts[key] = stored
		} else {
			delete(e.rollouts, key)
		}
		e.mu.Unlock()
	}
}

// Rollout returns a copy of the rollout key, nil when there is none.
func (e *Engine) Rollout(key string) *reconcile.Rollout {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.rollouts[key].Clone()
}

// ForgetRollouts deletes the records of rollouts no merchant's specs ask
// for any more, so that asking for such a version again starts afresh.
func (e *Engine) ForgetRollouts(ctx context.Context, fl *spec.Fleet) {
	wanted := map[string]bool{}
	for _, m := range fl.Merchants {
		wanted[reconcile.RolloutKey(m.Package, m.Version)] = true
	}
	e.mu.RLock()
	var gone []*reconcile.Rollout
	for k, ro := range e.rollouts {
		if !wanted[k] {
			gone = append(gone, ro.Clone())
		}
	}
	e.mu.RUnlock()
	for _, ro := range gone {
		if err := e.Store.DeleteRollout(ctx, ro.Key(), ro.Rev); err != nil {
			e.Log.Warn("forgetting a finished rollout failed", "rollout", ro.Key(), "err", err)
			continue
		}
		e.mu.Lock()
		delete(e.rollouts, ro.Key())
		e.mu.Unlock()
	}
}

// SetDatabase records a database's observed reachability. It reports
// whether it changed.
func (e *Engine) SetDatabase(ctx context.Context, d state.Database) bool {
	e.mu.Lock()
	old := e.dbs[d.Name]
	changed := old == nil || old.Up != d.Up
	e.dbs[d.Name] = &d
	e.mu.Unlock()
	if !changed || !e.writeable {
		return changed
	}
	defer e.notify(nil)
	if err := e.Store.PutDatabase(context.WithoutCancel(ctx), &d); err != nil {
		e.Metrics.PersistFailed("database")
		e.Log.Error("saving a database's reachability failed", "database", d.Name, "err", err)
	}
	return changed
}

// record queues an event and writes the queue. Events that cannot be
// written stay queued (visible through PendingEvents) and are written by
// a later record or Flush; they are never dropped for a passing error.
func (e *Engine) record(ctx context.Context, ev state.Event) {
	e.init()
	if ev.Time.IsZero() {
		ev.Time = e.Now()
	}
	ev = e.scrubEvent(ev)
	e.evMu.Lock()
	e.pending = append(e.pending, ev)
	if n := len(e.pending) - maxPending; n > 0 {
		e.pending = e.pending[n:]
		e.dropped += n
	}
	e.evMu.Unlock()
	e.FlushEvents(ctx)
}

// scrubEvent keeps secrets out of an event: every text field goes through
// the redactor in force.
func (e *Engine) scrubEvent(ev state.Event) state.Event {
	if r := e.redact(); r != nil {
		ev.Reason, ev.Error, ev.Detail, ev.Version = r(ev.Reason), r(ev.Error), r(ev.Detail), r(ev.Version)
	}
	return ev
}

// FlushEvents writes the queued events. Concurrent callers are written
// together.
func (e *Engine) FlushEvents(ctx context.Context) error {
	if !e.writeable {
		return nil
	}
	e.flushing.Lock()
	defer e.flushing.Unlock()
	e.evMu.Lock()
	batch := e.pending
	e.evMu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	if err := e.Store.AppendEvent(context.WithoutCancel(ctx), batch...); err != nil {
		e.Metrics.EventsPending(len(batch))
		e.Log.Error("recording events failed; they are kept and retried", "pending", len(batch), "err", err)
		return err
	}
	e.evMu.Lock()
	// Events queued meanwhile stay; the written batch is the queue's head
	// (only record appends, and only this function removes).
	if len(e.pending) >= len(batch) {
		e.pending = e.pending[len(batch):]
	}
	n := len(e.pending)
	if e.lastEvent == nil {
		e.lastEvent = map[string]state.Event{}
	}
	for _, ev := range batch {
		if ev.Merchant != "" {
			e.lastEvent[ev.Merchant] = ev
		}
	}
	e.evMu.Unlock()
	e.Metrics.EventsPending(n)
	for i := range batch {
		e.notify(&batch[i])
	}
	return nil
}

// notify tells the Notify hook, if any.
func (e *Engine) notify(ev *state.Event) {
	if e.Notify != nil {
		e.Notify(ev)
	}
}

// LastEvents returns each merchant's newest event recorded by this engine
// (nil entries for merchants with none recorded since it started).
func (e *Engine) LastEvents() map[string]state.Event {
	e.evMu.Lock()
	defer e.evMu.Unlock()
	out := make(map[string]state.Event, len(e.lastEvent))
	for k, v := range e.lastEvent {
		out[k] = v
	}
	return out
}

// LoadLastEvents reads each merchant's newest event from the history (the
// last n events), for status.
func (e *Engine) LoadLastEvents(ctx context.Context, n int) {
	es, err := e.Store.Events(ctx, "", n)
	if err != nil {
		return
	}
	e.evMu.Lock()
	defer e.evMu.Unlock()
	if e.lastEvent == nil {
		e.lastEvent = map[string]state.Event{}
	}
	for _, ev := range es {
		if ev.Merchant != "" {
			e.lastEvent[ev.Merchant] = ev
		}
	}
}

// PendingEvents is the number of events waiting to be written, and the
// number dropped because too many were waiting.
func (e *Engine) PendingEvents() (pending, dropped int) {
	e.evMu.Lock()
	defer e.evMu.Unlock()
	return len(e.pending), e.dropped
}

func (e *Engine) redact() func(string) string {
	e.redactMu.RLock()
	defer e.redactMu.RUnlock()
	return e.redactFn
}

// SetRedactor sets the function that hides secrets in what the engine
// records: every event's texts go through it.
func (e *Engine) SetRedactor(f func(string) string) {
	e.redactMu.Lock()
	e.redactFn = f
	e.redactMu.Unlock()
}

// newReconcileID returns a short random id that ties one reconcile's log
// lines and events together.
func newReconcileID() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
