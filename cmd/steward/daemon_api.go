package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"steward/api"
	"steward/engine"
	"steward/probe"
	"steward/router"
	"steward/runtime"
	"steward/spec"
	"steward/state"
)

// daemonAPI serves the running daemon through api.Daemon.
type daemonAPI struct {
	dm     *engine.Daemon
	x      *engine.Engine
	prober *probe.Prober
	mon    *probe.Monitor
	root   string // runtime.root, where the merchants' logs are
	router *router.Router
	host   *spec.Host
	notes  notifier
}

var _ api.Daemon = (*daemonAPI)(nil)

func (a *daemonAPI) Status(ctx context.Context) (api.Status, error) { return a.status(ctx, true), nil }

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
	doc.Router = routerView(a.router, a.host)
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
		return 0, api.WithKind(api.ErrStale, err)
	}
	return len(res.Failed) + len(res.Skipped), err
}

func (a *daemonAPI) Sync(ctx context.Context) (string, error) { return a.dm.SyncNow(ctx) }

func notFound(err error) error {
	switch {
	case errors.Is(err, engine.ErrUnknownMerchant):
		return fmt.Errorf("%w: %v", api.ErrNotFound, err)
	case errors.Is(err, engine.ErrRefused):
		return api.WithKind(api.ErrRefused, err)
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

func (a *daemonAPI) History(ctx context.Context, q api.HistoryQuery) ([]state.Event, error) {
	if q.Merchant != "" {
		return a.x.Store.Events(ctx, q.Merchant, q.N)
	}
	all, err := a.x.Store.Events(ctx, "", 0)
	if err != nil {
		return nil, err
	}
	prefix := "database " + q.Database + " is "
	var out []state.Event
	for _, ev := range all {
		if strings.HasPrefix(ev.Action, "database ") && strings.HasPrefix(ev.Reason, prefix) {
			out = append(out, ev)
		}
	}
	if len(out) > q.N {
		out = out[len(out)-q.N:]
	}
	return out, nil
}

func (a *daemonAPI) Logs(ctx context.Context, q api.LogQuery, w io.Writer) error {
	// Every secret the daemon knows is redacted from the log, as from
	// everything else it serves.
	red := a.host.Redactor()
	if d := a.dm.Desired(); d != nil && d.Fleet != nil {
		red = red.Merge(d.Fleet.Redactor())
	}
	filter := logFilter(red, q.Grep)
	if q.Follow {
		err := runtime.FollowMerchant(ctx, a.root, q.Merchant, q.N, filter, w)
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: %v", api.ErrNotFound, err)
		}
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	lines, err := runtime.TailMerchant(a.root, q.Merchant, q.N, filter)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %v", api.ErrNotFound, err)
	}
	if err != nil {
		return err
	}
	for _, l := range lines {
		if _, err := io.WriteString(w, l+"\n"); err != nil {
			return err
		}
	}
	return nil
}

func (a *daemonAPI) Subscribe(ctx context.Context) <-chan api.Change { return a.notes.Subscribe(ctx) }

// notifier fans the engine's changes out to subscribers; a send never
// blocks the daemon (a notice that does not fit is dropped).
type notifier struct {
	mu   sync.Mutex
	subs map[chan api.Change]struct{}
}

func (n *notifier) Subscribe(ctx context.Context) <-chan api.Change {
	ch := make(chan api.Change, 64)
	n.mu.Lock()
	if n.subs == nil {
		n.subs = map[chan api.Change]struct{}{}
	}
	n.subs[ch] = struct{}{}
	n.mu.Unlock()
	go func() {
		<-ctx.Done()
		n.mu.Lock()
		delete(n.subs, ch)
		n.mu.Unlock()
		close(ch)
	}()
	return ch
}

func (n *notifier) send(c api.Change) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for ch := range n.subs {
		select {
		case ch <- c:
		default:
		}
	}
}

// serveAPI serves the daemon's API on listen until ctx ends.
func serveAPI(ctx context.Context, listen string, srv *api.Server, log *slog.Logger) (string, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return "", fmt.Errorf("api.listen %s: %w", listen, err)
	}
	go func() {
		if err := srv.Serve(ctx, ln); err != nil {
			log.Error("the API stopped", "err", err)
		}
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
