package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"steward/runtime"
)

// startLogged starts cmd with stdout and stderr appended to logPath and
// returns a channel that receives its Wait result.
func startLogged(cmd *exec.Cmd, logPath string) (<-chan error, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group: a Ctrl-C on the terminal reaches this driver,
	// which then stops the system in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	done := make(chan error, 1)
	go func() {
		done <- cmd.Wait()
		f.Close()
	}()
	return done, nil
}

// benchSteward measures steward: `steward apply -auto-approve` from an
// empty state for bring-up, then the `steward run` daemon for the idle
// footprint and recovery.
func benchSteward(ctx context.Context, c config, n int, w io.Writer) *Result {
	r := &Result{System: "steward", N: n}
	dir := filepath.Join(c.work, fmt.Sprintf("steward-%d", n))
	host := filepath.Join(dir, "steward.hcl")
	// Last (after the daemon has stopped): every merchant stopped by the
	// process steward recorded for it.
	defer destroySteward(c, host, w)
	ps := ports(c.portBase, n)
	if err := waitPortsFree(ctx, ps, 10*time.Second); err != nil {
		r.fail("%v", err)
		return r
	}
	hostCfg := fmt.Sprintf(`source { path = "specs" }
state  { path = "state" }
runtime {
  root  = "run"
  ports = "%d-%d"
  user  = %q
}
api { listen = "127.0.0.1:%d" }
`, ps[0], ps[len(ps)-1], c.user, c.portBase-1)
	var fleet strings.Builder
	fmt.Fprintf(&fleet, `package "invoicing" {
  source = "file://%s"
  channel "stable" { version = %q }
}

defaults {
  package = "invoicing"
  channel = "stable"
%s}
`, c.packages, c.version, healthBlock(c.health))
	for i, p := range ps {
		fmt.Fprintf(&fleet, "\nmerchant %q { port = %d }\n", merchantID(i), p)
	}
	if err := writeFile(host, hostCfg); err != nil {
		r.fail("%v", err)
		return r
	}
	if err := writeFile(filepath.Join(dir, "specs", "fleet.hcl"), fleet.String()); err != nil {
		r.fail("%v", err)
		return r
	}

	r.QuietBeforePct = waitQuiet(ctx, 15, 90*time.Second, w)
	// Bring-up: apply from an empty state.
	applyLog := filepath.Join(dir, "apply.log")
	apply := exec.Command(c.steward, "apply", "-auto-approve", "-config", host)
	busy := machineBusySince()
	t0 := time.Now()
	applyDone, err := startLogged(apply, applyLog)
	if err != nil {
		r.fail("apply: %v", err)
		return r
	}
	var applyErr error
	applyExited := make(chan struct{})
	go func() {
		applyErr = <-applyDone
		r.BringUpCmdS = time.Since(t0).Seconds()
		if ps := apply.ProcessState; ps != nil {
			r.BringUpCPUS = (ps.UserTime() + ps.SystemTime()).Seconds()
		}
		close(applyExited)
	}()
	bctx, cancel := context.WithTimeout(ctx, c.timeout)
	up, err := waitAllUp(bctx, t0, ps, c.scan)
	cancel()
	r.BringUpBusyPct = busy()
	r.setBringUp(up)
	select {
	case <-applyExited:
	case <-time.After(c.timeout):
		apply.Process.Kill()
		<-applyExited
	}
	if err != nil || applyErr != nil {
		r.fail("bring-up: %v; apply: %v\n%s", err, applyErr, logTail(applyLog, 5))
		return r
	}
	fmt.Fprintf(w, "   bring-up: all %d ports answer after %.2fs (first %.3fs, half %.2fs); apply exited after %.2fs having used %.2fs of CPU\n", n, r.BringUpS, r.BringUpFirstS, r.BringUpMedianS, r.BringUpCmdS, r.BringUpCPUS)

	// The daemon adopts the fleet.
	daemonLog := filepath.Join(dir, "daemon.log")
	daemon := exec.Command(c.steward, "run", "-config", host)
	td := time.Now()
	daemonDone, err := startLogged(daemon, daemonLog)
	if err != nil {
		r.fail("steward run: %v", err)
		return r
	}
	defer stopProcess(daemon, daemonDone, 15*time.Second)
	for {
		b, _ := os.ReadFile(daemonLog)
		if strings.Count(string(b), `"adopted running merchant"`) >= n {
			r.DaemonReadyS = time.Since(td).Seconds()
			break
		}
		select {
		case err := <-daemonDone:
			r.fail("steward run exited: %v\n%s", err, logTail(daemonLog, 5))
			return r
		case <-time.After(20 * time.Millisecond):
		}
		if time.Since(td) > time.Minute || ctx.Err() != nil {
			r.fail("steward run did not adopt %d merchants within 1m\n%s", n, logTail(daemonLog, 5))
			return r
		}
	}
	sleepCtx(ctx, c.settle)
	pid := daemon.Process.Pid
	r.QuietBeforeIdlePct = waitQuiet(ctx, 25, 60*time.Second, w)
	idleFootprint(ctx, c, r, pid, logShims(dir), ps, w)

	// The cost of one full resync (what the daemon does every daemon.resync,
	// 1m by default, which the idle window may not include): SIGHUP
	// reloads the specs and queues every merchant, like the resync tick.
	if ctx.Err() == nil {
		const window = 3 * time.Second
		before, err1 := schedNS(pid)
		daemon.Process.Signal(syscall.SIGHUP)
		sleepCtx(ctx, window)
		after, err2 := schedNS(pid)
		if err1 == nil && err2 == nil {
			used := float64(after-before) / 1e6
			r.ResyncCPUMS = max(0, used-r.IdleCPUPct/100*window.Seconds()*1000)
			fmt.Fprintf(w, "   one full resync (SIGHUP): %.0f ms of CPU\n", r.ResyncCPUMS)
		}
	}

	recovery(ctx, c, r, ps, w)
	if b, err := os.ReadFile(daemonLog); err == nil {
		r.DaemonLogErrors = strings.Count(string(b), `"level":"ERROR"`)
	}
	return r
}

