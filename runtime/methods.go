package runtime

import (
	"context"
	"errors"
	"time"
)

// The methods below are the package's functions with the Runtime's
// defaults applied to each Spec, so that one *Runtime serves everything a
// supervisor needs of merchant processes.

// fill applies r's defaults to s.
func (r *Runtime) fill(s Spec) Spec {
	if s.LogMaxBytes == 0 {
		s.LogMaxBytes = r.LogMaxBytes
	}
	if s.LogKeep == 0 {
		s.LogKeep = r.LogKeep
	}
	if s.Credential == nil {
		s.Credential = r.Credential
	}
	return s
}

// Check is p.Check.
func (r *Runtime) Check(p Proc) (Liveness, error) { return p.Check() }

// Stop is Stop; a process already gone is not an error.
func (r *Runtime) Stop(ctx context.Context, p Proc, grace time.Duration) error {
	if err := Stop(ctx, p, grace); err != nil && !errors.Is(err, ErrNotAlive) {
		return err
	}
	return nil
}

// Wait is Wait.
func (r *Runtime) Wait(ctx context.Context, p Proc) (ExitStatus, error) { return Wait(ctx, p) }

// PortOwner is PortOwner.
func (r *Runtime) PortOwner(port int, workDir string) (Proc, bool, bool, error) {
	return PortOwner(port, workDir)
}

// PortFree is PortFree.
func (r *Runtime) PortFree(port int) bool { return PortFree(port) }

// RunOnce is RunOnce with r's defaults.
func (r *Runtime) RunOnce(ctx context.Context, s Spec, timeout time.Duration, quiet bool) (string, error) {
	return RunOnce(ctx, r.fill(s), timeout, quiet)
}

// Preflight is Preflight with r's defaults.
func (r *Runtime) Preflight(s Spec) error { return Preflight(r.fill(s)) }

// RunsFrom is RunsFrom.
func (r *Runtime) RunsFrom(p Proc, dir string) bool { return RunsFrom(p, dir) }
