// Package app is steward's composition root: from a host config it wires
// the state store, the release store, the process runtime, the database
// admin, the prober and the engine, and owns the directory layout (where
// merchants' work dirs, logs, releases, backups and the git cache live).
// Commands get everything they need from here; nothing else knows paths.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"steward/dbadmin"
	"steward/engine"
	"steward/pkgstore"
	"steward/probe"
	"steward/router"
	"steward/runtime"
	"steward/source"
	"steward/spec"
	"steward/state"
)

// Layout is where one host's files live, below the host config's runtime
// root and state directory.
type Layout struct {
	RuntimeRoot string
	StateDir    string
}

// WorkDir is a merchant's working directory (see runtime.MerchantDirs).
func (l Layout) WorkDir(id string) string {
	work, _, _ := runtime.MerchantDirs(l.RuntimeRoot, id)
	return work
}

// LogDir is a merchant's log directory (see runtime.MerchantDirs).
func (l Layout) LogDir(id string) string {
	_, logs, _ := runtime.MerchantDirs(l.RuntimeRoot, id)
	return logs
}

// Releases is the directory of unpacked releases.
func (l Layout) Releases() string { return filepath.Join(l.RuntimeRoot, "releases") }

// Backups is the directory of database backups (one directory a merchant).
func (l Layout) Backups() string { return filepath.Join(l.StateDir, "backups") }

// GitCache is the git source's cache.
func (l Layout) GitCache() string { return filepath.Join(l.StateDir, "git") }

// Router is the managed router's prefix.
func (l Layout) Router() string { return filepath.Join(l.RuntimeRoot, "router") }

// App is one host's steward, wired.
type App struct {
	Host     *spec.Host
	Layout   Layout
	Store    *state.FileStore
	Packages *pkgstore.Store
	Engine   *engine.Engine
	// Router is the nginx router, when the host config has one.
	Router *router.Router
	Log    *slog.Logger

	release func() error
}

// Options tune Open.
type Options struct {
	// Writer takes the host's writer lease for Who (waiting up to
	// LeaseWait) and makes the engine able to write. Without it the App
	// only reads: nothing on disk changes.
	Writer    bool
	Who       string
	LeaseWait time.Duration
}

// ErrStateBackend is returned for a state backend this build does not have.
var ErrStateBackend = errors.New("state backend not available")

// Open wires the host h. With opts.Writer it holds the writer lease until
// Close; a lease held by another steward is an error naming the holder
// (a *state.LockError).
func Open(ctx context.Context, h *spec.Host, log *slog.Logger, opts Options) (*App, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if !h.State.PostgresDSN.IsZero() {
		return nil, fmt.Errorf("%w: state { postgres } is not supported by this steward; use state { path = \"...\" }", ErrStateBackend)
	}
	a := &App{Host: h, Layout: Layout{RuntimeRoot: h.Runtime.Root, StateDir: h.State.Path}, Log: log}
	store, err := state.OpenFile(h.State.Path)
	if err != nil {
		return nil, fmt.Errorf("opening state: %w", err)
	}
	a.Store = store
	if opts.Writer {
		release, err := store.Lease(ctx, state.HostScope, opts.Who, opts.LeaseWait)
		if err != nil {
			store.Close()
			return nil, err
		}
		a.release = release
	}
	lim := h.Limits.WithDefaults()
	if a.Packages, err = pkgstore.OpenWith(a.Layout.Releases(), pkgstore.Options{PackageSize: lim.PackageSize, MaxFiles: lim.UnpackFiles,
		MaxBytes: lim.UnpackSize, Manifest: lim}); err != nil {
		a.Close()
		return nil, err
	}
	var rt engine.Runtime
	rt, err = newRuntime(h)
	if err != nil {
		if opts.Writer {
			a.Close()
			return nil, err
		}
		rt = refusing{err}
	}
	a.Engine = &engine.Engine{Store: store, Runtime: rt, Packages: a.Packages, Prober: probe.New(),
		Databases: dbadmin.Admin{BackupDir: a.Layout.Backups()}, Paths: a.Layout, Log: log, StopGrace: h.Runtime.StopGrace}
	if h.Router != nil {
		r, err := NewRouter(h, log)
		if err != nil {
			a.Close()
			return nil, err
		}
		a.Router, a.Engine.Router = r, r
	}
	if err := a.Engine.Load(ctx, opts.Writer); err != nil {
		a.Close()
		return nil, fmt.Errorf("loading state: %w", err)
	}
	return a, nil
}

