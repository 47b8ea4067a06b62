package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"

	"steward/api"
	"steward/api/dashboard"
	"steward/engine"
	"steward/internal/app"
	"steward/metrics"
	"steward/probe"
	"steward/source"
	"steward/spec"
	"steward/state"
)

func cmdRun(ctx context.Context, e *env, args []string) int {
	fs := e.flagSet("run", "", `
Runs the daemon: it adopts the merchants already running (checking pid and
process start time), then keeps every merchant converged on the specs. A
process that exits is restarted at once, then with backoff if it keeps
failing (crashloop); a merchant that fails its health checks is restarted.
Spec changes are picked up as soon as a spec file is written (a directory
source) or a commit is fetched (git: every poll, or POST /v1/sync), and on
every resync (daemon.resync) and SIGHUP, which also reloads the host config
(except source, state.path, runtime.root, the api block and the router
block, which are read at start: the daemon logs a warning and keeps the
old ones until it is restarted). With a router, the daemon starts or adopts its nginx and keeps the routing
live.

On api.listen the daemon serves the dashboard (/) and its API: status, plan
and apply, sync, each merchant's history and logs, restart, suspend,
resume and rollback, an event stream (GET /v1/events) and Prometheus
metrics (GET /metrics). With api.token set, writes and logs need it. While
it runs, "steward apply", "restart", "suspend", "resume" and "rollback" go
through it; "steward destroy" refuses until it is stopped.

SIGTERM or SIGINT stops the daemon gracefully and leaves every merchant
(and nginx) running; the next "steward run" adopts them. Logs are
structured (text on a terminal, JSON otherwise) on stderr.`)
	config := configFlag(fs)
	workers := fs.Int("workers", 0, "reconcile workers (default: the host config's daemon.workers)")
	level := fs.String("log-level", "info", "log `level`: debug, info, warn or error")
	if pos, code, ok := parse(fs, args); !ok {
		return code
	} else if len(pos) > 0 {
		return e.errorf("run takes no arguments; got %q", pos)
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		return e.errorf("-log-level: %s", err)
	}
	log := newLogger(e.stderr, lv)
	l := e.load(ctx, *config)
	if l.host == nil {
		l.renderDiags(e.stderr)
		return exitError
	}
	a, err := app.Open(ctx, l.host, log, app.Options{Writer: true, Who: "steward run"})
	var locked *state.LockError
	switch {
	case errors.As(err, &locked) && locked.PID != 0 && locked.Who == "steward run":
		return e.errorf("a steward daemon already runs on this state (pid %d, serving on %s); stop it first (kill -TERM %d) to start another", locked.PID, l.host.API.Listen, locked.PID)
	case errors.As(err, &locked) && locked.PID != 0:
		return e.errorf("the state is in use by pid %d (%s); start the daemon once it is done", locked.PID, locked.Who)
	case err != nil:
		return e.errorf("%s", err)
	}
	defer a.Close()
	host := l.host
	l.src = newSource(host, log) // the same source, logging to the daemon's log
	m := metrics.New()
	a.Engine.Metrics = m
	// Status shows each merchant's last event from the start, not only the
	// events this daemon records.
	a.Engine.LoadLastEvents(ctx, 5000)
	dm := &engine.Daemon{Engine: a.Engine, Workers: host.Daemon.Workers, Resync: host.Daemon.Resync, Log: log}
	if *workers > 0 {
		dm.Workers = *workers
	}
	first := true
	dm.Source = func(ctx context.Context) (engine.Desired, error) {
		if first {
			first = false
		} else {
			// Re-read the host config (SIGHUP) and the specs from the same source.
			h, files, diags := e.loadHost(*config, false)
			switch {
			case diags.HasErrors():
				var b bytes.Buffer
				renderDiagnosticsRedacted(&b, files, diags, nil)
				return engine.Desired{}, errors.New(strings.TrimSpace(b.String()))
			case !sameSource(h, host):
				log.Warn("source, state.path and runtime.root changes take effect only when the daemon is restarted")
			default:
				if fixed := fixedSettingsChanged(host, h); len(fixed) > 0 {
					log.Warn("these host config changes take effect only when the daemon is restarted; until then it keeps the old ones", "settings", strings.Join(fixed, ", "))
				}
				l.host = h
			}
			l.diags = diags
			l.reload(ctx)
		}
		if l.diags.HasErrors() {
			var b bytes.Buffer
			l.renderDiags(&b)
			return engine.Desired{}, errors.New(strings.TrimSpace(b.String()))
		}
		return l.desired(), nil
	}
	if g, ok := l.src.(*source.Git); ok {
		dm.Fetch = func(ctx context.Context) error {
			_, err := g.Sync(ctx)
			return err
		}
	}
	// Spec changes (files written, commits pushed) trigger a reload.
	changed := make(chan struct{}, 1)
	go func() {
		if err := l.src.Watch(ctx, changed); err != nil {
			log.Error("watching the spec source failed; changes are picked up on each resync only", "err", err)
		}
	}()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-changed:
				log.Info("specs changed")
				dm.Reload()
			}
		}
	}()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				log.Info("SIGHUP: reloading the host config and specs")
				dm.Reload()
			}
		}
	}()
	dm.Init()
	prober := probe.New()
	var dapi *daemonAPI
	var healthMu sync.Mutex
	lastHealthy := map[string]bool{}
	mon := probe.NewMonitor(prober, probe.MonitorOptions{
		OnUnhealthy: func(r probe.Result) { dm.MarkUnhealthy(r.ID, r.Generation, healthReason(r)) },
		OnResult: func(r probe.Result) {
			m.Probed(r.Latency, r.Healthy)
			if r.Healthy {
				dm.MarkHealthy(r.ID, r.Generation)
			}
			healthMu.Lock()
			was, seen := lastHealthy[r.ID]
			lastHealthy[r.ID] = r.Healthy
			healthMu.Unlock()
			if (!seen || was != r.Healthy) && dapi != nil {
				dapi.notes.send(api.Change{}) // a verdict flipped: the status shows it
			}
		},
	})
	dm.Health = monitorWatch{mon}
	dbw := probe.NewDBWatcher(probe.DBWatcherOptions{OnChange: func(st probe.DBStatus) {
		dm.DatabaseChanged(state.Database{Name: st.Name, Up: st.Up, Since: st.Since, LastError: st.LastError, Latency: st.Latency})
		m.DatabaseUp(st.Name, st.Up)
	}})
	dm.WatchDatabases = true
	dm.OnDesired = func(d engine.Desired) {
		dbw.Set(dbTargets(d))
		a.Engine.SyncRoutes(d)
	}
	if a.Router != nil {
		// A managed nginx is started (or adopted) now and supervised from
		// here on; like the merchants, it keeps running when steward stops.
		if err := a.Router.Ensure(ctx); err != nil {
			log.Error("the router's nginx", "err", err)
		}
		go a.Router.Run(ctx)
		m.RouterHealth(func() (int, int, bool) {
			h := a.Router.Status()
			return h.Reloads + h.Starts, h.Failures, h.Failing
		})
		dm.OnResync = func(ctx context.Context) {
			if d := dm.Desired(); d != nil {
				a.Engine.SyncRoutes(*d)
			}
		}
	}
	if a.Router == nil {
		if lr := app.LeftoverRouter(host, log); lr != nil && lr.Status().Running {
			log.Info("stopping the nginx steward started: the host config has no managed router any more")
			if err := lr.Stop(ctx); err != nil {
				log.Error("stopping the nginx no router asks for any more", "err", err)
			}
		}
	}
	go mon.Run(ctx)
	go dbw.Run(ctx)
	dapi = &daemonAPI{dm: dm, x: a.Engine, prober: prober, mon: mon, root: host.Runtime.Root, router: a.Router, host: host}
	a.Engine.Notify = func(ev *state.Event) { dapi.notes.send(api.Change{Event: ev}) }
	started, stopped := a.Engine.OnStarted, a.Engine.OnStopped
	a.Engine.OnStarted = func(id string, p engine.Proc, port int, path string, h spec.Health) {
		started(id, p, port, path, h)
		dapi.notes.send(api.Change{})
	}
	a.Engine.OnStopped = func(id string) { stopped(id); dapi.notes.send(api.Change{}) }
	token, err := host.API.Token.Value()
	if err != nil {
		return e.errorf("%s", err)
	}
	hook, err := host.API.WebhookSecret.Value()
	if err != nil {
		return e.errorf("%s", err)
	}
	srv := &api.Server{Daemon: dapi, Token: token.Reveal(), WebhookSecret: hook.Reveal(), Registry: m.Registry, Log: log, Hosts: apiHosts(host),
		Limits: api.Limits{MaxBody: host.Limits.APIBody}}
	srv.UI = dashboard.New(dapi)
	addr, err := serveAPI(ctx, host.API.Listen, srv, log)
	if err != nil {
		return e.errorf("%s", err)
	}
	m.MerchantStates(func() map[string]int {
		counts := map[string]int{}
		for _, ms := range dapi.status(context.Background(), false).Merchants {
			counts[ms.State]++
		}
		return counts
	})
	// Under systemd (Type=notify): READY once the API listens and state is
	// loaded, and watchdog pings from the daemon's main loop.
	if d := watchdogInterval(e.getenv); d > 0 {
		dm.Watchdog = d
		dm.Heartbeat = func() { sdNotify(e.getenv, "WATCHDOG=1") }
	}
	if err := sdNotify(e.getenv, "READY=1"); err != nil {
		log.Warn("notifying systemd failed", "err", err)
	}
	defer sdNotify(e.getenv, "STOPPING=1")
	log.Info("steward daemon starting", "api", addr, "version", version, "config", host.File, "pid", os.Getpid(), "workers", dm.Workers, "resync", dm.Resync.String())
	if err := dm.Run(ctx); err != nil {
		return e.errorf("%s", err)
	}
	return exitOK
}

