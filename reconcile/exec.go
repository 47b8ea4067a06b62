package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"steward/spec"
	"steward/state"
)

// Proc identifies a process: a pid is only trusted together with the start
// time it had when steward recorded it.
type Proc struct {
	PID       int
	StartTime uint64
}

// Launch is everything the runtime needs to start one merchant process.
type Launch struct {
	Merchant   string
	Argv       []string // Argv[0] absolute
	ReleaseDir string
	Env        []string // complete environment
	Port       int
	StopGrace  time.Duration
	// Quiet keeps a one-off command's output out of the merchant's log.
	Quiet bool
}

// Runtime is what the executor needs of the process runtime.
type Runtime interface {
	Start(ctx context.Context, l Launch) (Proc, error)
	// Stop ends p: SIGTERM to its group, SIGKILL after grace. It must never
	// signal a process whose start time differs from p's.
	Stop(ctx context.Context, p Proc, grace time.Duration) error
	Alive(p Proc) bool
	// Wait blocks until p exits (or ctx ends) and says how it ended.
	Wait(ctx context.Context, p Proc) (exitedAt time.Time, how string, err error)
	// PortOwner reports the process listening on port, and whether that
	// process is merchant's own (it runs in the merchant's working
	// directory), for adopting a process whose start was never recorded.
	PortOwner(port int, merchant string) (p Proc, mine, found bool)
	// Run runs a one-off command (a migration) the way the merchant runs:
	// its user, work dir and environment. Its output goes to the merchant's
	// log and is returned (the end of it) for the history.
	Run(ctx context.Context, l Launch, timeout time.Duration) (output string, err error)
}

// Release is an installed package version.
type Release struct {
	Version string
	Dir     string
	// Command returns argv (argv[0] absolute) for a merchant on a port.
	Command func(port int, merchant string) ([]string, error)
	// HealthHTTP is the manifest's health path; empty means a TCP check.
	HealthHTTP string
	// Migrate is the manifest's migrate command (argv[0] absolute), or nil.
	Migrate []string
	// Schema is the schema the release needs, or nil when it declares none.
	Schema *SchemaSpec
}

// Packages is what the executor needs of the package store.
type Packages interface {
	Install(ctx context.Context, pkg *spec.Package, version string) (*Release, error)
	// GC removes the installed releases of pkg that keep rejects.
	GC(ctx context.Context, pkg string, keep func(version string) bool) (removed []string, err error)
}

// Prober checks once whether a merchant answers on its port: an HTTP GET of
// path expecting status, or a TCP connect when path is empty.
type Prober interface {
	Probe(ctx context.Context, port int, path string, status int, timeout time.Duration) error
}

// Hooks receive progress; the CLI renders it. Methods may be called from
// several goroutines at once.
type Hooks interface {
	ActionStart(a Action)
	ActionDone(a Action, err error, took time.Duration)
}

// NopHooks ignores progress.
type NopHooks struct{}

func (NopHooks) ActionStart(Action)                      {}
func (NopHooks) ActionDone(Action, error, time.Duration) {}

// Executor carries out actions against the machine and records them.
type Executor struct {
	Runtime  Runtime
	Packages Packages
	Prober   Prober
	Store    state.Store
	// Databases, when set, manages merchant databases: creation, schema
	// versions, migration locks and backups.
	Databases Databases
	Hooks     Hooks
	Log       *slog.Logger
	Policy    RestartPolicy
	// Parallel bounds how many actions run at once during Apply.
	Parallel int
	// ReadyTimeout bounds the wait for a started process to answer
	// (the rollout's health deadline when zero).
	ReadyTimeout time.Duration
	Now          func() time.Time

	mu sync.Mutex
	st *state.State
	// stopping holds processes steward is ending on purpose, so that exit
	// watchers do not mistake them for crashes.
	stopping map[Proc]bool
	// Metrics, when set, records what the executor does.
	Metrics Metrics
	// OnStarted is called (without locks held) after a process started;
	// the daemon watches it for exits and probes its health.
	OnStarted func(s Started)
	// OnStopped is called after steward stopped a merchant's process.
	OnStopped func(id string)

	saveMu  sync.Mutex
	pending []state.Event
	// changes counts calls to Flush; saved is the count the last save
	// covered (group commit).
	changes, saved uint64
	rels           releaseCache
}

// Metrics is what the executor and daemon record; package metrics
// implements it with Prometheus.
type Metrics interface {
	ActionDone(kind string, took time.Duration, err error)
	ProcessExited(merchant string)
	SourceLoaded(revision string, err error)
}

// Started describes a process the executor started or adopted.
type Started struct {
	Merchant string
	Proc     Proc
	Port     int
	// HealthPath is the HTTP path to probe, or "" for a TCP check.
	HealthPath string
	Health     spec.Health
}

