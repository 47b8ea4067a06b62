package runtime

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"steward/runtime/logshim"
)

// The test binary impersonates the processes the tests need, as the os/exec
// tests of the standard library do: the log shim when its first argument is
// shimArg (exactly as cmd/steward's hidden subcommand would run it), and
// test merchants when helperEnv names a mode.
const (
	shimArg   = "__logshim"
	helperEnv = "STEWARD_RUNTIME_HELPER"
	specEnv   = "STEWARD_RUNTIME_SPEC"
)

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == shimArg {
		os.Exit(logshim.Run(os.Args[2:], os.Stdin))
	}
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helperMain(mode))
	}
	os.Exit(m.Run())
}

// helperMain runs a helper mode and returns its exit code.
func helperMain(mode string) int {
	switch mode {
	case "merchant":
		return merchantMain()
	case "sleeper":
		if os.Getenv("IGNORE_TERM") == "1" {
			signal.Ignore(syscall.SIGTERM)
		}
		fmt.Printf("sleeper %d\n", os.Getpid())
		block()
	case "exit":
		fmt.Println("bye")
		code, _ := strconv.Atoi(os.Getenv("EXIT_CODE"))
		return code
	case "env":
		for _, kv := range os.Environ() {
			fmt.Printf("env: %s\n", kv)
		}
		fmt.Println("env done")
		return 0
	case "counter":
		count, _ := strconv.Atoi(os.Getenv("COUNT"))
		for i := 1; i <= count; i++ {
			// One write(2) a line, as an unbuffered logger does.
			fmt.Fprintf(os.Stdout, "n %08d ........................................\n", i)
		}
		return 0
	case "ministeward":
		return miniStewardMain()
	case "nofds":
		return noFDsMain()
	case "once":
		return onceMain()
	}
	fmt.Fprintf(os.Stderr, "unknown helper mode %q\n", mode)
	return 2
}

func block() {
	for {
		time.Sleep(time.Hour)
	}
}

// merchantMain is a test merchant: it listens on $PORT (answering every
// connection with "hello $MERCHANT"), prints "ready", prints "tick N" every
// $TICK milliseconds, optionally spawns a child ($SPAWN=1; the child
// ignores SIGTERM when $CHILD_IGNORE_TERM=1), and exits 0 on SIGTERM unless
// $IGNORE_TERM=1.
func merchantMain() int {
	if os.Getenv("IGNORE_TERM") == "1" {
		signal.Ignore(syscall.SIGTERM)
	} else {
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM)
		go func() {
			<-c
			fmt.Println("terminating")
			os.Exit(0)
		}()
	}
	if os.Getenv("SPAWN") == "1" {
		exe, _ := os.Executable()
		p, err := os.StartProcess(exe, []string{exe}, &os.ProcAttr{
			Env:   []string{helperEnv + "=sleeper", "GORACE=atexit_sleep_ms=0", "IGNORE_TERM=" + os.Getenv("CHILD_IGNORE_TERM")},
			Files: []*os.File{nil, os.Stdout, os.Stderr},
		})
		if err != nil {
			fmt.Println("spawn:", err)
			return 1
		}
		fmt.Printf("child %d\n", p.Pid)
	}
	if port := os.Getenv("PORT"); port != "" {
		l, err := net.Listen("tcp", "127.0.0.1:"+port)
		if err != nil {
			fmt.Println("listen:", err)
			return 1
		}
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				fmt.Fprintf(c, "hello %s\n", os.Getenv("MERCHANT"))
				c.Close()
			}
		}()
	}
	fmt.Printf("ready %d\n", os.Getpid())
	if ms, _ := strconv.Atoi(os.Getenv("TICK")); ms > 0 {
		for i := 1; ; i++ {
			time.Sleep(time.Duration(ms) * time.Millisecond)
			fmt.Printf("tick %d\n", i)
		}
	}
	block()
	return 0
}

// miniStewardMain starts the Spec in $STEWARD_RUNTIME_SPEC, prints the Proc
// as JSON, and then exits ($MINI_EXIT=1) or waits to be killed.
func miniStewardMain() int {
	var s Spec
	if err := json.Unmarshal([]byte(os.Getenv(specEnv)), &s); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	exe, _ := os.Executable()
	r := &Runtime{ShimArgv: []string{exe, shimArg}}
	p, err := r.Start(context.Background(), s)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	json.NewEncoder(os.Stdout).Encode(p)
	if os.Getenv("MINI_EXIT") == "1" {
		return 0
	}
	block()
	return 0
}

