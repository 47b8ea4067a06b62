package engine

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"steward/dbadmin"
	"steward/pkgstore"
	"steward/reconcile"
	"steward/runtime"
	"steward/spec"
	"steward/state"
)

// The engine's dependencies, faked narrowly: processes are entries in a
// table, releases are parsed manifests, a database is a schema number.
// The store is the real file store (in a temporary directory), wrapped
// where a test needs it to fail.

// fakeProc is one process of the fake runtime.
type fakeProc struct {
	spec    runtime.Spec
	version string
	port    int
	alive   bool
	exited  chan struct{}
}

// fakeRuntime runs "processes" that are table entries.
type fakeRuntime struct {
	mu      sync.Mutex
	nextPID int
	procs   map[int]*fakeProc
	starts  []string // "merchant version port"
	stops   []time.Duration
	runs    []string // one-off commands, joined
	unknown map[int]bool
	// foreign maps a port to a pid that holds it and is not a merchant's.
	foreign map[int]int
	// startErr fails every start.
	startErr error
	// schema is the fake databases' schema versions, by merchant.
	schema map[string]int64
}

func newFakeRuntime() *fakeRuntime {
	return &fakeRuntime{nextPID: 1000, procs: map[int]*fakeProc{}, unknown: map[int]bool{}, foreign: map[int]int{}, schema: map[string]int64{}}
}

func (f *fakeRuntime) Start(ctx context.Context, s runtime.Spec) (runtime.Proc, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.startErr != nil {
		return runtime.Proc{}, f.startErr
	}
	f.nextPID++
	port, version := argPort(s.Argv), filepath.Base(s.ReleaseDir)
	f.procs[f.nextPID] = &fakeProc{spec: s, version: version, port: port, alive: true, exited: make(chan struct{})}
	f.starts = append(f.starts, fmt.Sprintf("%s %s %d", s.Merchant, version, port))
	return runtime.Proc{PID: f.nextPID, StartTime: 1}, nil
}

// argPort reads --port=N from argv.
func argPort(argv []string) int {
	for _, a := range argv {
		var p int
		if _, err := fmt.Sscanf(a, "--port=%d", &p); err == nil {
			return p
		}
	}
	return 0
}

func (f *fakeRuntime) Check(p runtime.Proc) (runtime.Liveness, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.unknown[p.PID] {
		return runtime.Unknown, errors.New("too many open files")
	}
	if pr := f.procs[p.PID]; pr != nil && pr.alive && p.StartTime == 1 {
		return runtime.Alive, nil
	}
	return runtime.Dead, nil
}

func (f *fakeRuntime) Stop(ctx context.Context, p runtime.Proc, grace time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stops = append(f.stops, grace)
	if pr := f.procs[p.PID]; pr != nil && pr.alive {
		pr.alive = false
		close(pr.exited)
	}
	return nil
}

// kill ends pid as a crash would.
func (f *fakeRuntime) kill(pid int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if pr := f.procs[pid]; pr != nil && pr.alive {
		pr.alive = false
		close(pr.exited)
	}
}

func (f *fakeRuntime) Wait(ctx context.Context, p runtime.Proc) (runtime.ExitStatus, error) {
	f.mu.Lock()
	pr := f.procs[p.PID]
	f.mu.Unlock()
	if pr == nil {
		return runtime.ExitStatus{Time: time.Now()}, nil
	}
	select {
	case <-pr.exited:
		return runtime.ExitStatus{Known: true, Signal: 9, Code: -1}, nil
	case <-ctx.Done():
		return runtime.ExitStatus{}, ctx.Err()
	}
}

func (f *fakeRuntime) RunsFrom(runtime.Proc, string) bool { return true }

func (f *fakeRuntime) PortOwner(port int, workDir string) (runtime.Proc, bool, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if pid, ok := f.foreign[port]; ok {
		return runtime.Proc{PID: pid, StartTime: 9}, false, true, nil
	}
	return runtime.Proc{}, false, false, nil
}

func (f *fakeRuntime) PortFree(port int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.foreign[port]; ok {
		return false
	}
	for _, p := range f.procs {
		if p.alive && p.port == port {
			return false
		}
	}
	return true
}

// RunOnce runs the fake app's commands: "migrate up" sets the database to
// the release's schema, "migrate down N" to N, "schema" prints it.
func (f *fakeRuntime) RunOnce(ctx context.Context, s runtime.Spec, timeout time.Duration, quiet bool) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	args := strings.Join(s.Argv[1:], " ")
	f.runs = append(f.runs, s.Merchant+" "+filepath.Base(s.ReleaseDir)+" "+args)
	switch {
	case args == "migrate up":
		f.schema[s.Merchant] = schemaOf(filepath.Base(s.ReleaseDir))
	case strings.HasPrefix(args, "migrate down "):
		var n int64
		fmt.Sscanf(args, "migrate down %d", &n)
		f.schema[s.Merchant] = n
	case args == "schema":
		return fmt.Sprint(f.schema[s.Merchant]), nil
	}
	return "ok DATABASE_URL=postgres://u:" + testPassword + "@db/x", nil
}