// ErrPortTaken is returned when a merchant's port is held by a foreign process.
var ErrPortTaken = errors.New("port taken by another process")

// Init loads state into the executor. It must be called before anything else.
func (x *Executor) Init(ctx context.Context) error {
	st, err := x.Store.Load(ctx)
	if err != nil {
		return err
	}
	x.mu.Lock()
	x.st = st
	x.stopping = map[Proc]bool{}
	x.mu.Unlock()
	if x.Hooks == nil {
		x.Hooks = NopHooks{}
	}
	if x.Log == nil {
		x.Log = slog.New(slog.DiscardHandler)
	}
	if x.Now == nil {
		x.Now = time.Now
	}
	if x.Policy == (RestartPolicy{}) {
		x.Policy = DefaultRestartPolicy
	}
	if x.Parallel <= 0 {
		x.Parallel = 8
	}
	return nil
}

// State returns a deep copy of the executor's current state.
func (x *Executor) State() *state.State {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.st.Clone()
}

// Observe checks every record against the machine and notes processes that
// died since they were recorded (which feeds the restart backoff). It
// returns the observation Diff needs.
func (x *Executor) Observe(ctx context.Context) Observed {
	x.mu.Lock()
	defer x.mu.Unlock()
	now := x.Now()
	o := Observe(x.st, aliveFunc(func(pid int, st uint64) bool { return x.Runtime.Alive(Proc{pid, st}) }), now)
	var events []state.Event
	for id, rec := range x.st.Merchants {
		if o.Running[id] || rec.PID == 0 || rec.Suspended {
			continue
		}
		pid := rec.PID
		loop := x.Policy.NoteExit(rec, time.Time{}, now)
		events = append(events, state.Event{Time: now, Merchant: id, Action: "exited", Reason: fmt.Sprintf("process %d found dead", pid),
			Result: "observed", PID: pid, Version: rec.Version})
		if loop {
			x.Log.Warn("merchant in crash loop", "merchant", id, "failures", rec.Failures, "next_attempt", rec.NextAttempt)
		}
	}
	x.pending = append(x.pending, events...)
	// Observe returned a view sharing x.st; hand Diff a snapshot instead.
	o.State = x.st.Clone()
	return o
}

type aliveFunc func(pid int, st uint64) bool

func (f aliveFunc) Alive(pid int, st uint64) bool { return f(pid, st) }

// ErrHalted is the result of version changes skipped because their
// rollout halted.
var ErrHalted = errors.New("rollout halted")

// Apply executes the plan's actions: deletes and stops first, then starts,
// creates and restarts, then version changes wave by wave (a wave starts
// when the one before it is done, and a halted rollout's remaining changes
// are skipped), at most Parallel at a time. It records every action with
// its reason and result and saves state as it goes. It returns the number
// of actions that failed or were skipped.
func (x *Executor) Apply(ctx context.Context, d Desired, p *Plan) (failed int) {
	return x.ApplyWith(ctx, d, p, x.Hooks)
}

// ApplyWith is Apply reporting progress to hooks instead of x.Hooks.
func (x *Executor) ApplyWith(ctx context.Context, d Desired, p *Plan, hooks Hooks) (failed int) {
	if hooks == nil {
		hooks = NopHooks{}
	}
	var first, rest []Action
	waves := map[int][]Action{}
	maxWave := -1
	for _, a := range p.Actions {
		switch {
		case a.Kind == Delete || a.Kind == Stop:
			first = append(first, a)
		case (a.Kind == Upgrade || a.Kind == Rollback) && a.Rollout != "":
			waves[a.Wave] = append(waves[a.Wave], a)
			maxWave = max(maxWave, a.Wave)
		default:
			rest = append(rest, a)
		}
	}
	batches := [][]Action{first, rest}
	for w := 0; w <= maxWave; w++ {
		batches = append(batches, waves[w])
	}
	var mu sync.Mutex
	for _, batch := range batches {
		sem := make(chan struct{}, x.Parallel)
		var wg sync.WaitGroup
		for _, a := range batch {
			if ctx.Err() != nil {
				break
			}
			if a.Rollout != "" && x.rolloutHalted(a.Rollout) {
				x.skip(a, p.Revision, hooks)
				mu.Lock()
				failed++
				mu.Unlock()
				continue
			}
			sem <- struct{}{}
			wg.Add(1)
			go func(a Action) {
				defer wg.Done()
				defer func() { <-sem }()
				if err := x.DoWith(ctx, d, a, p.Revision, hooks); err != nil {
					mu.Lock()
					failed++
					mu.Unlock()
				}
			}(a)
		}
		wg.Wait()
	}
	x.Flush(context.WithoutCancel(ctx))
	return failed
}