// testExe is the absolute path of the test binary.
func testExe(t testing.TB) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

func testRuntime(t testing.TB) *Runtime {
	return &Runtime{ShimArgv: []string{testExe(t), shimArg}}
}

// helperSpec returns a Spec running the test binary in mode with env
// (KEY=VALUE) added to its environment, in fresh directories.
func helperSpec(t testing.TB, mode string, env ...string) Spec {
	t.Helper()
	dir := t.TempDir()
	exe := testExe(t)
	return Spec{
		Merchant:   "m-" + mode,
		Argv:       []string{filepath.Base(exe), "-test.run=^$"},
		ReleaseDir: filepath.Dir(exe),
		WorkDir:    filepath.Join(dir, "work"),
		LogDir:     filepath.Join(dir, "log"),
		// GORACE: a race-enabled helper would otherwise linger for a second
		// at exit, longer than the grace periods of the tests.
		Env: append([]string{helperEnv + "=" + mode, "MERCHANT=m-" + mode, "GORACE=atexit_sleep_ms=0"}, env...),
	}
}

// started is a merchant started by a test, and its log shim.
type started struct {
	p    Proc
	shim Proc
	spec Spec
}

// start starts s and registers a cleanup that kills the merchant and waits
// for it and its shim, so that nothing outlives the test or writes into its
// temporary directories while they are removed.
func start(t testing.TB, s Spec) started {
	t.Helper()
	p, err := testRuntime(t).Start(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	st := started{p: p, spec: s}
	st.shim = findShim(t, s.LogDir)
	t.Cleanup(func() { cleanupProcs(t, st.p, st.shim) })
	return st
}

// cleanupProcs kills p's group and waits for p and then for shim.
func cleanupProcs(t testing.TB, p, shim Proc) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	Kill(p)
	if _, err := Wait(ctx, p); err != nil {
		t.Errorf("cleanup: wait %v: %v", p, err)
	}
	if shim.PID != 0 {
		if _, err := Wait(ctx, shim); err != nil {
			t.Errorf("cleanup: wait shim %v: %v", shim, err)
		}
	}
}

// findShim finds the log shim writing into logDir by its command line
// (each test has its own log directory). It returns the zero Proc when the
// shim is gone already: a short-lived merchant's shim exits at EOF.
func findShim(t testing.TB, logDir string) Proc {
	t.Helper()
	want := strings.Join(append([]string{testExe(t), shimArg, "-dir", logDir}, ""), "\x00")
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !strings.HasPrefix(string(b), want) {
			continue
		}
		if shim, err := Inspect(pid); err == nil {
			return shim
		}
	}
	return Proc{}
}

// waitShim waits until m's log shim has exited, and so has written all of
// the log.
func waitShim(t testing.TB, m started) {
	t.Helper()
	if m.shim.PID == 0 {
		return
	}
	if _, err := Wait(testCtx(t), m.shim); err != nil {
		t.Fatal(err)
	}
}

// lineWriter sends every line written to it (Follow writes whole lines) on
// a channel.
type lineWriter chan string

func (w lineWriter) Write(b []byte) (int, error) {
	for _, l := range strings.SplitAfter(string(b), "\n") {
		if l != "" {
			w <- strings.TrimSuffix(l, "\n")
		}
	}
	return len(b), nil
}

// waitLog waits, event-driven through TailFollow, for a line of the log in
// dir (present or future) matching re, and returns it.
func waitLog(t testing.TB, dir, re string, timeout time.Duration) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	lines := make(lineWriter, 1024)
	done := make(chan error, 1)
	go func() { done <- TailFollow(ctx, dir, -1, Grep(regexp.MustCompile(re)), lines) }()
	select {
	case l := <-lines:
		cancel()
		<-done
		return l
	case err := <-done:
		all, _ := TailLines(dir, 20, nil)
		t.Fatalf("no log line matching %q in %s: %v; log ends with:\n%s", re, dir, err, strings.Join(all, "\n"))
	}
	return ""
}

// freePort returns a TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// greet connects to port and returns the first line answered.
func greet(port int) (string, error) {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	l, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSuffix(l, "\n"), err
}

// pidFromLine returns the number after the first space of line.
func pidFromLine(t testing.TB, line string) int {
	t.Helper()
	_, n, _ := strings.Cut(line, " ")
	pid, err := strconv.Atoi(n)
	if err != nil {
		t.Fatalf("line %q: %v", line, err)
	}
	return pid
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var _ io.Writer = lineWriter(nil)