func (f *fakeRuntime) Preflight(s runtime.Spec) error {
	for _, e := range s.Env {
		if strings.ContainsRune(e, 0) {
			return fmt.Errorf("%w: an environment value holds a NUL byte", runtime.ErrPreflight)
		}
	}
	return nil
}

// alive lists the merchant's live processes as "version:port".
func (f *fakeRuntime) alive(merchant string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for pid := 1001; pid <= f.nextPID; pid++ {
		if p := f.procs[pid]; p.alive && p.spec.Merchant == merchant {
			out = append(out, fmt.Sprintf("%s:%d", p.version, p.port))
		}
	}
	return out
}

// schemaOf is the schema a fake release needs: 1.0.0 → 1, 1.1.0 → 2, ...
func schemaOf(version string) int64 {
	var a, b, c int64
	fmt.Sscanf(version, "%d.%d.%d", &a, &b, &c)
	return b + 1
}

const testPassword = "s3cret-pw"

// fakePackages serves releases whose manifests are real, parsed.
type fakePackages struct {
	mu       sync.Mutex
	dir      string
	bad      map[string]error // version → install error
	installs []string
}

func (p *fakePackages) release(version string) (*pkgstore.Release, error) {
	src := fmt.Sprintf(`command = ["bin/app", "--port=${port}"]
health { http = "/health" }
schema {
  version = %d
  migrate = ["bin/app", "migrate", "up"]
  down    = ["bin/app", "migrate", "down", "${to}"]
  command = ["bin/app", "schema"]
}
`, schemaOf(version))
	m, diags := pkgstore.ParseManifest([]byte(src), "package.hcl")
	if diags.HasErrors() {
		return nil, diags
	}
	return &pkgstore.Release{Name: "invoicing", Version: version, Dir: filepath.Join(p.dir, version), Manifest: m}, nil
}

func (p *fakePackages) Install(ctx context.Context, source, name, version string) (*pkgstore.Release, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.bad[version]; err != nil {
		return nil, err
	}
	p.installs = append(p.installs, version)
	return p.release(version)
}

func (p *fakePackages) Get(name, version string) (*pkgstore.Release, error) {
	return p.release(version)
}

func (p *fakePackages) Peek(ctx context.Context, source, name, version string) (*pkgstore.Manifest, error) {
	r, err := p.release(version)
	if err != nil {
		return nil, err
	}
	return r.Manifest, nil
}

func (p *fakePackages) GC(ctx context.Context, name string, keep func(string) bool) ([]string, error) {
	return nil, nil
}

// fakeProber says a process is healthy unless its version is in sick.
type fakeProber struct {
	rt   *fakeRuntime
	mu   sync.Mutex
	sick map[string]bool
}

func (p *fakeProber) Probe(ctx context.Context, port int, path string, status int, timeout time.Duration) error {
	p.rt.mu.Lock()
	defer p.rt.mu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pr := range p.rt.procs {
		if pr.alive && pr.port == port {
			if p.sick[pr.version] {
				return errors.New("HTTP 500")
			}
			return nil
		}
	}
	return errors.New("connection refused")
}

// fakeDatabases keeps no data: the schema lives in the fake runtime, as
// the fake app's commands change it.
type fakeDatabases struct{ rt *fakeRuntime }

func (fakeDatabases) Ensure(ctx context.Context, serverDSN, dbName string) (bool, error) {
	return false, nil
}
func (fakeDatabases) SchemaVersion(ctx context.Context, url, query string) (int64, error) {
	return 0, errors.New("the fake reads the schema with the release's command")
}
func (fakeDatabases) Lock(ctx context.Context, url string) (func() error, error) {
	return func() error { return nil }, nil
}
func (fakeDatabases) Dump(ctx context.Context, url string, b dbadmin.Backup, keep int) (dbadmin.Backup, error) {
	return b, nil
}
func (fakeDatabases) Restore(ctx context.Context, url string, b dbadmin.Backup) error { return nil }
func (fakeDatabases) Backups(merchant string) ([]dbadmin.Backup, error)               { return nil, nil }
func (fakeDatabases) Drop(ctx context.Context, serverDSN, dbName string) error        { return nil }
func (fakeDatabases) Exists(ctx context.Context, serverDSN, dbName string) (bool, error) {
	return true, nil
}

type fakePaths struct{ dir string }

func (p fakePaths) WorkDir(id string) string { return filepath.Join(p.dir, id, "work") }
func (p fakePaths) LogDir(id string) string  { return filepath.Join(p.dir, id, "logs") }

// countingMetrics counts what the engine reports.
type countingMetrics struct {
	mu      sync.Mutex
	persist int
	pending int
	exits   int
}

