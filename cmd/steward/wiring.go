package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"steward/dbadmin"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"steward/pkgstore"
	"steward/probe"
	"steward/reconcile"
	"steward/runtime"
	"steward/spec"
	"steward/state"
)

// merchantDirs are where a merchant's working directory and logs live.
func merchantDirs(root, id string) (work, logs string) {
	return filepath.Join(root, "merchants", id, "work"), filepath.Join(root, "merchants", id, "logs")
}

// procRuntime adapts package runtime to reconcile.Runtime.
type procRuntime struct {
	// refuse, when set, is returned by Start and Run.
	refuse      error
	rt          *runtime.Runtime
	root        string
	logMaxBytes int64
	logKeep     int
	cred        *syscall.Credential
}

var _ reconcile.Runtime = (*procRuntime)(nil)

func newProcRuntime(h *spec.Host) (*procRuntime, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding steward's own executable for the log shim: %w", err)
	}
	r := &procRuntime{rt: &runtime.Runtime{ShimArgv: shimArgv(exe)}, root: h.Runtime.Root,
		logMaxBytes: h.Runtime.LogMaxBytes, logKeep: h.Runtime.LogKeep}
	if os.Geteuid() == 0 {
		if h.Runtime.User == "" {
			return nil, errors.New("steward runs as root but runtime.user is not set; merchants never run as root: set runtime { user = \"NAME\" } to an unprivileged user")
		}
		cred, err := runtime.LookupUser(h.Runtime.User)
		if err != nil {
			return nil, fmt.Errorf("runtime.user: %w", err)
		}
		if cred.Uid == 0 {
			return nil, fmt.Errorf("runtime.user %q is root; merchants must run as an unprivileged user", h.Runtime.User)
		}
		r.cred = cred
	}
	return r, nil
}

// logShimName is the log shim program steward prefers, looked up next to
// its own executable (make build and go install put it there).
const logShimName = "steward-logshim"

// shimArgv returns the command that runs a merchant's log shim: the
// steward-logshim next to exe when there is one, otherwise exe itself as
// "steward __logshim". Both run the same shim (package runtime/logshim);
// the small program costs about a fifth of the CPU to start (4 ms against
// 23 ms here), once per merchant start.
func shimArgv(exe string) []string {
	p := filepath.Join(filepath.Dir(exe), logShimName)
	if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
		return []string{p}
	}
	return []string{exe, "__logshim"}
}

func (r *procRuntime) Start(ctx context.Context, l reconcile.Launch) (reconcile.Proc, error) {
	if r.refuse != nil {
		return reconcile.Proc{}, r.refuse
	}
	work, logs := merchantDirs(r.root, l.Merchant)
	p, err := r.rt.Start(ctx, runtime.Spec{Merchant: l.Merchant, Argv: l.Argv, ReleaseDir: l.ReleaseDir, WorkDir: work, Env: l.Env,
		LogDir: logs, LogMaxBytes: r.logMaxBytes, LogKeep: r.logKeep, Credential: r.cred})
	if errors.Is(err, syscall.EACCES) && r.cred != nil {
		err = fmt.Errorf("%w (merchants run as uid %d: every directory above the release, the work dir and the steward binary must be readable and searchable by that user)", err, r.cred.Uid)
	}
	return reconcile.Proc{PID: p.PID, StartTime: p.StartTime}, err
}

func (r *procRuntime) Run(ctx context.Context, l reconcile.Launch, timeout time.Duration) (string, error) {
	if r.refuse != nil {
		return "", r.refuse
	}
	work, logs := merchantDirs(r.root, l.Merchant)
	for _, d := range []string{work, logs} {
		if _, err := runtime.MakeDir(d, r.cred); err != nil {
			return "", err
		}
	}
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, l.Argv[0], l.Argv[1:]...)
	cmd.Dir, cmd.Env = work, l.Env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: r.cred}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	// The output also goes to the merchant's log, framed so it can be found.
	if l.Quiet {
		// read-only helper commands stay out of the log
	} else if f, ferr := os.OpenFile(filepath.Join(logs, runtime.LogFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640); ferr == nil {
		fmt.Fprintf(f, "steward: running %s\n%s", strings.Join(l.Argv, " "), out.String())
		if err != nil {
			fmt.Fprintf(f, "steward: %s failed: %v\n", filepath.Base(l.Argv[0]), err)
		}
		f.Close()
		if r.cred != nil {
			os.Chown(filepath.Join(logs, runtime.LogFile), int(r.cred.Uid), int(r.cred.Gid))
		}
	}
	if ctx.Err() == context.DeadlineExceeded {
		err = fmt.Errorf("timed out after %s", timeout)
	}
	return out.String(), err
}