func (x *Executor) rolloutHalted(key string) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	ro := x.st.Rollouts[key]
	return ro != nil && ro.Halted
}

// skip records a version change that a halted rollout prevented.
func (x *Executor) skip(a Action, revision string, hooks Hooks) {
	hooks.ActionStart(a)
	x.mu.Lock()
	reason := ""
	if ro := x.st.Rollouts[a.Rollout]; ro != nil {
		reason = ro.Reason
	}
	x.mu.Unlock()
	err := fmt.Errorf("%w: %s", ErrHalted, reason)
	x.record(state.Event{Time: x.Now(), Merchant: a.Merchant, Action: string(a.Kind), Reason: a.Reason, Result: "skipped", Error: err.Error(), Revision: revision})
	hooks.ActionDone(a, err, 0)
}

// Do executes one action and records it.
func (x *Executor) Do(ctx context.Context, d Desired, a Action, revision string) error {
	return x.DoWith(ctx, d, a, revision, x.Hooks)
}

// DoWith is Do reporting progress to hooks.
func (x *Executor) DoWith(ctx context.Context, d Desired, a Action, revision string, hooks Hooks) error {
	start := x.Now()
	hooks.ActionStart(a)
	var m *spec.Merchant
	if d.Fleet != nil {
		m = d.Fleet.Merchants[a.Merchant]
	}
	var err error
	var version string
	switch a.Kind {
	case Hold:
		x.hold(a)
		hooks.ActionDone(a, nil, x.Now().Sub(start))
		return nil
	case Delete:
		err = x.remove(ctx, a.Merchant)
	case Stop:
		err = x.stop(ctx, a.Merchant, grace(m))
	case Create, Start:
		version, err = x.start(ctx, d, m, a, revision)
	case Restart:
		if err = x.stop(ctx, a.Merchant, grace(m)); err == nil {
			if a.Unhealthy && x.noteUnhealthy(a.Merchant) {
				break // backing off: the next start waits
			}
			version, err = x.start(ctx, d, m, a, revision)
		}
	case Upgrade, Rollback:
		version, err = x.upgrade(ctx, d, m, a, revision)
	default:
		err = fmt.Errorf("unknown action %q", a.Kind)
	}
	ev := state.Event{Time: x.Now(), Merchant: a.Merchant, Action: string(a.Kind), Reason: a.Reason, Result: "ok", Revision: revision, Version: version}
	x.mu.Lock()
	if rec := x.st.Merchants[a.Merchant]; rec != nil {
		ev.PID = rec.PID
		if err != nil {
			rec.LastError = err.Error()
		} else {
			rec.LastError = ""
		}
	}
	x.mu.Unlock()
	if err != nil {
		ev.Result, ev.Error = "error", err.Error()
		x.Log.Error("action failed", "merchant", a.Merchant, "action", a.Kind, "reason", a.Reason, "err", err)
	} else {
		x.Log.Info("action done", "merchant", a.Merchant, "action", a.Kind, "reason", a.Reason, "pid", ev.PID, "version", version)
	}
	x.record(ev)
	took := x.Now().Sub(start)
	hooks.ActionDone(a, err, took)
	if x.Metrics != nil {
		x.Metrics.ActionDone(string(a.Kind), took, err)
	}
	return err
}

func grace(m *spec.Merchant) time.Duration {
	if m == nil || m.StopGrace <= 0 {
		return spec.DefaultStopGrace
	}
	return m.StopGrace
}

// record queues an event and persists state and events.
func (x *Executor) record(ev state.Event) {
	x.mu.Lock()
	x.pending = append(x.pending, ev)
	x.mu.Unlock()
	x.Flush(context.Background())
}

// Flush saves state and pending events. Concurrent callers are committed
// together: a caller whose changes were already saved by a save that
// started after them returns at once, so a burst of N actions costs far
// fewer than N saves, and every change is on disk when Flush returns.
func (x *Executor) Flush(ctx context.Context) error {
	x.mu.Lock()
	x.changes++
	mine := x.changes
	x.mu.Unlock()
	x.saveMu.Lock()
	defer x.saveMu.Unlock()
	x.mu.Lock()
	if x.saved >= mine {
		x.mu.Unlock()
		return nil
	}
	snap := x.st.Clone()
	events := x.pending
	x.pending = nil
	covers := x.changes
	x.mu.Unlock()
	if len(events) > 0 {
		if err := x.Store.AppendEvent(ctx, events...); err != nil {
			x.Log.Error("recording events failed", "err", err)
		}
	}
	if err := x.Store.Save(ctx, snap); err != nil {
		x.Log.Error("saving state failed", "err", err)
		return err
	}
	x.mu.Lock()
	x.st.Serial = snap.Serial
	x.st.Lineage = snap.Lineage
	x.saved = covers
	x.mu.Unlock()
	return nil
}

