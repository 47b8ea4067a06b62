package runtime

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestStartServeLogStop(t *testing.T) {
	port := freePort(t)
	s := helperSpec(t, "merchant", "PORT="+strconv.Itoa(port))
	m := start(t, s)
	p := m.p
	ready := waitLog(t, s.LogDir, `^ready `, 10*time.Second)
	if pid := pidFromLine(t, ready); pid != p.PID {
		t.Fatalf("log says pid %d, Start said %v", pid, p)
	}
	if got, err := greet(port); err != nil || got != "hello m-merchant" {
		t.Fatalf("greet: %q, %v", got, err)
	}
	if got, err := Inspect(p.PID); err != nil || got != p {
		t.Fatalf("Inspect = %v, %v; want %v", got, err, p)
	}
	if !p.Alive() {
		t.Fatal("not alive")
	}
	if sid, err := unix.Getsid(p.PID); err != nil || sid != p.PID {
		t.Errorf("getsid = %d, %v; want its own session %d", sid, err, p.PID)
	}
	if cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", p.PID)); err != nil || cwd != s.WorkDir {
		t.Errorf("cwd = %q, %v; want %q", cwd, err, s.WorkDir)
	}
	if in, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/0", p.PID)); err != nil || in != "/dev/null" {
		t.Errorf("stdin = %q, %v; want /dev/null", in, err)
	}
	fi, err := os.Stat(filepath.Join(s.LogDir, LogFile))
	if err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("current.log: %v, %v; want mode 0640", fi, err)
	}

	begin := time.Now()
	if err := Stop(testCtx(t), p, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(begin); d > 5*time.Second {
		t.Errorf("Stop of a process that exits on SIGTERM took %v", d)
	}
	if p.Alive() {
		t.Fatal("alive after Stop")
	}
	es, err := Wait(testCtx(t), p)
	if err != nil || !es.Known || es.Code != 0 || es.Signal != 0 {
		t.Fatalf("Wait after Stop = %+v, %v; want exit status 0", es, err)
	}
	waitLog(t, s.LogDir, `^terminating$`, 10*time.Second)
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", p.PID)); err == nil {
		if q, err := Inspect(p.PID); err == nil && q == p {
			t.Error("the stopped child was not reaped")
		}
	}
	if err := Stop(testCtx(t), p, time.Second); !errors.Is(err, ErrNotAlive) {
		t.Errorf("second Stop: %v, want ErrNotAlive", err)
	}
}

func TestStopKillsAfterGrace(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
		want syscall.Signal // how the leader ends
	}{
		{"leader ignores SIGTERM", []string{"IGNORE_TERM=1", "SPAWN=1", "CHILD_IGNORE_TERM=1"}, syscall.SIGKILL},
		{"child ignores SIGTERM", []string{"SPAWN=1", "CHILD_IGNORE_TERM=1"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := helperSpec(t, "merchant", tc.env...)
			m := start(t, s)
			waitLog(t, s.LogDir, `^ready `, 10*time.Second)
			child, err := Inspect(pidFromLine(t, waitLog(t, s.LogDir, `^child `, 10*time.Second)))
			if err != nil {
				t.Fatal(err)
			}
			waitLog(t, s.LogDir, `^sleeper `, 10*time.Second) // its SIGTERM disposition is set
			const grace = 300 * time.Millisecond
			begin := time.Now()
			if err := Stop(testCtx(t), m.p, grace); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(begin); d < grace {
				t.Errorf("Stop returned after %v, before the grace period %v", d, grace)
			}
			if m.p.Alive() || child.Alive() {
				t.Fatalf("after Stop: leader alive %v, child alive %v", m.p.Alive(), child.Alive())
			}
			es, err := Wait(testCtx(t), m.p)
			if err != nil || !es.Known || es.Signal != tc.want {
				t.Fatalf("status %+v, %v; want signal %v", es, err, tc.want)
			}
		})
	}
}