func (r *procRuntime) Stop(ctx context.Context, p reconcile.Proc, grace time.Duration) error {
	err := runtime.Stop(ctx, runtime.Proc{PID: p.PID, StartTime: p.StartTime}, grace)
	if errors.Is(err, runtime.ErrNotAlive) {
		return nil
	}
	return err
}

func (r *procRuntime) Alive(p reconcile.Proc) bool {
	return runtime.Proc{PID: p.PID, StartTime: p.StartTime}.Alive()
}

func (r *procRuntime) Wait(ctx context.Context, p reconcile.Proc) (time.Time, string, error) {
	es, err := runtime.Wait(ctx, runtime.Proc{PID: p.PID, StartTime: p.StartTime})
	if err != nil {
		return time.Time{}, "", err
	}
	return es.Time, es.String(), nil
}

func (r *procRuntime) PortOwner(port int, merchant string) (reconcile.Proc, bool, bool) {
	// A bind test costs a few syscalls; reading /proc/net/tcp costs
	// milliseconds on a large machine, so it is done only when the port is
	// taken.
	if runtime.PortFree(port) {
		return reconcile.Proc{}, false, false
	}
	pid, found, err := runtime.PortHolder(port)
	if err != nil || !found {
		if err == nil && !runtime.PortFree(port) {
			// Someone listens, but /proc does not say who (another user).
			return reconcile.Proc{}, false, true
		}
		return reconcile.Proc{}, false, false
	}
	p, err := runtime.Inspect(pid)
	if err != nil {
		return reconcile.Proc{}, false, false
	}
	work, _ := merchantDirs(r.root, merchant)
	cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
	return reconcile.Proc{PID: p.PID, StartTime: p.StartTime}, cwd == work, true
}

// releases adapts pkgstore to reconcile.Packages.
type releases struct{ store *pkgstore.Store }

var _ reconcile.Packages = releases{}

func (r releases) Install(ctx context.Context, pkg *spec.Package, version string) (*reconcile.Release, error) {
	rel, err := r.store.Install(ctx, pkg.Source, pkg.Name, version)
	if err != nil {
		return nil, err
	}
	out := &reconcile.Release{Version: rel.Version, Dir: rel.Dir, Command: rel.Command, HealthHTTP: rel.Manifest.Health.HTTP, Migrate: rel.MigrateCommand()}
	if sc := rel.Manifest.Schema; sc != nil {
		out.Schema = &reconcile.SchemaSpec{Version: sc.Version, Migrate: rel.SchemaMigrateCommand(), Query: sc.Query,
			VersionCommand: rel.SchemaVersionCommand(), Timeout: sc.Timeout}
		if sc.HasDown() {
			out.Schema.Down = rel.SchemaDownCommand
		}
	}
	return out, nil
}

func (r releases) GC(ctx context.Context, pkg string, keep func(string) bool) ([]string, error) {
	return r.store.GC(ctx, pkg, keep)
}

// merchantDatabases adapts dbadmin to reconcile.Databases. Backups live in
// one directory per merchant under the state directory.
type merchantDatabases struct {
	backups string
	rt      *procRuntime
}

var _ reconcile.Databases = (*merchantDatabases)(nil)

func (m *merchantDatabases) Ensure(ctx context.Context, serverDSN, dbName string) (bool, error) {
	return dbadmin.Ensure(ctx, serverDSN, dbName)
}