// NewRouter is the nginx router h's config describes: a managed nginx
// keeps its prefix under the runtime root.
func NewRouter(h *spec.Host, log *slog.Logger) (*router.Router, error) {
	n := h.Router.Nginx
	cfg := router.Config{Mode: router.Mode(n.Mode), Listen: n.Listen, Binary: n.Binary, IncludeFile: n.IncludeFile,
		TestCommand: n.TestCommand, ReloadCommand: n.ReloadCommand, MaintenancePage: n.MaintenancePage,
		RetryAfter: int(n.RetryAfter / time.Second), ProxyConnectTimeout: n.ProxyConnectTimeout, ProxyReadTimeout: n.ProxyReadTimeout, Logger: log}
	if cfg.Mode == router.Managed {
		cfg.Prefix = Layout{RuntimeRoot: h.Runtime.Root}.Router()
		if os.Geteuid() == 0 {
			cfg.User = h.Runtime.User
		}
		// nginx's workers finish the requests of a replaced configuration
		// within the merchants' stop grace.
		cfg.WorkerShutdownTimeout = h.Runtime.StopGrace
	}
	r, err := router.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("router: %w", err)
	}
	return r, nil
}

// LeftoverRouter is the managed nginx steward started under h's runtime
// root when the host config no longer asks for one (no router block, or
// system mode): a router that can only report and stop it. It is nil when
// there is none to stop (steward stopped it, or never started one).
func LeftoverRouter(h *spec.Host, log *slog.Logger) *router.Router {
	if h.Router != nil && h.Router.Nginx.Mode == spec.RouterManaged {
		return nil
	}
	prefix := Layout{RuntimeRoot: h.Runtime.Root}.Router()
	if _, err := os.Stat(filepath.Join(prefix, "master.json")); err != nil {
		return nil
	}
	// Listen is not used: the leftover is never given routes.
	cfg := router.Config{Mode: router.Managed, Prefix: prefix, Listen: "127.0.0.1:1", Logger: log}
	if os.Geteuid() == 0 {
		cfg.User = h.Runtime.User
	}
	r, err := router.New(cfg)
	if err != nil {
		return nil
	}
	return r
}

// Close releases the writer lease and the store.
func (a *App) Close() {
	if a.Engine != nil {
		a.Engine.FlushEvents(context.Background())
	}
	if a.release != nil {
		a.release()
		a.release = nil
	}
	if a.Store != nil {
		a.Store.Close()
	}
}

// Desired is the desired state for fleet on this host.
func (a *App) Desired(fl *spec.Fleet) engine.Desired {
	return DesiredFor(a.Host, fl)
}

// DesiredFor is the desired state for fleet (nil when the specs do not
// load) on host h: its port range, the ports steward itself listens on,
// and a redactor of every secret value of the host config and the fleet.
func DesiredFor(h *spec.Host, fl *spec.Fleet) engine.Desired {
	red := h.Redactor()
	if fl != nil {
		red = red.Merge(fl.Redactor())
	}
	d := engine.Desired{Fleet: fl, Ports: h.Runtime.Ports, Reserved: h.ReservedPorts(), Redact: red.Redact}
	if os.Geteuid() == 0 {
		d.UIDs = h.Runtime.UIDs // users of their own need root to start processes as them
	}
	return d
}