// sameSource reports whether two host configs read specs from the same place
// and keep state and processes in the same directories.
func sameSource(a, b *spec.Host) bool {
	if a.State.Path != b.State.Path || a.Runtime.Root != b.Runtime.Root || a.Source.Path != b.Source.Path {
		return false
	}
	if (a.Source.Git == nil) != (b.Source.Git == nil) {
		return false
	}
	return a.Source.Git == nil || *a.Source.Git == *b.Source.Git
}

// fixedSettingsChanged names the settings the daemon reads once, at
// start, that differ between its config a and the reloaded b.
func fixedSettingsChanged(a, b *spec.Host) []string {
	var out []string
	secret := func(s spec.DeferredSecret) string {
		v, err := s.Value()
		if err != nil {
			return "error: " + err.Error()
		}
		return v.Reveal()
	}
	if a.API.Listen != b.API.Listen {
		out = append(out, "api.listen")
	}
	if !slices.Equal(a.API.Hosts, b.API.Hosts) {
		out = append(out, "api.hosts")
	}
	if secret(a.API.Token) != secret(b.API.Token) {
		out = append(out, "api.token")
	}
	if secret(a.API.WebhookSecret) != secret(b.API.WebhookSecret) {
		out = append(out, "api.webhook_secret")
	}
	if (a.Router == nil) != (b.Router == nil) || a.Router != nil && !reflect.DeepEqual(a.Router.Nginx, b.Router.Nginx) {
		out = append(out, "router")
	}
	return out
}

// apiHosts are the host names the API answers to: api.hosts and the host
// of api.listen (when it is a name), which steward's own commands use.
func apiHosts(h *spec.Host) []string {
	hosts := slices.Clone(h.API.Hosts)
	if hn, _, err := net.SplitHostPort(h.API.Listen); err == nil && hn != "" && net.ParseIP(hn) == nil {
		hosts = append(hosts, strings.ToLower(hn))
	}
	return hosts
}
