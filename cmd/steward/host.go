package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"steward/api"
	"steward/engine"
	"steward/internal/app"
	"steward/probe"
	"steward/reconcile"
	"steward/router"
	"steward/spec"
	"steward/state"
)

// newLogger logs text on a terminal and JSON otherwise.
func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		// Durations read "22ms", not 22000000 (nanoseconds, in JSON).
		if a.Value.Kind() == slog.KindDuration {
			a.Value = slog.StringValue(a.Value.Duration().String())
		}
		return a
	}}
	if f, ok := w.(*os.File); ok && isTerminal(f) {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// desired is the desired state l's fleet describes on l's host.
func (l *loaded) desired() engine.Desired { return app.DesiredFor(l.host, l.fleet) }

// openReader opens l's host read-only: nothing on disk changes.
func (e *env) openReader(ctx context.Context, l *loaded) (*app.App, error) {
	return app.Open(ctx, l.host, newLogger(io.Discard, slog.LevelInfo), app.Options{})
}

// openWriter opens l's host for who, holding the writer lease. When a
// daemon holds it, it returns a client for the daemon instead, so that the
// command goes through it rather than racing it.
func (e *env) openWriter(ctx context.Context, l *loaded, who string, wait time.Duration) (*app.App, *api.Client, error) {
	a, err := app.Open(ctx, l.host, newLogger(io.Discard, slog.LevelInfo), app.Options{Writer: true, Who: who, LeaseWait: wait})
	if c := daemonClient(l, err); c != nil {
		return nil, c, nil
	}
	return a, nil, err
}

// daemonClient returns a client for the daemon that holds the writer
// lease, or nil when err is not "locked by steward run".
func daemonClient(l *loaded, err error) *api.Client {
	var le *state.LockError
	if !errors.As(err, &le) || le.Who != "steward run" {
		return nil
	}
	// A command that does not have the token (the variable is unset)
	// still reaches the daemon; the daemon refuses what needs it.
	tok, _ := l.host.API.Token.Value()
	return api.NewClient(l.host.API.Listen, tok.Reveal())
}

// startRouter makes a command's router work for its duration: a managed
// nginx is started when it does not run, the routes are brought up to
// date, and the router applies changes until the returned stop is called
// (which first waits until every route is live, and returns the error of
// the routing when it is not).
func startRouter(ctx context.Context, a *app.App, d engine.Desired, stderr io.Writer) (stop func() error) {
	if a.Router == nil {
		return func() error { return nil }
	}
	if err := a.Router.Ensure(ctx); err != nil {
		fmt.Fprintf(stderr, "warning: the router's nginx: %v\n", err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { a.Router.Run(rctx); close(done) }()
	a.Engine.SyncRoutes(d)
	return func() error {
		a.Engine.SyncRoutes(d)
		sctx, scancel := context.WithTimeout(ctx, time.Minute)
		err := a.Router.Sync(sctx)
		scancel()
		cancel()
		<-done
		return err
	}
}

// makePlan is the engine's plan for l, plus the routing: a managed nginx
// that steward started and the host config no longer asks for is to be
// stopped (leftover, nil when there is none running).
func makePlan(ctx context.Context, a *app.App, l *loaded) (p *reconcile.Plan, leftover *router.Router) {
	p = a.Engine.Plan(ctx, l.desired(), cliObserve())
	if a.Router == nil {
		if lr := app.LeftoverRouter(l.host, nil); lr != nil {
			if h := lr.Status(); h.Running {
				p.Routing = fmt.Sprintf("stop the nginx steward started (pid %d): the host config has no managed router any more", h.PID)
				leftover = lr
			}
		}
	}
	return p, leftover
}

// cliObserve is how commands without the daemon observe: each database
// checked once, now, and schema versions read by query.
func cliObserve() engine.ObserveOptions {
	return engine.ObserveOptions{Schema: true, CheckDB: func(ctx context.Context, dsn string, timeout time.Duration) error {
		_, err := probe.CheckDB(ctx, dsn, timeout)
		return err
	}}
}

// liveHealth probes a merchant once.
func liveHealth(pr *probe.Prober) func(ctx context.Context, id string, port int, m *spec.Merchant) bool {
	return func(ctx context.Context, id string, port int, m *spec.Merchant) bool {
		path := m.Health.HTTP
		if m.Health.TCP {
			path = ""
		}
		return pr.Probe(ctx, port, path, m.Health.Status, min(m.Health.Timeout, 2*time.Second)) == nil
	}
}