func (x *Executor) hold(a Action) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if rec := x.st.Merchants[a.Merchant]; rec != nil && rec.PID == 0 && a.ForDatabase {
		rec.Phase = PhaseHeld
	}
}

// noteUnhealthy counts a kill for failed health checks like a crash, and
// reports whether the merchant must now wait before it starts again.
func (x *Executor) noteUnhealthy(id string) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	rec := x.st.Merchants[id]
	if rec == nil {
		return false
	}
	now := x.Now()
	x.Policy.NoteExit(rec, now, now)
	return rec.NextAttempt.After(now)
}

// IsStopping reports whether p is being stopped on purpose.
func (x *Executor) IsStopping(p Proc) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.stopping[p]
}

// stop ends the merchant's process, if it runs, and keeps its record.
func (x *Executor) stop(ctx context.Context, id string, grace time.Duration) error {
	x.mu.Lock()
	rec := x.st.Merchants[id]
	if rec == nil || rec.PID == 0 {
		x.mu.Unlock()
		return nil
	}
	p := Proc{rec.PID, rec.StartTime}
	x.stopping[p] = true
	x.mu.Unlock()
	defer func() {
		x.mu.Lock()
		delete(x.stopping, p)
		x.mu.Unlock()
	}()
	if x.Runtime.Alive(p) {
		if err := x.Runtime.Stop(ctx, p, grace); err != nil {
			return fmt.Errorf("stopping process %d: %w", p.PID, err)
		}
	}
	x.mu.Lock()
	rec.PID, rec.StartTime = 0, 0
	rec.Phase = PhaseStopped
	rec.Died = false
	rec.ExitedAt = x.Now()
	x.mu.Unlock()
	if x.OnStopped != nil {
		x.OnStopped(id)
	}
	return nil
}

func (x *Executor) remove(ctx context.Context, id string) error {
	x.mu.Lock()
	rec := x.st.Merchants[id]
	x.mu.Unlock()
	if rec == nil {
		return nil
	}
	if err := x.stop(ctx, id, spec.DefaultStopGrace); err != nil {
		return err
	}
	x.mu.Lock()
	delete(x.st.Merchants, id)
	x.mu.Unlock()
	return nil
}

// start installs the desired version and starts the merchant on its port,
// then waits for it to answer.
func (x *Executor) start(ctx context.Context, d Desired, m *spec.Merchant, a Action, revision string) (string, error) {
	if m == nil {
		return "", fmt.Errorf("merchant %s is not in the specs", a.Merchant)
	}
	port := 0
	if a.After != nil {
		port = a.After.Port
	}
	if port == 0 {
		return "", fmt.Errorf("no port for merchant %s", m.ID)
	}
	return m.Version, x.launch(ctx, d, m, m.Version, port, revision)
}