// NewSource returns the spec source h names; log may be nil.
func NewSource(h *spec.Host, log *slog.Logger) source.Source {
	if h.Source.Git != nil {
		lim := h.Limits.WithDefaults()
		opts := source.GitOptions{Logger: log, MaxFileSize: lim.FileSize, MaxTotalSize: lim.TotalSize, FetchMemory: lim.GitFetchMemory}
		if exe, err := os.Executable(); err == nil {
			// What a fetch takes in memory is not the daemon's (see
			// source.RunFetchProcess).
			opts.FetchCommand = []string{exe, "__gitfetch"}
		}
		return source.NewGit(*h.Source.Git, Layout{RuntimeRoot: h.Runtime.Root, StateDir: h.State.Path}.GitCache(), opts)
	}
	return source.NewDir(h.Source.Path, source.DirOptions{Logger: log, MaxFileSize: h.Limits.WithDefaults().FileSize, MaxTotalSize: h.Limits.WithDefaults().TotalSize})
}

// LogShimName is the log shim program steward prefers, looked up next to
// its own executable (make build and go install put it there).
const LogShimName = "steward-logshim"

// ShimArgv returns the command that runs a merchant's log shim: the
// steward-logshim next to exe when there is one, otherwise exe itself as
// "steward __logshim". Both run the same shim (package runtime/logshim);
// the small program costs about a fifth of the CPU to start.
func ShimArgv(exe string) []string {
	p := filepath.Join(filepath.Dir(exe), LogShimName)
	if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
		return []string{p}
	}
	return []string{exe, "__logshim"}
}

// newRuntime wires the process runtime for h: merchants never run as root.
func newRuntime(h *spec.Host) (*runtime.Runtime, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding steward's own executable for the log shim: %w", err)
	}
	p := &runtime.Runtime{ShimArgv: ShimArgv(exe), LogMaxBytes: h.Runtime.LogMaxBytes, LogKeep: h.Runtime.LogKeep}
	if p.Credential, err = RuntimeCredential(h); err != nil {
		return nil, err
	}
	return p, nil
}

// RuntimeCredential is the user merchants run as: nil when steward does
// not run as root (they run as steward's user), runtime.user when it does;
// an error when that user is unset, unknown or root.
func RuntimeCredential(h *spec.Host) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	if h.Runtime.User == "" {
		return nil, errors.New("steward runs as root but runtime.user is not set; merchants never run as root: set runtime { user = \"NAME\" } to an unprivileged user")
	}
	cred, err := runtime.LookupUser(h.Runtime.User)
	if err != nil {
		return nil, fmt.Errorf("runtime.user: %w; set it to an existing unprivileged user", err)
	}
	if cred.Uid == 0 {
		return nil, fmt.Errorf("runtime.user %q is root; merchants must run as an unprivileged user", h.Runtime.User)
	}
	return cred, nil
}

var _ engine.Runtime = (*runtime.Runtime)(nil)

// refusing is the runtime of a read-only App whose host cannot run
// merchants safely (root without runtime.user): it observes, and refuses
// to start anything, with the reason.
type refusing struct{ err error }

func (r refusing) Start(context.Context, runtime.Spec) (runtime.Proc, error) {
	return runtime.Proc{}, r.err
}
func (r refusing) Check(p runtime.Proc) (runtime.Liveness, error)          { return p.Check() }
func (r refusing) Stop(context.Context, runtime.Proc, time.Duration) error { return r.err }
func (r refusing) Wait(ctx context.Context, p runtime.Proc) (runtime.ExitStatus, error) {
	return runtime.Wait(ctx, p)
}
func (r refusing) RunsFrom(p runtime.Proc, dir string) bool { return runtime.RunsFrom(p, dir) }

func (r refusing) PortOwner(port int, workDir string) (runtime.Proc, bool, bool, error) {
	return runtime.PortOwner(port, workDir)
}
func (r refusing) PortFree(port int) bool { return runtime.PortFree(port) }
func (r refusing) RunOnce(context.Context, runtime.Spec, time.Duration, bool) (string, error) {
	return "", r.err
}
func (r refusing) Preflight(runtime.Spec) error { return r.err }

// MerchantIDs returns ids sorted; a helper for views.
func MerchantIDs[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
