package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"steward/api"
	"steward/engine"
	"steward/probe"
	"steward/spec"
)

// daemonAPI serves the running daemon through api.Daemon.
type daemonAPI struct {
	dm     *engine.Daemon
	x      *engine.Engine
	prober *probe.Prober
	mon    *probe.Monitor
}

var _ api.Daemon = (*daemonAPI)(nil)

func (a *daemonAPI) Status(ctx context.Context) (any, error) { return a.status(ctx, true), nil }

// status is the status document; withHealth reports each merchant's health
// (the monitor's last verdict, a live probe until it has one).
func (a *daemonAPI) status(ctx context.Context, withHealth bool) statusDoc {
	var d engine.Desired
	if p := a.dm.Desired(); p != nil {
		d = *p
	}
	opts := engine.StatusOptions{Databases: a.dm.DatabaseState, SpecsInvalid: d.Fleet == nil}
	if withHealth {
		opts.Healthy = func(ctx context.Context, id string, port int, m *spec.Merchant) bool {
			if a.mon != nil {
				if r, ok := a.mon.Health(id); ok {
					return r.Healthy
				}
			}
			path := m.Health.HTTP
			if m.Health.TCP {
				path = ""
			}
			return a.prober.Probe(ctx, port, path, m.Health.Status, min(max(m.Health.Timeout, time.Second), 2*time.Second)) == nil
		}
	}
	doc := statusView(a.x.Status(ctx, d, opts))
	if err := a.dm.SourceError(); err != nil {
		doc.SpecError = err.Error()
	}
	return doc
}

func (a *daemonAPI) Plan(ctx context.Context) (*api.Plan, error) {
	p, err := a.dm.Plan(ctx)
	if err != nil {
		return nil, err
	}
	return api.PlanOf(p), nil
}

func (a *daemonAPI) Apply(ctx context.Context, req api.ApplyRequest, hooks api.Hooks) (int, error) {
	res, err := a.dm.ApplyPlan(ctx, req.Digest, hooks)
	if errors.Is(err, engine.ErrPlanChanged) {
		return 0, fmt.Errorf("%w: %v", api.ErrStale, err)
	}
	return len(res.Failed) + len(res.Skipped), err
}

func (a *daemonAPI) Sync(ctx context.Context) (string, error) { return a.dm.SyncNow(ctx) }

func notFound(err error) error {
	if errors.Is(err, engine.ErrUnknownMerchant) {
		return fmt.Errorf("%w: %v", api.ErrNotFound, err)
	}
	return err
}

func (a *daemonAPI) Restart(ctx context.Context, id string) error {
	return notFound(a.dm.Restart(ctx, id, nil))
}

func (a *daemonAPI) Suspend(ctx context.Context, id string, on bool) error {
	_, err := a.dm.SetSuspended(ctx, id, on)
	return notFound(err)
}

func (a *daemonAPI) Rollback(ctx context.Context, id string, req api.RollbackRequest) (string, error) {
	if err := a.dm.Rollback(ctx, id, req.To, req.RestoreBackup, nil); err != nil {
		return "", notFound(err)
	}
	if r := a.x.Record(id); r != nil {
		return r.Current.Version, nil
	}
	return req.To, nil
}

// serveAPI serves the daemon's API on listen until ctx ends.
func serveAPI(ctx context.Context, listen string, srv *api.Server) (string, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return "", fmt.Errorf("api.listen %s: %w", listen, err)
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ln)
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		hs.Shutdown(sctx)
	}()
	return ln.Addr().String(), nil
}

// monitorWatch adapts probe.Monitor to engine.HealthWatch.
type monitorWatch struct{ mon *probe.Monitor }

func (w monitorWatch) Watch(id string, gen uint64, port int, path string, h spec.Health) {
	w.mon.Set(probe.Target{ID: id, Port: port, HTTP: path, Status: h.Status, Interval: h.Interval, Timeout: h.Timeout,
		Failures: h.Failures, StartGrace: h.StartGrace, Generation: gen})
}

func (w monitorWatch) Forget(id string) { w.mon.Remove(id) }

// healthReason says why a merchant is restarted, for history and logs.
func healthReason(r probe.Result) string {
	return fmt.Sprintf("health: %v, %d times in a row", r.Err, r.ConsecutiveFailures)
}

// dbTargets are the database checks of a fleet.
func dbTargets(d engine.Desired) []probe.DBTarget {
	var ts []probe.DBTarget
	for _, name := range sortedKeysOf(d.Fleet.Databases) {
		db := d.Fleet.Databases[name]
		ts = append(ts, probe.DBTarget{Name: name, DSN: db.DSN.Reveal(), Interval: db.CheckInterval, Timeout: db.CheckTimeout,
			DownAfter: db.DownAfter, UpAfter: db.UpAfter})
	}
	return ts
}