func (m *merchantDatabases) SchemaVersion(ctx context.Context, url string, s *reconcile.SchemaSpec, l reconcile.Launch) (int64, error) {
	if len(s.VersionCommand) == 0 {
		return dbadmin.SchemaVersion(ctx, url, s.Query)
	}
	l.Argv, l.Quiet = s.VersionCommand, true
	out, err := m.rt.Run(ctx, l, time.Minute)
	if err != nil {
		return 0, fmt.Errorf("%s: %w: %s", filepath.Base(l.Argv[0]), err, strings.TrimSpace(out))
	}
	fields := strings.Fields(out)
	if len(fields) == 0 {
		return 0, fmt.Errorf("%s printed no schema version", filepath.Base(l.Argv[0]))
	}
	v, err := strconv.ParseInt(fields[len(fields)-1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s printed %q, not a schema version", filepath.Base(l.Argv[0]), fields[len(fields)-1])
	}
	return v, nil
}

func (m *merchantDatabases) Lock(ctx context.Context, url string) (func() error, error) {
	return dbadmin.Lock(ctx, url)
}

func (m *merchantDatabases) dir(merchant string) string { return filepath.Join(m.backups, merchant) }

func (m *merchantDatabases) Dump(ctx context.Context, url, merchant, version string, schema int64, keep int) (reconcile.Backup, error) {
	dir := m.dir(merchant)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return reconcile.Backup{}, err
	}
	b, err := dbadmin.Dump(ctx, url, dir, dbadmin.Backup{Merchant: merchant, Version: version, Schema: schema, Time: time.Now()})
	if err != nil {
		return reconcile.Backup{}, err
	}
	if keep > 0 {
		dbadmin.Prune(dir, keep)
	}
	return reconcile.Backup{Path: b.Path, Version: b.Version, Schema: b.Schema, Time: b.Time}, nil
}

func (m *merchantDatabases) Restore(ctx context.Context, url string, b reconcile.Backup) error {
	return dbadmin.Restore(ctx, url, b.Path)
}

func (m *merchantDatabases) Backups(merchant string) ([]reconcile.Backup, error) {
	bs, err := dbadmin.ListBackups(m.dir(merchant))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := make([]reconcile.Backup, len(bs))
	for i, b := range bs {
		out[i] = reconcile.Backup{Path: b.Path, Version: b.Version, Schema: b.Schema, Time: b.Time}
	}
	return out, nil
}

// newLogger logs text on a terminal and JSON otherwise.
func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if f, ok := w.(*os.File); ok && isTerminal(f) {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// stack is what the commands that act need: config, fleet, state, executor.
type stack struct {
	l      *loaded
	store  *state.FileStore
	exec   *reconcile.Executor
	unlock func() error
}

func (s *stack) close() {
	if s.unlock != nil {
		s.unlock()
	}
	if s.store != nil {
		s.store.Close()
	}
}

// openStack loads everything and takes the state lock for who.
func (e *env) openStack(ctx context.Context, l *loaded, who string, lockWait time.Duration, log *slog.Logger) (*stack, error) {
	s := &stack{l: l}
	store, err := state.OpenFile(l.host.State.Path)
	if err != nil {
		return nil, fmt.Errorf("opening state: %w", err)
	}
	s.store = store
	unlock, err := store.Lock(ctx, who, lockWait)
	if err != nil {
		s.close()
		return nil, err
	}
	s.unlock = unlock
	x, err := newExecutor(ctx, l, store, log, true)
	if err != nil {
		s.close()
		return nil, err
	}
	s.exec = x
	return s, nil
}

// databasesDown checks every database of fl once, concurrently, and returns
// the ones that do not answer. The CLI uses it to gate starts the way the
// daemon's watcher does.
func databasesDown(ctx context.Context, fl *spec.Fleet) map[string]bool {
	down := map[string]bool{}
	if fl == nil {
		return down
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, db := range fl.Databases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := probe.CheckDB(ctx, db.DSN.Reveal(), db.CheckTimeout); err != nil {
				mu.Lock()
				down[name] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return down
}

// newExecutor wires an executor for l's host over store and loads state.
// Without forWrite (plan), a runtime that cannot run merchants safely
// (root without runtime.user) is not an error until something is run.
func newExecutor(ctx context.Context, l *loaded, store state.Store, log *slog.Logger, forWrite bool) (*reconcile.Executor, error) {
	rt, err := newProcRuntime(l.host)
	if err != nil {
		if forWrite {
			return nil, err
		}
		rt = &procRuntime{root: l.host.Runtime.Root, refuse: err}
	}
	pk, err := pkgstore.Open(filepath.Join(l.host.Runtime.Root, "releases"))
	if err != nil {
		return nil, err
	}
	x := &reconcile.Executor{Runtime: rt, Packages: releases{pk}, Prober: probe.New(), Store: store, Log: log,
		Databases: &merchantDatabases{backups: filepath.Join(l.host.State.Path, "backups"), rt: rt}}
	if err := x.Init(ctx); err != nil {
		return nil, fmt.Errorf("loading state: %w", err)
	}
	return x, nil
}