// launch starts version of m on port and records it.
func (x *Executor) launch(ctx context.Context, d Desired, m *spec.Merchant, version string, port int, revision string) error {
	pkg := d.Fleet.Packages[m.Package]
	if pkg == nil {
		return fmt.Errorf("package %q is not declared", m.Package)
	}
	rel, err := x.release(ctx, pkg, version)
	if err != nil {
		return fmt.Errorf("installing %s %s: %w", m.Package, version, err)
	}
	x.mu.Lock()
	rec := x.st.Merchants[m.ID]
	if rec == nil {
		rec = &state.Merchant{ID: m.ID}
		x.st.Merchants[m.ID] = rec
	}
	fromVersion := rec.Version
	// A start after the process died (not after steward stopped it) counts
	// as a restart, whatever the merchant was held for in between.
	died := rec.Died
	rec.Port = port
	x.mu.Unlock()

	var p Proc
	if owner, mine, found := x.Runtime.PortOwner(port, m.ID); found {
		if !mine {
			x.mu.Lock()
			rec.Phase = PhaseFailed
			x.mu.Unlock()
			return fmt.Errorf("%w: port %d is held by pid %d, which is not merchant %s's process; free the port or give %s another one", ErrPortTaken, port, owner.PID, m.ID, m.ID)
		}
		// A process of this merchant whose start was never recorded (steward
		// died between starting it and saving): adopt it instead of starting a
		// duplicate, unless it runs something else, in which case replace it.
		p = owner
		x.Log.Warn("adopting unrecorded process on the merchant's port", "merchant", m.ID, "pid", p.PID, "port", port)
	} else {
		if err := x.prepareSchema(ctx, d, m, rel, fromVersion, port, revision); err != nil {
			x.mu.Lock()
			rec.Phase = PhaseFailed
			x.mu.Unlock()
			return err
		}
		argv, err := rel.Command(port, m.ID)
		if err != nil {
			return err
		}
		p, err = x.Runtime.Start(ctx, Launch{Merchant: m.ID, Argv: argv, ReleaseDir: rel.Dir, Env: processEnv(d.Fleet, m, port), Port: port, StopGrace: m.StopGrace})
		if err != nil {
			x.mu.Lock()
			x.Policy.NoteExit(rec, time.Time{}, x.Now())
			x.mu.Unlock()
			return err
		}
	}
	now := x.Now()
	x.mu.Lock()
	if rec.Override != "" && rec.OverrideFor != m.Version {
		rec.Override, rec.OverrideFor = "", "" // the specs moved on
	}
	rec.Package, rec.Version, rec.PID, rec.StartTime = m.Package, version, p.PID, p.StartTime
	rec.Applied = Fingerprints(d.Fleet, m)
	rec.Phase, rec.StartedAt, rec.Revision = PhaseStarting, now, revision
	rec.NextAttempt = time.Time{}
	if died {
		rec.Restarts++
	}
	rec.Died = false
	x.mu.Unlock()
	if x.OnStarted != nil {
		x.OnStarted(Started{Merchant: m.ID, Proc: p, Port: port, HealthPath: healthPath(m, rel), Health: m.Health})
	}
	x.Flush(context.WithoutCancel(ctx))
	if err := x.waitReady(ctx, d, m, rel, p, port); err != nil {
		return err
	}
	x.mu.Lock()
	if rec.PID == p.PID {
		rec.Phase = PhaseRunning
		if rec.UpgradeFrom == "" {
			markGood(rec, version)
		}
	}
	x.mu.Unlock()
	return nil
}

// markGood records version as the merchant's newest good version.
func markGood(rec *state.Merchant, version string) {
	rec.GoodVersions = slices.DeleteFunc(rec.GoodVersions, func(v string) bool { return v == version })
	rec.GoodVersions = append(rec.GoodVersions, version)
	if n := len(rec.GoodVersions); n > 10 {
		rec.GoodVersions = rec.GoodVersions[n-10:]
	}
}

