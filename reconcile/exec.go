package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
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
}

// Release is an installed package version.
type Release struct {
	Dir string
	// Command returns argv (argv[0] absolute) for a merchant on a port.
	Command func(port int, merchant string) ([]string, error)
	// HealthHTTP is the manifest's health path; empty means a TCP check.
	HealthHTTP string
}

// Packages is what the executor needs of the package store.
type Packages interface {
	Install(ctx context.Context, pkg *spec.Package, version string) (*Release, error)
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
	Hooks    Hooks
	Log      *slog.Logger
	Policy   RestartPolicy
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
	// OnStarted is called (without locks held) after a process started;
	// the daemon watches it for exits.
	OnStarted func(id string, p Proc)

	saveMu  sync.Mutex
	pending []state.Event
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

// Apply executes the plan's actions: deletes and stops first, then the
// others, at most Parallel at a time. It records every action with its
// reason and result and saves state as it goes. It returns the number of
// actions that failed.
func (x *Executor) Apply(ctx context.Context, d Desired, p *Plan) (failed int) {
	var first, rest []Action
	for _, a := range p.Actions {
		if a.Kind == Delete || a.Kind == Stop {
			first = append(first, a)
		} else {
			rest = append(rest, a)
		}
	}
	var mu sync.Mutex
	for _, batch := range [][]Action{first, rest} {
		sem := make(chan struct{}, x.Parallel)
		var wg sync.WaitGroup
		for _, a := range batch {
			if ctx.Err() != nil {
				break
			}
			sem <- struct{}{}
			wg.Add(1)
			go func(a Action) {
				defer wg.Done()
				defer func() { <-sem }()
				if err := x.Do(ctx, d, a, p.Revision); err != nil {
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

// Do executes one action and records it.
func (x *Executor) Do(ctx context.Context, d Desired, a Action, revision string) error {
	start := x.Now()
	x.Hooks.ActionStart(a)
	var m *spec.Merchant
	if d.Fleet != nil {
		m = d.Fleet.Merchants[a.Merchant]
	}
	var err error
	var version string
	switch a.Kind {
	case Hold:
		x.hold(a)
		x.Hooks.ActionDone(a, nil, x.Now().Sub(start))
		return nil
	case Delete:
		err = x.remove(ctx, a.Merchant)
	case Stop:
		err = x.stop(ctx, a.Merchant, grace(m))
	case Create, Start:
		version, err = x.start(ctx, d, m, a, revision)
	case Restart:
		if err = x.stop(ctx, a.Merchant, grace(m)); err == nil {
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
	x.Hooks.ActionDone(a, err, x.Now().Sub(start))
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

// Flush saves state and pending events. Concurrent callers coalesce: a
// caller that finds a save in progress waits for it and then saves what
// is left, so every change is on disk when Flush returns.
func (x *Executor) Flush(ctx context.Context) error {
	x.saveMu.Lock()
	defer x.saveMu.Unlock()
	x.mu.Lock()
	snap := x.st.Clone()
	events := x.pending
	x.pending = nil
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
	x.mu.Unlock()
	return nil
}

func (x *Executor) hold(a Action) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if rec := x.st.Merchants[a.Merchant]; rec != nil && rec.PID == 0 && strings.Contains(a.Reason, "database") {
		rec.Phase = PhaseHeld
	}
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
	rec.ExitedAt = x.Now()
	x.mu.Unlock()
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
	rel, err := x.Packages.Install(ctx, pkg, version)
	if err != nil {
		return fmt.Errorf("installing %s %s: %w", m.Package, version, err)
	}
	x.mu.Lock()
	rec := x.st.Merchants[m.ID]
	if rec == nil {
		rec = &state.Merchant{ID: m.ID}
		x.st.Merchants[m.ID] = rec
	}
	// A start after the process died (not after steward stopped it) counts
	// as a restart.
	died := rec.Phase == PhaseExited || rec.Phase == PhaseCrashLoop || rec.Phase == PhaseFailed
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
	rec.Package, rec.Version, rec.PID, rec.StartTime = m.Package, version, p.PID, p.StartTime
	rec.Applied = Fingerprints(d.Fleet, m)
	rec.Phase, rec.StartedAt, rec.Revision = PhaseStarting, now, revision
	rec.NextAttempt = time.Time{}
	if died {
		rec.Restarts++
	}
	x.mu.Unlock()
	if x.OnStarted != nil {
		x.OnStarted(m.ID, p)
	}
	x.Flush(context.WithoutCancel(ctx))
	if err := x.waitReady(ctx, d, m, rel, p, port); err != nil {
		return err
	}
	x.mu.Lock()
	if rec.PID == p.PID {
		rec.Phase = PhaseRunning
		if !contains(rec.GoodVersions, version) {
			rec.GoodVersions = append(rec.GoodVersions, version)
		}
	}
	x.mu.Unlock()
	return nil
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
	path := m.Health.HTTP
	if path == "" && !m.Health.TCP {
		path = rel.HealthHTTP
	}
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
		delay = min(delay*2, 200*time.Millisecond)
	}
}

func rolloutFor(fl *spec.Fleet, m *spec.Merchant) spec.Rollout {
	if pkg := fl.Packages[m.Package]; pkg != nil && pkg.Rollout != nil {
		return *pkg.Rollout
	}
	return fl.Rollout
}

// upgrade moves a merchant to the desired version: the new release is
// installed before anything is stopped; if the new version does not come up
// healthy, the old version is started again and the new one marked bad.
func (x *Executor) upgrade(ctx context.Context, d Desired, m *spec.Merchant, a Action, revision string) (string, error) {
	if m == nil {
		return "", fmt.Errorf("merchant %s is not in the specs", a.Merchant)
	}
	pkg := d.Fleet.Packages[m.Package]
	if pkg == nil {
		return "", fmt.Errorf("package %q is not declared", m.Package)
	}
	if _, err := x.Packages.Install(ctx, pkg, m.Version); err != nil {
		return "", fmt.Errorf("installing %s %s (nothing was stopped): %w", m.Package, m.Version, err)
	}
	x.mu.Lock()
	rec := x.st.Merchants[m.ID]
	old, port := rec.Version, rec.Port
	x.mu.Unlock()
	if a.After != nil && a.After.Port != 0 {
		port = a.After.Port
	}
	if err := x.stop(ctx, m.ID, grace(m)); err != nil {
		return "", err
	}
	err := x.launch(ctx, d, m, m.Version, port, revision)
	if err == nil {
		return m.Version, nil
	}
	// Roll back to the last good version.
	x.stop(context.WithoutCancel(ctx), m.ID, grace(m))
	x.mu.Lock()
	if !contains(rec.BadVersions, m.Version) {
		rec.BadVersions = append(rec.BadVersions, m.Version)
	}
	x.mu.Unlock()
	if old == "" {
		return m.Version, err
	}
	if rerr := x.launch(context.WithoutCancel(ctx), d, m, old, port, rec.Revision); rerr != nil {
		return old, fmt.Errorf("%s failed (%v) and rolling back to %s failed too: %w", m.Version, err, old, rerr)
	}
	return old, fmt.Errorf("%s failed, rolled back to %s: %w", m.Version, old, err)
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
