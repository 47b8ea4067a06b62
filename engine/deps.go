package engine

import (
	"context"
	"time"

	"steward/dbadmin"
	"steward/pkgstore"
	"steward/reconcile"
	"steward/router"
	"steward/runtime"
)

// The engine's dependencies, declared here where they are consumed, over
// the providers' own types.

// Proc identifies a process: a pid is trusted only with its start time.
type Proc = runtime.Proc

// Runtime is what the engine needs of merchant processes (package runtime).
type Runtime interface {
	// Start starts a merchant process in its own session with its log shim.
	Start(ctx context.Context, s runtime.Spec) (runtime.Proc, error)
	// Check says whether p is the same live process: Unknown when /proc
	// could not be read (never taken for an exit).
	Check(p runtime.Proc) (runtime.Liveness, error)
	// Stop ends p (SIGTERM to its group, SIGKILL after grace). It never
	// signals a process whose identity it could not confirm; a process
	// already gone is not an error.
	Stop(ctx context.Context, p runtime.Proc, grace time.Duration) error
	// Wait blocks until p exits (or ctx ends). An error means it could not
	// watch, never that the process exited.
	Wait(ctx context.Context, p runtime.Proc) (runtime.ExitStatus, error)
	// PortOwner reports the process listening on port, and whether it runs
	// in workDir (a merchant's own process whose start was never recorded).
	PortOwner(port int, workDir string) (p runtime.Proc, mine, found bool, err error)
	// RunsFrom reports whether p runs an executable of the release
	// unpacked in dir (or cannot tell: it is then taken to).
	RunsFrom(p runtime.Proc, dir string) bool
	// PortFree reports whether nothing listens on port.
	PortFree(port int) bool
	// RunOnce runs a one-off command the way the merchant runs (its user,
	// work dir and environment) and returns the end of its output.
	RunOnce(ctx context.Context, s runtime.Spec, timeout time.Duration, quiet bool) (string, error)
	// Preflight checks what starting s would need (the executable, the
	// sizes execve accepts) without starting anything.
	Preflight(s runtime.Spec) error
}

// Packages is what the engine needs of the release store (pkgstore).
type Packages interface {
	// Install verifies and unpacks a release once, or returns the one
	// installed.
	Install(ctx context.Context, source, name, version string) (*pkgstore.Release, error)
	// Get returns an installed release without installing anything.
	Get(name, version string) (*pkgstore.Release, error)
	// Peek returns a release's manifest without installing anything (the
	// installed one's, or read from a local tarball); it writes nothing.
	Peek(ctx context.Context, source, name, version string) (*pkgstore.Manifest, error)
	// GC removes installed releases of name that keep rejects.
	GC(ctx context.Context, name string, keep func(version string) bool) ([]string, error)
}

// Prober checks once whether a merchant answers on its port: an HTTP GET
// of path expecting status, or a TCP connect when path is empty.
type Prober interface {
	Probe(ctx context.Context, port int, path string, status int, timeout time.Duration) error
}

// Databases is what the engine needs of merchant databases (dbadmin).
type Databases interface {
	Ensure(ctx context.Context, serverDSN, dbName string) (created bool, err error)
	SchemaVersion(ctx context.Context, databaseURL, query string) (int64, error)
	Lock(ctx context.Context, databaseURL string) (unlock func() error, err error)
	Dump(ctx context.Context, databaseURL string, b dbadmin.Backup, keep int) (dbadmin.Backup, error)
	Restore(ctx context.Context, databaseURL string, b dbadmin.Backup) error
	Backups(merchant string) ([]dbadmin.Backup, error)
	Drop(ctx context.Context, serverDSN, dbName string) error
	Exists(ctx context.Context, serverDSN, dbName string) (bool, error)
}

// Paths is the directory layout of a merchant's files.
type Paths interface {
	WorkDir(id string) string
	LogDir(id string) string
}

// Router sends each merchant's traffic to one of its instances (package
// router; *router.Router implements it).
type Router interface {
	// Put sets one merchant's route; Delete removes it. The router applies
	// them, coalesced, soon.
	Put(r router.Route) error
	Delete(merchant string)
	// Set replaces the whole table at once (refused whole when a route is).
	Set(routes []router.Route) error
	// Sync returns once every route put before it is live.
	Sync(ctx context.Context) error
	// Drain waits until no request to port is in flight (bounded by ctx).
	Drain(ctx context.Context, port int) error
}

// check is what /proc says of p, in the planner's terms.
func (e *Engine) check(p Proc) (reconcile.Liveness, error) {
	if p.PID == 0 {
		return reconcile.NoProcess, nil
	}
	l, err := e.Runtime.Check(p)
	switch l {
	case runtime.Alive:
		return reconcile.Alive, err
	case runtime.Dead:
		return reconcile.Dead, err
	}
	return reconcile.Unknown, err
}
