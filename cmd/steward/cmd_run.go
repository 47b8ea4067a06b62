package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"steward/reconcile"
)

func cmdRun(ctx context.Context, e *env, args []string) int {
	fs := e.flagSet("run", "", `
Runs the daemon: it adopts the merchants already running (checking pid and
process start time), then keeps every merchant converged on the specs. A
process that exits is restarted at once, then with backoff if it keeps
failing (crashloop); spec changes are picked up on every resync and on
SIGHUP, which also reloads the host config.

SIGTERM or SIGINT stops the daemon gracefully and leaves every merchant
running; the next "steward run" adopts them. Logs are structured (text on a
terminal, JSON otherwise) on stderr.`)
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
	l := e.load(*config)
	if l.host == nil {
		renderDiagnostics(e.stderr, l.files, l.diags)
		return exitError
	}
	s, err := e.openStack(ctx, l, "steward run", 0, log)
	if err != nil {
		return e.errorf("%s", err)
	}
	defer s.close()
	host := l.host
	dm := &reconcile.Daemon{Exec: s.exec, Workers: host.Daemon.Workers, Resync: host.Daemon.Resync, Log: log}
	if *workers > 0 {
		dm.Workers = *workers
	}
	dm.Source = func(ctx context.Context) (reconcile.Desired, error) {
		nl := l
		if nl == nil {
			nl = e.load(*config)
		}
		l = nil // the first load is used once; later ones read the files again
		if nl.host != nil && (nl.host.State.Path != host.State.Path || nl.host.Runtime.Root != host.Runtime.Root) {
			log.Warn("state.path and runtime.root changes take effect only when the daemon is restarted")
		}
		if nl.diags.HasErrors() {
			var b bytes.Buffer
			renderDiagnostics(&b, nl.files, nl.diags)
			return reconcile.Desired{}, errors.New(strings.TrimSpace(b.String()))
		}
		return reconcile.Desired{Fleet: nl.fleet, Ports: nl.host.Runtime.Ports}, nil
	}
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
	log.Info("steward daemon starting", "version", version, "config", host.File, "pid", os.Getpid(), "workers", dm.Workers, "resync", dm.Resync.String())
	if err := dm.Run(ctx); err != nil {
		return e.errorf("%s", err)
	}
	fmt.Fprint(e.stderr, "")
	return exitOK
}