func (m *countingMetrics) ActionDone(string, time.Duration, error) {}
func (m *countingMetrics) ProcessExited(string)                    { m.mu.Lock(); m.exits++; m.mu.Unlock() }
func (m *countingMetrics) Unhealthy(string)                        {}
func (m *countingMetrics) SourceLoaded(string, error)              {}
func (m *countingMetrics) PersistFailed(string)                    { m.mu.Lock(); m.persist++; m.mu.Unlock() }
func (m *countingMetrics) EventsPending(n int)                     { m.mu.Lock(); m.pending = n; m.mu.Unlock() }

// failingStore wraps a store and fails what a test asks for.
type failingStore struct {
	state.Store
	mu         sync.Mutex
	failPuts   int // fail the next n merchant writes
	failEvents int // fail the next n event appends
}

func (s *failingStore) PutMerchant(ctx context.Context, r *reconcile.Record) error {
	s.mu.Lock()
	if s.failPuts > 0 {
		s.failPuts--
		s.mu.Unlock()
		return errors.New("no space left on device")
	}
	s.mu.Unlock()
	return s.Store.PutMerchant(ctx, r)
}

func (s *failingStore) AppendEvent(ctx context.Context, events ...state.Event) error {
	s.mu.Lock()
	if s.failEvents > 0 {
		s.failEvents--
		s.mu.Unlock()
		return errors.New("no space left on device")
	}
	s.mu.Unlock()
	return s.Store.AppendEvent(ctx, events...)
}

// rig is an engine over the fakes and a fleet.
type rig struct {
	t       *testing.T
	e       *Engine
	rt      *fakeRuntime
	pk      *fakePackages
	pr      *fakeProber
	store   *failingStore
	metrics *countingMetrics
	d       Desired
	now     time.Time
}

const rigFleet = `
database "db" { dsn = "postgres://u:` + testPassword + `@db/postgres" }
package "invoicing" {
  source = "/pkgs"
  channel "stable" { version = "%s" }
}
rollout {
  canary           = 1
  max_parallel     = 2
  health_deadline  = "300ms"
  min_healthy_time = "50ms"
}
defaults {
  package  = "invoicing"
  channel  = "stable"
  database = "db"
}
`

func newRig(t *testing.T, version string, merchants ...string) *rig {
	t.Helper()
	dir := t.TempDir()
	fs, err := state.OpenFile(filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	r := &rig{t: t, rt: newFakeRuntime(), pk: &fakePackages{dir: filepath.Join(dir, "releases"), bad: map[string]error{}}, store: &failingStore{Store: fs},
		metrics: &countingMetrics{}, now: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)}
	r.pr = &fakeProber{rt: r.rt, sick: map[string]bool{}}
	r.e = &Engine{Store: r.store, Runtime: r.rt, Packages: r.pk, Prober: r.pr, Databases: fakeDatabases{r.rt}, Paths: fakePaths{dir}, Metrics: r.metrics,
		Now: func() time.Time { return r.now }, Jitter: func() float64 { return 0.5 }, StopGrace: 3 * time.Second}
	if err := r.e.Load(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	r.setFleet(version, merchants...)
	return r
}

// setFleet makes the specs ask for version of the channel, for merchants.
func (r *rig) setFleet(version string, merchants ...string) {
	r.t.Helper()
	src := fmt.Sprintf(rigFleet, version)
	for _, m := range merchants {
		if id, port, ok := strings.Cut(m, ":"); ok {
			src += fmt.Sprintf("merchant %q {\n  port = %s\n}\n", id, port)
			continue
		}
		src += fmt.Sprintf("merchant %q {}\n", m)
	}
	fl, _, diags := spec.Load([]spec.Source{{Name: "fleet.hcl", Dir: "/specs", Bytes: []byte(src)}}, spec.Options{Ports: spec.PortRange{Low: 9000, High: 9099}})
	if diags.HasErrors() {
		r.t.Fatal(diags)
	}
	r.d = Desired{Fleet: fl, Ports: spec.PortRange{Low: 9000, High: 9099},
		Redact: func(s string) string { return strings.ReplaceAll(s, testPassword, spec.Redacted) }}
	r.e.SetRedactor(r.d.Redact)
}

// converge reconciles each merchant until it has nothing to do (bounded).
func (r *rig) converge(ids ...string) {
	r.t.Helper()
	for _, id := range ids {
		for i := 0; ; i++ {
			if i > 20 {
				r.t.Fatalf("%s does not converge", id)
			}
			res, err := r.e.Reconcile(context.Background(), r.d, id, ObserveOptions{})
			if err != nil {
				r.t.Fatalf("reconcile %s: %v", id, err)
			}
			if !res.Requeue {
				break
			}
		}
	}
}

func (r *rig) record(id string) *reconcile.Record {
	r.t.Helper()
	rec := r.e.Record(id)
	if rec == nil {
		r.t.Fatalf("no record of %s", id)
	}
	return rec
}

// events returns merchant's recorded events as "action result".
func (r *rig) events(id string) []string {
	r.t.Helper()
	es, err := r.store.Events(context.Background(), id, 0)
	if err != nil {
		r.t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Action+" "+e.Result)
	}
	return out
}