// TestMerchantOutlivesStarter starts a merchant from a "mini steward"
// process that then exits or is killed with SIGKILL: the merchant runs on
// in its own session, logging, serving and waitable from here although it
// is not our child.
func TestMerchantOutlivesStarter(t *testing.T) {
	for _, exit := range []bool{true, false} {
		name := map[bool]string{true: "starter exits", false: "starter SIGKILLed"}[exit]
		t.Run(name, func(t *testing.T) {
			port := freePort(t)
			s := helperSpec(t, "merchant", "PORT="+strconv.Itoa(port), "TICK=20")
			js, err := json.Marshal(s)
			if err != nil {
				t.Fatal(err)
			}
			mini := exec.Command(testExe(t))
			mini.Env = []string{helperEnv + "=ministeward", specEnv + "=" + string(js)}
			if exit {
				mini.Env = append(mini.Env, "MINI_EXIT=1")
			}
			mini.Stderr = os.Stderr
			out, err := mini.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := mini.Start(); err != nil {
				t.Fatal(err)
			}
			var p Proc
			if err := json.NewDecoder(bufio.NewReader(out)).Decode(&p); err != nil {
				mini.Process.Kill()
				mini.Wait()
				t.Fatalf("reading the mini steward's Proc: %v", err)
			}
			shim := findShim(t, s.LogDir)
			if shim.PID == 0 {
				t.Fatal("no log shim found")
			}
			t.Cleanup(func() { cleanupProcs(t, p, shim) })
			if !exit {
				mini.Process.Signal(syscall.SIGKILL)
			}
			werr := mini.Wait()
			if exit && werr != nil || !exit && !strings.Contains(fmt.Sprint(werr), "killed") {
				t.Fatalf("mini steward ended with %v", werr)
			}

			if !p.Alive() || !shim.Alive() {
				t.Fatalf("after the starter ended: merchant alive %v, shim alive %v", p.Alive(), shim.Alive())
			}
			for _, q := range []Proc{p, shim} {
				if sid, err := unix.Getsid(q.PID); err != nil || sid != q.PID {
					t.Errorf("getsid(%d) = %d, %v; want its own session", q.PID, sid, err)
				}
				if st, _ := readStat(q.PID); st.PPID == os.Getpid() {
					t.Errorf("%v is a child of the test; the test must see a non-child", q)
				}
			}
			// The log keeps growing after the starter is gone.
			waitLog(t, s.LogDir, `^tick \d+$`, 10*time.Second)
			last, err := TailLines(s.LogDir, 1, nil)
			if err != nil || len(last) != 1 {
				t.Fatalf("TailLines: %q, %v", last, err)
			}
			n := 0
			if t, ok := strings.CutPrefix(last[0], "tick "); ok {
				n, _ = strconv.Atoi(t)
			}
			waitLog(t, s.LogDir, fmt.Sprintf(`^tick %d$`, n+3), 10*time.Second)
			if got, err := greet(port); err != nil || got != "hello m-merchant" {
				t.Fatalf("greet: %q, %v", got, err)
			}

			// Wait on a non-child returns promptly when it dies, via pidfd.
			waited := make(chan ExitStatus, 1)
			go func() {
				es, err := Wait(testCtx(t), p)
				if err != nil {
					t.Error(err)
				}
				waited <- es
			}()
			if err := Stop(testCtx(t), p, 5*time.Second); err != nil {
				t.Fatal(err)
			}
			select {
			case es := <-waited:
				if es.Known {
					t.Errorf("status of a non-child reported as known: %+v", es)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Wait on a non-child did not return after it was stopped")
			}
			if _, err := Wait(testCtx(t), shim); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestPidReuseRefused(t *testing.T) {
	port := freePort(t)
	s := helperSpec(t, "merchant", "PORT="+strconv.Itoa(port))
	m := start(t, s)
	waitLog(t, s.LogDir, `^ready `, 10*time.Second)
	for _, fake := range []Proc{
		{PID: m.p.PID, StartTime: m.p.StartTime + 1},
		{PID: m.p.PID, StartTime: m.p.StartTime - 1},
	} {
		if fake.Alive() {
			t.Errorf("%v is alive", fake)
		}
		if err := Stop(testCtx(t), fake, 0); !errors.Is(err, ErrNotAlive) {
			t.Errorf("Stop(%v) = %v, want ErrNotAlive", fake, err)
		}
		if err := Kill(fake); !errors.Is(err, ErrNotAlive) {
			t.Errorf("Kill(%v) = %v, want ErrNotAlive", fake, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		es, err := Wait(ctx, fake)
		cancel()
		if err != nil || es.Known {
			t.Errorf("Wait(%v) = %+v, %v; want an immediate unknown status", fake, es, err)
		}
	}
	// The real process was not touched: still alive, still serving, and
	// not stopped (a SIGTERM would have made it log "terminating").
	if !m.p.Alive() {
		t.Fatal("the real process died")
	}
	if got, err := greet(port); err != nil || got != "hello m-merchant" {
		t.Fatalf("greet: %q, %v", got, err)
	}
	if lines, _ := TailLines(s.LogDir, 0, nil); slices.Contains(lines, "terminating") {
		t.Fatalf("the real process got SIGTERM: %q", lines)
	}
}

func TestWaitChildExitStatus(t *testing.T) {
	s := helperSpec(t, "exit", "EXIT_CODE=7")
	m := start(t, s)
	begin := time.Now()
	es, err := Wait(testCtx(t), m.p)
	if err != nil {
		t.Fatal(err)
	}
	if !es.Known || es.Code != 7 || es.Signal != 0 {
		t.Fatalf("status %+v, want exit status 7", es)
	}
	if d := time.Since(begin); d > 5*time.Second {
		t.Errorf("Wait took %v", d)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", m.p.PID)); err == nil {
		if q, err := Inspect(m.p.PID); err == nil && q == m.p {
			t.Error("child not reaped by Wait")
		}
	}
	// Every later Wait agrees.
	if again, err := Wait(testCtx(t), m.p); err != nil || again != es {
		t.Errorf("second Wait = %+v, %v; want %+v", again, err, es)
	}
}

func TestWaitCanceled(t *testing.T) {
	s := helperSpec(t, "merchant")
	m := start(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := Wait(ctx, m.p)
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Wait = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return after its context was canceled")
	}
	if !m.p.Alive() {
		t.Fatal("the process died")
	}
}

func TestZombieNotAlive(t *testing.T) {
	s := helperSpec(t, "exit")
	m := start(t, s)
	h, err := openHandle(m.p)
	if err != nil {
		t.Fatal(err)
	}
	defer h.close()
	if h.f == nil {
		t.Fatal("no pidfd: Wait would fall back to polling /proc")
	}
	// Waits in the runtime poller (an unpollable pidfd would fail here),
	// and does not reap.
	if err := h.waitPidfd(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	st, err := readStat(m.p.PID)
	if err != nil || st.State != 'Z' {
		t.Fatalf("stat %+v, %v; want a zombie", st, err)
	}
	if m.p.Alive() {
		t.Fatal("a zombie is alive")
	}
	if q, err := Inspect(m.p.PID); err != nil || q != m.p {
		t.Fatalf("Inspect(zombie) = %v, %v", q, err)
	}
	if es, err := Wait(testCtx(t), m.p); err != nil || !es.Known || es.Code != 0 {
		t.Fatalf("Wait = %+v, %v", es, err)
	}
	if _, err := readStat(m.p.PID); err == nil {
		t.Error("zombie still there after Wait")
	}
}

func TestKillStopped(t *testing.T) {
	s := helperSpec(t, "merchant", "IGNORE_TERM=1")
	m := start(t, s)
	waitLog(t, s.LogDir, `^ready `, 10*time.Second)
	if err := syscall.Kill(m.p.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// Wait until the kernel shows it stopped (waitid WSTOPPED|WNOWAIT).
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, m.p.PID, &info, unix.WSTOPPED|unix.WNOWAIT, nil); err != nil {
		t.Fatal(err)
	}
	if st, _ := readStat(m.p.PID); st.State != 'T' {
		t.Fatalf("state %q, want T (stopped)", st.State)
	}
	if !m.p.Alive() {
		t.Fatal("a stopped process is alive")
	}
	if err := Kill(m.p); err != nil {
		t.Fatal(err)
	}
	es, err := Wait(testCtx(t), m.p)
	if err != nil || !es.Known || es.Signal != syscall.SIGKILL {
		t.Fatalf("status %+v, %v; want killed by SIGKILL", es, err)
	}
}

func TestStopStopped(t *testing.T) {
	s := helperSpec(t, "merchant")
	m := start(t, s)
	waitLog(t, s.LogDir, `^ready `, 10*time.Second)
	if err := syscall.Kill(m.p.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, m.p.PID, &info, unix.WSTOPPED|unix.WNOWAIT, nil); err != nil {
		t.Fatal(err)
	}
	// SIGCONT after SIGTERM lets it shut down cleanly, well within grace.
	if err := Stop(testCtx(t), m.p, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	es, err := Wait(testCtx(t), m.p)
	if err != nil || !es.Known || es.Code != 0 {
		t.Fatalf("status %+v, %v; want a clean exit", es, err)
	}
}

func TestPortHolder(t *testing.T) {
	port := freePort(t)
	if pid, found, err := PortHolder(port); err != nil || found {
		t.Fatalf("before start: PortHolder = %d, %v, %v", pid, found, err)
	}
	if !PortFree(port) {
		t.Fatal("port not free before start")
	}
	s := helperSpec(t, "merchant", "PORT="+strconv.Itoa(port), "SPAWN=1")
	m := start(t, s)
	waitLog(t, s.LogDir, `^ready `, 10*time.Second)
	pid, found, err := PortHolder(port)
	if err != nil || !found || pid != m.p.PID {
		t.Fatalf("PortHolder = %d, %v, %v; want %d", pid, found, err, m.p.PID)
	}
	if PortFree(port) {
		t.Fatal("PortFree while the merchant listens")
	}
	if err := Stop(testCtx(t), m.p, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if pid, found, err := PortHolder(port); err != nil || found {
		t.Fatalf("after Stop: PortHolder = %d, %v, %v", pid, found, err)
	}
	if !PortFree(port) {
		t.Fatal("port not free after Stop")
	}
}

func TestPortHolderSelf(t *testing.T) {
	// An IPv6 wildcard listener (tcp6, dual stack) held by this process.
	l, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	pid, found, err := PortHolder(port)
	if err != nil || !found || pid != os.Getpid() {
		t.Fatalf("PortHolder = %d, %v, %v; want this process %d", pid, found, err, os.Getpid())
	}
}

func TestEnvExact(t *testing.T) {
	t.Setenv("STEWARD_SECRET_TOKEN", "must-not-leak")
	s := helperSpec(t, "env", "PORT=8101", "DATABASE_URL=postgres://x/acme", "LOCALE=zh_CN")
	m := start(t, s)
	if _, err := Wait(testCtx(t), m.p); err != nil {
		t.Fatal(err)
	}
	waitShim(t, m) // all of the log written
	lines, err := TailLines(s.LogDir, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range lines {
		if kv, ok := strings.CutPrefix(l, "env: "); ok {
			got = append(got, kv)
		}
	}
	want := slices.Clone(s.Env)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("environment\n got %q\nwant %q", got, want)
	}
}

func TestStartErrors(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "app.sh")
	os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644)
	os.Mkdir(filepath.Join(dir, "bin"), 0o755)
	r := testRuntime(t)
	base := Spec{Merchant: "acme", WorkDir: filepath.Join(dir, "w"), LogDir: filepath.Join(dir, "l"), ReleaseDir: dir}
	for _, tc := range []struct {
		name string
		argv []string
		rel  string
		want string
	}{
		{"empty", nil, dir, "empty command"},
		{"missing", []string{"bin/nope"}, dir, "no such file"},
		{"missing absolute", []string{"/nonexistent/app"}, dir, "no such file"},
		{"not executable", []string{"app.sh"}, dir, "not executable"},
		{"directory", []string{"bin"}, dir, "not a regular file"},
		{"relative without release", []string{"bin/app"}, "", "no release dir"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := base
			s.Argv, s.ReleaseDir = tc.argv, tc.rel
			_, err := r.Start(context.Background(), s)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "acme") {
				t.Fatalf("Start error %v, want one naming the merchant and saying %q", err, tc.want)
			}
		})
	}
	if _, err := os.Stat(base.LogDir); err == nil {
		t.Error("a failed resolution created the log dir: it should fail before doing anything")
	}
	if _, err := (&Runtime{}).Start(context.Background(), helperSpec(t, "exit")); err == nil {
		t.Error("Start without ShimArgv succeeded")
	}
}

// TestShimHoldsNoStrayFDs checks that the shim holds the pipe's read end as
// stdin, /dev/null as stdout and stderr, the log file, and nothing else that
// could keep a pipe or socket (or a directory of the test) alive.
func TestShimHoldsNoStrayFDs(t *testing.T) {
	// A descriptor without close-on-exec, as steward may inherit one from
	// whatever started it: neither child may receive it.
	var leak [2]int
	if err := syscall.Pipe2(leak[:], 0); err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(leak[0])
	defer syscall.Close(leak[1])
	leaked, _ := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", leak[0]))
	s := helperSpec(t, "merchant", "TICK=10")
	m := start(t, s)
	waitLog(t, s.LogDir, `^tick 2$`, 10*time.Second)
	if m.shim.PID == 0 {
		t.Fatal("no log shim found")
	}
	dir := fmt.Sprintf("/proc/%d/fd", m.shim.PID)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(s.LogDir, LogFile)
	for _, e := range ents {
		fd, _ := strconv.Atoi(e.Name())
		l, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		switch {
		case fd == 0 && strings.HasPrefix(l, "pipe:"):
		case (fd == 1 || fd == 2) && l == "/dev/null":
		case l == logPath:
		case strings.HasPrefix(l, "anon_inode:"): // the Go runtime's epoll and eventfd
		case strings.HasPrefix(l, "/sys/fs/cgroup/"): // the Go runtime's CPU limit files
		default:
			t.Errorf("shim fd %d -> %s", fd, l)
		}
	}
	for _, pid := range []int{m.p.PID, m.shim.PID} {
		ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, e := range ents {
			if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())); l == leaked {
				t.Errorf("pid %d inherited the starter's %s as fd %s", pid, leaked, e.Name())
			}
		}
	}
	for fd := 0; fd <= 2; fd++ {
		if _, err := os.Readlink(fmt.Sprintf("%s/%d", dir, fd)); err != nil {
			t.Errorf("shim fd %d missing: %v", fd, err)
		}
	}
	// Neither process may keep a descriptor of this (starting) process:
	// the merchant's stdout and stderr are the shim's pipe and nothing else.
	out, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/1", m.p.PID))
	errp, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/2", m.p.PID))
	in, _ := os.Readlink(fmt.Sprintf("%s/0", dir))
	if out != in || errp != in {
		t.Errorf("merchant stdout %s, stderr %s; shim stdin %s", out, errp, in)
	}
}

func TestLookupUser(t *testing.T) {
	cred, err := LookupUser("root")
	if err != nil {
		t.Fatal(err)
	}
	if cred.Uid != 0 || cred.Gid != 0 {
		t.Errorf("root = %+v", cred)
	}
	if byID, err := LookupUser("0"); err != nil || byID.Uid != 0 {
		t.Errorf("LookupUser(\"0\") = %+v, %v", byID, err)
	}
	if _, err := LookupUser("no-such-user-steward"); err == nil {
		t.Error("unknown user found")
	}
}

func BenchmarkStartStop(b *testing.B) {
	r := testRuntime(b)
	s := helperSpec(b, "merchant")
	ctx := context.Background()
	for b.Loop() {
		p, err := r.Start(ctx, s)
		if err != nil {
			b.Fatal(err)
		}
		if err := Stop(ctx, p, 5*time.Second); err != nil {
			b.Fatal(err)
		}
	}
}
