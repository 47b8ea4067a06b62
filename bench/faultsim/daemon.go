package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// daemonProc is one `steward run` child.
type daemonProc struct {
	n       int
	cmd     *exec.Cmd
	pid     int
	started time.Time
	done    chan struct{}
	// intended is set before faultsim ends it; an exit without it is a
	// violation.
	intended atomic.Bool
}

// startDaemonLocked starts `steward run`; s.dmu is held (or not needed:
// nothing else runs yet).
func (s *sim) startDaemonLocked() error {
	logf, err := os.OpenFile(filepath.Join(s.dir, "daemon.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	s.daemons++
	fmt.Fprintf(logf, "=== faultsim: daemon #%d starting at %s\n", s.daemons, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(s.steward, "run", "-config", s.hostFile)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so that a Ctrl-C on faultsim's terminal does
	// not reach it; Pdeathsig, so that it does not outlive faultsim.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := startChild(cmd); err != nil {
		return fmt.Errorf("starting steward run: %w", err)
	}
	d := &daemonProc{n: s.daemons, cmd: cmd, pid: cmd.Process.Pid, started: time.Now(), done: make(chan struct{})}
	if n := s.cfg.daemonNofile; n > 0 {
		lim := unix.Rlimit{Cur: uint64(n), Max: uint64(n)}
		if err := unix.Prlimit(d.pid, unix.RLIMIT_NOFILE, &lim, nil); err != nil {
			s.logf("prlimit NOFILE=%d on the daemon (pid %d): %v", n, d.pid, err)
		}
	}
	s.cur.Store(d)
	go s.watchDaemon(d)
	s.vlogf("daemon #%d started: pid %d", d.n, d.pid)
	return nil
}

// watchDaemon waits for d to exit. An exit faultsim did not cause is a
// violation; the daemon is then started again, as systemd would.
func (s *sim) watchDaemon(d *daemonProc) {
	err := waitChild(d.cmd)
	close(d.done)
	if d.intended.Load() || s.stopping.Load() {
		return
	}
	s.violate("the daemon (#%d, pid %d) exited by itself after %s: %v; its log ends:\n%s",
		d.n, d.pid, time.Since(d.started).Round(time.Millisecond), err, indent(tail(filepath.Join(s.dir, "daemon.log"), 15)))
	// Restart it after a pause (so that a daemon that cannot start does
	// not spin), unless faultsim restarted it meanwhile.
	time.Sleep(time.Second)
	s.dmu.Lock()
	defer s.dmu.Unlock()
	if s.cur.Load() == d && !s.stopping.Load() {
		if err := s.startDaemonLocked(); err != nil {
			s.violate("restarting the daemon: %v", err)
		}
	}
}

// killDaemonLocked SIGKILLs the daemon and waits for it to be gone.
func (s *sim) killDaemonLocked() error {
	d := s.cur.Load()
	if d == nil {
		return nil
	}
	select {
	case <-d.done:
		return nil // it had exited (a violation already)
	default:
	}
	d.intended.Store(true)
	if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	select {
	case <-d.done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("the daemon (pid %d) did not die within 10s of SIGKILL", d.pid)
	}
}

// daemonRunning says whether the current daemon process is alive.
func (s *sim) daemonRunning() bool {
	d := s.cur.Load()
	if d == nil {
		return false
	}
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

// ensureDaemon starts the daemon if none runs.
func (s *sim) ensureDaemon() {
	s.dmu.Lock()
	defer s.dmu.Unlock()
	if !s.daemonRunning() {
		if err := s.startDaemonLocked(); err != nil {
			s.violate("starting the daemon: %v", err)
		}
	}
}

// apiUp says whether the daemon's API answers GET /v1/status with 200.
func (s *sim) apiUp() bool {
	code, _, err := s.apiGet("/v1/status", 2*time.Second)
	return err == nil && code == 200
}

func indent(s string) string {
	out := "    "
	for _, r := range s {
		out += string(r)
		if r == '\n' {
			out += "    "
		}
	}
	return out
}