// waitReady polls the merchant's health until it answers, the process dies,
// or the deadline passes.
func (x *Executor) waitReady(ctx context.Context, d Desired, m *spec.Merchant, rel *Release, p Proc, port int) error {
	timeout := x.ReadyTimeout
	if timeout <= 0 {
		timeout = rolloutFor(d.Fleet, m).HealthDeadline
	}
	if timeout <= 0 {
		timeout = time.Minute
	}
	path := healthPath(m, rel)
	status := m.Health.Status
	if status == 0 {
		status = 200
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	delay := 5 * time.Millisecond
	var last error
	for {
		if !x.Runtime.Alive(p) {
			if last == nil {
				last = errors.New("no answer yet")
			}
			return fmt.Errorf("process %d exited before it answered on port %d", p.PID, port)
		}
		probeTimeout := m.Health.Timeout
		if probeTimeout <= 0 {
			probeTimeout = 2 * time.Second
		}
		if last = x.Prober.Probe(ctx, port, path, status, probeTimeout); last == nil {
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

// healthPath is the HTTP path a merchant is probed on: its spec's, else its
// package manifest's; "" means a TCP check.
func healthPath(m *spec.Merchant, rel *Release) string {
	switch {
	case m.Health.TCP:
		return ""
	case m.Health.HTTP != "":
		return m.Health.HTTP
	case rel != nil:
		return rel.HealthHTTP
	}
	return ""
}

func rolloutFor(fl *spec.Fleet, m *spec.Merchant) spec.Rollout {
	if pkg := fl.Packages[m.Package]; pkg != nil && pkg.Rollout != nil {
		return *pkg.Rollout
	}
	return fl.Rollout
}

// upgrade moves a merchant to a.After.Version behind a health gate:
// install (nothing is stopped if that fails), migrate, stop the old
// process, start the new version on the same port, and require it to be
// healthy within the rollout's health_deadline and still healthy after
// min_healthy_time. If the gate fails the new process is stopped, the
// version is marked bad for this merchant and the previous version is
// started again. An upgrade interrupted by steward's death (UpgradeFrom is
// set) resumes at the gate.
func (x *Executor) upgrade(ctx context.Context, d Desired, m *spec.Merchant, a Action, revision string) (string, error) {
	if m == nil {
		return "", fmt.Errorf("merchant %s is not in the specs", a.Merchant)
	}
	target := m.Version
	if a.After != nil && a.After.Version != "" {
		target = a.After.Version
	}
	pkg := d.Fleet.Packages[m.Package]
	if pkg == nil {
		return "", fmt.Errorf("package %q is not declared", m.Package)
	}
	rel, err := x.release(ctx, pkg, target)
	if err != nil {
		return "", fmt.Errorf("installing %s %s (nothing was stopped): %w", m.Package, target, err)
	}
	r := rolloutSettings(d.Fleet, m.Package)
	key := state.RolloutKey(m.Package, target)
	x.mu.Lock()
	rec := x.st.Merchants[m.ID]
	if rec == nil {
		x.mu.Unlock()
		return "", fmt.Errorf("merchant %s has no record to upgrade", m.ID)
	}
	from, port := rec.Version, rec.Port
	resuming := rec.UpgradeFrom != "" && rec.Version == target
	if resuming {
		from = rec.UpgradeFrom
	}
	if x.st.Rollouts == nil {
		x.st.Rollouts = map[string]*state.Rollout{}
	}
	// Version changes outside a rollout (steward rollback) are not counted
	// in one.
	ro := &state.Rollout{}
	if a.Rollout != "" {
		if x.st.Rollouts[key] == nil {
			x.st.Rollouts[key] = &state.Rollout{Package: m.Package, Version: target, StartedAt: x.Now()}
		}
		ro = x.st.Rollouts[key]
	}
	cur := Proc{rec.PID, rec.StartTime}
	x.mu.Unlock()
	if a.After != nil && a.After.Port != 0 {
		port = a.After.Port
	}

	var fromRel *Release
	if from != "" && from != target {
		fromRel, _ = x.release(ctx, pkg, from)
	}
	stopped := false
	gateErr := func() error {
		if resuming && cur.PID != 0 && x.Runtime.Alive(cur) {
			x.Log.Info("resuming the health gate of an interrupted upgrade", "merchant", m.ID, "from", from, "to", target, "pid", cur.PID)
			if err := x.waitReady(ctx, d, m, rel, cur, port); err != nil {
				return err
			}
			return x.holdHealthy(ctx, m, rel, cur, port, r.MinHealthyTime)
		}
		downFirst := false
		if !resuming {
			var err error
			if downFirst, err = x.schemaBeforeChange(ctx, d, m, rel, fromRel, from, port, revision); err != nil {
				return err
			}
		}
		if err := x.stop(ctx, m.ID, grace(m)); err != nil {
			return err
		}
		stopped = true
		if downFirst {
			if err := x.downgrade(ctx, d, m, fromRel, rel.Schema.Version, from, port, revision); err != nil {
				return err
			}
		}
		x.mu.Lock()
		rec.UpgradeFrom = from
		x.mu.Unlock()
		if err := x.launch(ctx, d, m, target, port, revision); err != nil {
			return err
		}
		x.mu.Lock()
		p := Proc{rec.PID, rec.StartTime}
		x.mu.Unlock()
		return x.holdHealthy(ctx, m, rel, p, port, r.MinHealthyTime)
	}()

	x.mu.Lock()
	if gateErr == nil {
		rec.UpgradeFrom = ""
		rec.Phase = PhaseRunning
		markGood(rec, target)
		if !contains(ro.Succeeded, m.ID) {
			ro.Succeeded = append(ro.Succeeded, m.ID)
		}
		x.mu.Unlock()
		x.Flush(context.WithoutCancel(ctx))
		return target, nil
	}
	if !contains(rec.BadVersions, target) {
		rec.BadVersions = append(rec.BadVersions, target)
	}
	if !contains(ro.Failed, m.ID) {
		ro.Failed = append(ro.Failed, m.ID)
	}
	if !ro.Halted {
		switch {
		case a.Wave == 0 && a.Rollout != "":
			ro.Halted, ro.Reason = true, fmt.Sprintf("canary %s failed: %v", m.ID, gateErr)
		case len(ro.Failed) >= HaltAfter(r):
			ro.Halted, ro.Reason = true, fmt.Sprintf("%d merchants failed (max_failures %d); last: %s: %v", len(ro.Failed), r.MaxFailures, m.ID, gateErr)
		}
		if ro.Halted {
			ro.HaltedAt = x.Now()
			x.Log.Error("rollout halted", "package", m.Package, "version", target, "reason", ro.Reason)
		}
	}
	x.mu.Unlock()
	x.Flush(context.WithoutCancel(ctx))

	if !stopped {
		// Refused or failed before anything stopped (install, migration,
		// schema): the old process still runs.
		return from, fmt.Errorf("%s not started, %s still runs: %w", target, from, gateErr)
	}
	// Return to the last good version, undoing the migration first.
	bg := context.WithoutCancel(ctx)
	x.stop(bg, m.ID, grace(m))
	x.mu.Lock()
	rec.UpgradeFrom = ""
	x.mu.Unlock()
	if from == "" || from == target {
		return target, fmt.Errorf("%s failed its health gate: %w", target, gateErr)
	}
	if err := x.schemaForReturn(bg, d, m, rel, fromRel, target, port, revision); err != nil {
		x.mu.Lock()
		rec.Phase, rec.LastError = PhaseFailed, err.Error()
		x.mu.Unlock()
		x.Flush(bg)
		return target, fmt.Errorf("%s failed its health gate (%v), and %s cannot start again: %w", target, gateErr, from, err)
	}
	if err := x.launch(bg, d, m, from, port, rec.Revision); err != nil {
		return from, fmt.Errorf("%s failed its health gate (%v), and starting %s again failed too: %w", target, gateErr, from, err)
	}
	return from, fmt.Errorf("%s failed its health gate, rolled back to %s: %w", target, from, gateErr)
}

// schemaBeforeChange prepares the database before the running process is
// stopped for a change to rel: it migrates forward (after a backup), or,
// when rel needs an older schema than the database has, reports that a
// down migration must run once the newer process is stopped. A down
// migration that the newer release does not declare is refused here, with
// the backup to restore named, before anything stops.
func (x *Executor) schemaBeforeChange(ctx context.Context, d Desired, m *spec.Merchant, rel, fromRel *Release, from string, port int, revision string) (downFirst bool, err error) {
	if x.Databases == nil || m.Database == "" || rel.Schema == nil {
		if len(rel.Migrate) > 0 {
			out, err := x.Runtime.Run(ctx, Launch{Merchant: m.ID, Argv: rel.Migrate, ReleaseDir: rel.Dir, Env: processEnv(d.Fleet, m, port), Port: port}, 5*time.Minute)
			if err != nil {
				return false, fmt.Errorf("migrate failed (the old version was not stopped): %w: %s", err, tail(out, 400))
			}
		}
		return false, nil
	}
	server, _ := databaseURL(d.Fleet, m)
	if _, err := x.Databases.Ensure(ctx, server, m.DBName); err != nil {
		return false, fmt.Errorf("creating database %s: %w", m.DBName, err)
	}
	cur, err := x.readSchema(ctx, d, m, rel, port)
	if err != nil {
		return false, fmt.Errorf("reading the schema version: %w", err)
	}
	need := rel.Schema.Version
	switch {
	case cur < need:
		return false, x.migrate(ctx, d, m, rel, need, from, cur, port, revision)
	case cur > need:
		if fromRel == nil || fromRel.Schema == nil || fromRel.Schema.Down == nil {
			return false, x.noDownError(m, rel.Version, need, cur, from)
		}
		return true, nil
	}
	return false, nil
}

// downgrade migrates m's database down to schema to with newer's down
// command.
func (x *Executor) downgrade(ctx context.Context, d Desired, m *spec.Merchant, newer *Release, to int64, from string, port int, revision string) error {
	cur, err := x.readSchema(ctx, d, m, newer, port)
	if err != nil {
		return fmt.Errorf("reading the schema version: %w", err)
	}
	if cur <= to {
		return nil
	}
	return x.migrate(ctx, d, m, newer, to, from, cur, port, revision)
}

// schemaForReturn undoes the failed release's migration so that the
// previous version can start again: with the failed release's down
// migration, or not at all, naming the backup to restore.
func (x *Executor) schemaForReturn(ctx context.Context, d Desired, m *spec.Merchant, failed, prev *Release, target string, port int, revision string) error {
	if x.Databases == nil || m.Database == "" || prev == nil || prev.Schema == nil || failed.Schema == nil {
		return nil
	}
	cur, err := x.readSchema(ctx, d, m, failed, port)
	if err != nil {
		return fmt.Errorf("reading the schema version: %w", err)
	}
	if cur <= prev.Schema.Version {
		return nil
	}
	if failed.Schema.Down == nil {
		return x.noDownError(m, prev.Version, prev.Schema.Version, cur, target)
	}
	return x.migrate(ctx, d, m, failed, prev.Schema.Version, target, cur, port, revision)
}

// noDownError explains why version cannot run on the database and which
// backup brings it back.
func (x *Executor) noDownError(m *spec.Merchant, version string, need, cur int64, newer string) error {
	msg := fmt.Sprintf("%s %s needs schema %d, the database %s is at %d, and %s declares no down migration", m.Package, version, need, m.DBName, cur, newer)
	if b, ok := x.lastBackup(m.ID, version); ok {
		msg += fmt.Sprintf("; restore the backup %s (taken on %s at schema %d) with: steward rollback %s -to %s -restore-backup", b.Path, b.Version, b.Schema, m.ID, version)
	} else {
		msg += "; no backup of it is on record: restore the database by hand, then pin the version"
	}
	return fmt.Errorf("%w: %s", ErrSchema, msg)
}

// holdHealthy requires p to stay alive and healthy for d.
func (x *Executor) holdHealthy(ctx context.Context, m *spec.Merchant, rel *Release, p Proc, port int, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	path := healthPath(m, rel)
	status := m.Health.Status
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
			if !x.Runtime.Alive(p) {
				return fmt.Errorf("process %d exited within min_healthy_time (%s)", p.PID, d)
			}
			if err := x.Prober.Probe(ctx, port, path, status, max(m.Health.Timeout, time.Second)); err != nil {
				return fmt.Errorf("unhealthy within min_healthy_time (%s): %v", d, err)
			}
		}
	}
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// processEnv is the complete environment of a merchant's process.
func processEnv(fl *spec.Fleet, m *spec.Merchant, port int) []string {
	env := []string{fmt.Sprintf("PORT=%d", port), "MERCHANT=" + m.ID}
	if db := fl.Databases[m.Database]; db != nil {
		env = append(env, "DATABASE_URL="+DatabaseURL(db.DSN.Reveal(), m.DBName))
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

// DatabaseURL returns dsn with its database name replaced by dbName. Both
// URL DSNs (postgres://...) and key=value DSNs are understood.
func DatabaseURL(dsn, dbName string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return dsn
		}
		u.Path = "/" + dbName
		u.RawPath = ""
		return u.String()
	}
	var parts []string
	found := false
	for _, f := range strings.Fields(dsn) {
		if strings.HasPrefix(f, "dbname=") {
			f, found = "dbname="+dbName, true
		}
		parts = append(parts, f)
	}
	if !found {
		parts = append(parts, "dbname="+dbName)
	}
	return strings.Join(parts, " ")
}

// SetOverride pins merchant id to version while the specs ask for specVersion
// ("steward rollback"); an empty version removes the pin.
func (x *Executor) SetOverride(id, version, specVersion string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if rec := x.st.Merchants[id]; rec != nil {
		rec.Override, rec.OverrideFor = version, specVersion
		if version == "" {
			rec.OverrideFor = ""
		}
	}
}

// ErrUnknownMerchant is returned for a merchant steward has no record of.
var ErrUnknownMerchant = errors.New("no record of that merchant")

// SetSuspended marks merchant id suspended or not, and records the event.
func (x *Executor) SetSuspended(id string, suspend bool) error {
	x.mu.Lock()
	rec := x.st.Merchants[id]
	if rec == nil {
		x.mu.Unlock()
		return fmt.Errorf("%w: %s; only merchants steward has started can be suspended or resumed", ErrUnknownMerchant, id)
	}
	if rec.Suspended == suspend {
		x.mu.Unlock()
		return nil
	}
	rec.Suspended = suspend
	action := "resume"
	if suspend {
		action = "suspend"
	}
	x.pending = append(x.pending, state.Event{Time: x.Now(), Merchant: id, Action: action, Reason: action + " requested", Result: "ok", PID: rec.PID, Version: rec.Version})
	x.mu.Unlock()
	return nil
}

// CollectGarbage removes unpacked releases nothing needs any more: it keeps
// every version a merchant runs, is upgrading from, is pinned to by a
// rollback, or wants in the specs, and each merchant's last two good ones.
func (x *Executor) CollectGarbage(ctx context.Context, d Desired) {
	keep := map[string]map[string]bool{}
	add := func(pkg, v string) {
		if pkg == "" || v == "" {
			return
		}
		if keep[pkg] == nil {
			keep[pkg] = map[string]bool{}
		}
		keep[pkg][v] = true
	}
	x.mu.Lock()
	for _, rec := range x.st.Merchants {
		add(rec.Package, rec.Version)
		add(rec.Package, rec.UpgradeFrom)
		add(rec.Package, rec.Override)
		good := rec.GoodVersions
		for i := max(len(good)-2, 0); i < len(good); i++ {
			add(rec.Package, good[i])
		}
	}
	x.mu.Unlock()
	if d.Fleet != nil {
		for _, m := range d.Fleet.Merchants {
			add(m.Package, m.Version)
		}
		for name := range d.Fleet.Packages {
			if keep[name] == nil {
				keep[name] = map[string]bool{}
			}
		}
	}
	for pkg, versions := range keep {
		removed, err := x.Packages.GC(ctx, pkg, func(v string) bool { return versions[v] })
		if err != nil {
			x.Log.Warn("removing old releases failed", "package", pkg, "err", err)
			continue
		}
		if len(removed) > 0 {
			x.Log.Info("removed old releases", "package", pkg, "versions", removed)
		}
	}
}
