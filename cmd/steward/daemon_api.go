package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"steward/api"
	"steward/probe"
	"steward/reconcile"
	"steward/spec"
	"steward/state"
)

// daemonAPI adapts the running daemon to api.Daemon.
type daemonAPI struct {
	dm     *reconcile.Daemon
	x      *reconcile.Executor
	prober reconcile.Prober
	mon    *probe.Monitor
}

var _ api.Daemon = (*daemonAPI)(nil)

func (a *daemonAPI) Status(ctx context.Context) (any, error) { return a.status(ctx, true), nil }

func (a *daemonAPI) status(ctx context.Context, withHealth bool) statusDoc {
	d := a.dm.Desired()
	var doc statusDoc
	st := a.x.State()
	alive := func(p reconcile.Proc) bool { return procChecker{}.Alive(p.PID, p.StartTime) }
	var health healthFunc
	if withHealth {
		live := liveHealth(a.prober)
		health = func(ctx context.Context, id string, port int, m *spec.Merchant) bool {
			// The monitor's last verdict; a live probe until it has one.
			if a.mon != nil {
				if r, ok := a.mon.Health(id); ok {
					return r.Healthy
				}
			}
			return live(ctx, id, port, m)
		}
	}
	if d != nil {
		doc = buildStatus(ctx, st, d.Fleet, alive, health, time.Now())
		doc.Revision = d.Fleet.Revision
	} else {
		doc = buildStatus(ctx, st, nil, alive, health, time.Now())
	}
	if err := a.dm.SourceError(); err != nil {
		doc.SpecError = err.Error()
	}
	return doc
}

func (a *daemonAPI) Plan(ctx context.Context) (*reconcile.Plan, error) { return a.dm.Plan(ctx) }

func (a *daemonAPI) Apply(ctx context.Context, req api.ApplyRequest, hooks reconcile.Hooks) (int, error) {
	n, err := a.dm.ApplyPlan(ctx, req.Digest, hooks)
	if errors.Is(err, reconcile.ErrPlanChanged) {
		return 0, fmt.Errorf("%w: %v", api.ErrStale, err)
	}
	return n, err
}

func (a *daemonAPI) Sync(ctx context.Context) (string, error) { return a.dm.SyncNow(ctx) }

func (a *daemonAPI) Restart(ctx context.Context, id string) error {
	if d := a.dm.Desired(); d == nil || d.Fleet.Merchants[id] == nil {
		return fmt.Errorf("%w: merchant %q is not in the specs", api.ErrNotFound, id)
	}
	return a.dm.RestartMerchant(ctx, id)
}

func (a *daemonAPI) Suspend(ctx context.Context, id string, on bool) error {
	err := a.dm.SetSuspended(ctx, id, on)
	if errors.Is(err, reconcile.ErrUnknownMerchant) {
		return fmt.Errorf("%w: %v", api.ErrNotFound, err)
	}
	return err
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

// merchantStates counts merchants by the state status shows, for the
// steward_merchants gauge; it runs when /metrics is scraped.
func merchantStates(ctx context.Context, a *daemonAPI) func() map[string]int {
	return func() map[string]int {
		counts := map[string]int{}
		for _, ms := range a.status(ctx, false).Merchants {
			counts[ms.State]++
		}
		return counts
	}
}

// daemonClient returns a client for the daemon that holds the state lock,
// or nil when err is not "locked by steward run".
func daemonClient(l *loaded, err error) *api.Client {
	var le *state.LockError
	if !errors.As(err, &le) || le.Who != "steward run" {
		return nil
	}
	return api.NewClient(l.host.API.Listen, l.host.API.Token.Reveal())
}

// applyViaDaemon shows the daemon's plan, asks, and has the daemon apply it.
func (e *env) applyViaDaemon(ctx context.Context, c *api.Client, saved *savedPlan, auto bool) int {
	fmt.Fprintf(e.stdout, "A steward daemon is running; applying through it (%s).\n\n", c.Base)
	p, err := c.Plan(ctx)
	if err != nil {
		return e.errorf("asking the daemon for its plan: %s", err)
	}
	if saved != nil {
		if saved.Digest() != p.Digest() {
			return e.errorf("the saved plan is stale: the daemon's plan now differs (specs %s); run \"steward plan\" again", p.Revision)
		}
	} else {
		renderPlan(e.stdout, p)
		if !p.HasChanges() {
			return exitOK
		}
		if code, ok := e.confirm(auto); !ok {
			return code
		}
	}
	start := time.Now()
	total, done := countChanges(p), 0
	failed, err := c.Apply(ctx, p, func(pr api.Progress) {
		done++
		took := time.Duration(pr.Seconds * float64(time.Second)).Round(time.Millisecond)
		if pr.Error != "" {
			fmt.Fprintf(e.stdout, "[%d/%d] %s: %s failed after %s: %s\n", done, total, pr.Merchant, pr.Action, took, pr.Error)
			return
		}
		fmt.Fprintf(e.stdout, "[%d/%d] %s: %s done in %s\n", done, total, pr.Merchant, pr.Action, took)
	})
	if err != nil {
		return e.errorf("%s", err)
	}
	if failed > 0 {
		fmt.Fprintf(e.stdout, "\nApply finished with %s in %s: see the messages above and \"steward history MERCHANT\".\n", plural(failed, "failure"), time.Since(start).Round(time.Millisecond))
		return exitError
	}
	s := p.Summary()
	fmt.Fprintf(e.stdout, "\nApply complete in %s: %d created, %d changed, %d deleted.\n", time.Since(start).Round(time.Millisecond), s.Create, s.Change, s.Delete)
	return exitOK
}

// monitorWatch adapts probe.Monitor to reconcile.HealthWatch.
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
func dbTargets(d reconcile.Desired) []probe.DBTarget {
	var ts []probe.DBTarget
	for _, name := range sortedKeysOf(d.Fleet.Databases) {
		db := d.Fleet.Databases[name]
		ts = append(ts, probe.DBTarget{Name: name, DSN: db.DSN.Reveal(), Interval: db.CheckInterval, Timeout: db.CheckTimeout,
			DownAfter: db.DownAfter, UpAfter: db.UpAfter})
	}
	return ts
}