// benchSupervisord measures supervisord 4 running the same app binary (from
// the same tarball) with one [program:x] per merchant.
func benchSupervisord(ctx context.Context, c config, n int, w io.Writer) *Result {
	r := &Result{System: "supervisord", N: n}
	dir := filepath.Join(c.work, fmt.Sprintf("supervisord-%d", n))
	ps := ports(c.portBase, n)
	if err := waitPortsFree(ctx, ps, 10*time.Second); err != nil {
		r.fail("%v", err)
		return r
	}
	bin, err := exec.LookPath("supervisord")
	if err != nil {
		r.fail("supervisord is not installed: %v", err)
		return r
	}
	for _, d := range []string{"logs", "work"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			r.fail("%v", err)
			return r
		}
	}
	var conf strings.Builder
	fmt.Fprintf(&conf, `[unix_http_server]
file=%[1]s/supervisor.sock
chmod=0700

[supervisord]
logfile=%[1]s/supervisord.log
pidfile=%[1]s/supervisord.pid
childlogdir=%[1]s/logs
nodaemon=true
minfds=%[2]d
minprocs=%[3]d

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://%[1]s/supervisor.sock
`, dir, max(1024, 4*n+256), max(200, 2*n+100))
	for i, p := range ps {
		id := merchantID(i)
		fmt.Fprintf(&conf, `
[program:%[1]s]
command=%[2]s --port=%[3]d
environment=PORT="%[3]d",MERCHANT="%[1]s"
directory=%[4]s/work
user=%[5]s
autostart=true
autorestart=true
startsecs=1
startretries=3
stopsignal=TERM
stopwaitsecs=10
redirect_stderr=true
stdout_logfile=%[4]s/logs/%[1]s.log
stdout_logfile_maxbytes=10MB
stdout_logfile_backups=5
`, id, c.app, p, dir, c.user)
	}
	confPath := filepath.Join(dir, "supervisord.conf")
	if err := writeFile(confPath, conf.String()); err != nil {
		r.fail("%v", err)
		return r
	}
	r.QuietBeforePct = waitQuiet(ctx, 15, 90*time.Second, w)
	supLog := filepath.Join(dir, "supervisord.out")
	sup := exec.Command(bin, "-c", confPath, "-n")
	sup.Dir = dir
	busy := machineBusySince()
	t0 := time.Now()
	supDone, err := startLogged(sup, supLog)
	if err != nil {
		r.fail("supervisord: %v", err)
		return r
	}
	// supervisord stops its programs on SIGTERM; give it time for N.
	defer stopSupervisord(sup, supDone, 60*time.Second, w)
	bctx, cancel := context.WithTimeout(ctx, c.timeout)
	up, err := waitAllUp(bctx, t0, ps, c.scan)
	cancel()
	r.BringUpBusyPct = busy()
	r.setBringUp(up)
	if err != nil {
		r.fail("bring-up: %v\n%s", err, logTail(filepath.Join(dir, "supervisord.log"), 5))
		return r
	}
	if t, err := cpuTicks(sup.Process.Pid); err == nil {
		r.BringUpCPUS = float64(t) / float64(clockTicks)
	}
	fmt.Fprintf(w, "   bring-up: all %d ports answer after %.2fs (first %.3fs, half %.2fs); supervisord used %.2fs of CPU\n", n, r.BringUpS, r.BringUpFirstS, r.BringUpMedianS, r.BringUpCPUS)
	// startsecs=1: a program is RUNNING one second after it started; the
	// settle time covers that.
	sleepCtx(ctx, max(c.settle, 2*time.Second))
	r.QuietBeforeIdlePct = waitQuiet(ctx, 25, 60*time.Second, w)
	idleFootprint(ctx, c, r, sup.Process.Pid, nil, ps, w)
	recovery(ctx, c, r, ps, w)
	return r
}

// healthBlock is a defaults health block with body, or nothing.
func healthBlock(body string) string {
	if body == "" {
		return ""
	}
	return "  health {\n    " + body + "\n  }\n"
}

// destroySteward stops every merchant of the steward fleet configured by
// host, each by the process steward recorded for it (steward destroy).
func destroySteward(c config, host string, w io.Writer) {
	if _, err := os.Stat(filepath.Join(filepath.Dir(host), "state")); err != nil {
		return // never applied
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, c.steward, "destroy", "-auto-approve", "-config", host).CombinedOutput(); err != nil {
		fmt.Fprintf(w, "   cleanup: steward destroy: %v\n%s\n", err, strings.TrimSpace(string(out)))
	}
}

// stopSupervisord stops supervisord, which stops its programs; when it has
// to be killed, its programs (its children when it was asked to stop, by
// pid and start time) are killed after it.
func stopSupervisord(sup *exec.Cmd, done <-chan error, grace time.Duration, w io.Writer) {
	if sup == nil || sup.Process == nil {
		return
	}
	programs := childrenOf(sup.Process.Pid)
	sup.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return
	case <-time.After(grace):
	}
	sup.Process.Kill()
	<-done
	n := 0
	for _, p := range programs {
		if now, err := runtime.Inspect(p.PID); err == nil && now.StartTime == p.StartTime {
			syscall.Kill(p.PID, syscall.SIGKILL)
			n++
		}
	}
	fmt.Fprintf(w, "   cleanup: supervisord did not stop within %s; killed it and %d of its programs\n", grace, n)
}
