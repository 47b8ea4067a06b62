package runtime

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// onceMain is a one-off command for RunOnce: it prints its working
// directory and environment, $LINES numbered lines, "oops" on stderr,
// optionally starts a child that sleeps ($SPAWN=1, printing "child PID"),
// hangs ($HANG=1), and exits with $EXIT_CODE.
func onceMain() int {
	wd, _ := os.Getwd()
	fmt.Printf("cwd: %s\n", wd)
	for _, kv := range os.Environ() {
		fmt.Printf("env: %s\n", kv)
	}
	n, _ := strconv.Atoi(os.Getenv("LINES"))
	for i := 1; i <= n; i++ {
		fmt.Printf("line %08d ..............................\n", i)
	}
	fmt.Fprintln(os.Stderr, "oops")
	if os.Getenv("SPAWN") == "1" {
		exe, _ := os.Executable()
		p, err := os.StartProcess(exe, []string{exe}, &os.ProcAttr{
			Env:   []string{helperEnv + "=sleeper", "GORACE=atexit_sleep_ms=0"},
			Files: []*os.File{nil, os.Stdout, os.Stderr},
		})
		if err != nil {
			fmt.Println("spawn:", err)
			return 1
		}
		fmt.Printf("child %d\n", p.Pid)
	}
	if os.Getenv("HANG") == "1" {
		block()
	}
	code, _ := strconv.Atoi(os.Getenv("EXIT_CODE"))
	return code
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestRunOnce(t *testing.T) {
	s := helperSpec(t, "once", "EXIT_CODE=3", "SECRET_NAME=acme-db")
	out, err := RunOnce(testCtx(t), s, 10*time.Second, false)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("RunOnce: %v, want exit status 3", err)
	}
	work, _ := filepath.Abs(s.WorkDir)
	if !strings.Contains(out, "cwd: "+work+"\n") || !strings.Contains(out, "oops\n") {
		t.Errorf("output does not show the work dir and stderr:\n%s", out)
	}
	var env []string
	for _, l := range strings.Split(out, "\n") {
		if kv, ok := strings.CutPrefix(l, "env: "); ok {
			env = append(env, kv)
		}
	}
	want := slices.Clone(s.Env)
	slices.Sort(env)
	slices.Sort(want)
	if !slices.Equal(env, want) {
		t.Errorf("environment\n got %q\nwant %q", env, want)
	}
	// The log frames the output.
	log := readFile(t, filepath.Join(s.LogDir, LogFile))
	wantLog := "steward: running " + strings.Join(s.Argv, " ") + "\n" + out + "steward: " + s.Argv[0] + " failed: exit status 3\n"
	if log != wantLog {
		t.Errorf("log:\n%s\nwant:\n%s", log, wantLog)
	}

	// Quiet: nothing more in the log.
	s.Env = append(s.Env[:len(s.Env):len(s.Env)], "EXIT_CODE=0")
	if _, err := RunOnce(testCtx(t), s, 10*time.Second, true); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(s.LogDir, LogFile)); got != log {
		t.Errorf("a quiet run wrote to the log:\n%s", strings.TrimPrefix(got, log))
	}
}

// Only the end of a long output is returned; the log gets all of it.
func TestRunOnceBoundsOutput(t *testing.T) {
	const lines = 20000 // 50 bytes each: 1 MB
	s := helperSpec(t, "once", "LINES="+strconv.Itoa(lines))
	out, err := RunOnce(testCtx(t), s, 20*time.Second, false)
	if err != nil {
		t.Fatal(err)
	}
	first, rest, _ := strings.Cut(out, "\n")
	if !strings.HasPrefix(first, "[") || !strings.HasSuffix(first, " bytes of output left out]") {
		t.Errorf("output starts with %q, want the bytes left out", first)
	}
	if len(rest) > RunOutputMax || !strings.HasSuffix(out, fmt.Sprintf("line %08d ..............................\noops\n", lines)) {
		t.Errorf("output: %d bytes, ends with %q", len(rest), out[max(0, len(out)-80):])
	}
	log := readFile(t, filepath.Join(s.LogDir, LogFile))
	if strings.Count(log, "\nline ") != lines {
		t.Errorf("the log has %d of %d lines", strings.Count(log, "\nline "), lines)
	}
}

// A command that outlasts its timeout is killed with its whole process
// group, promptly.
func TestRunOnceTimeoutKillsGroup(t *testing.T) {
	s := helperSpec(t, "once", "SPAWN=1", "HANG=1")
	start := time.Now()
	out, err := RunOnce(testCtx(t), s, 500*time.Millisecond, false)
	took := time.Since(start)
	if err == nil || err.Error() != "timed out after 500ms" {
		t.Fatalf("RunOnce: %v, want a timeout", err)
	}
	if took > 5*time.Second {
		t.Errorf("returned after %s", took)
	}
	var child int
	for _, l := range strings.Split(out, "\n") {
		if n, ok := strings.CutPrefix(l, "child "); ok {
			child, _ = strconv.Atoi(n)
		}
	}
	if child == 0 {
		t.Fatalf("no child in the output:\n%s", out)
	}
	// The child was in the command's group: killed too (a zombie until
	// init reaps it, which Check counts as dead).
	ctx := testCtx(t)
	for {
		p := Proc{PID: child}
		if st, err := readStat(child); err == nil {
			p.StartTime = st.StartTime
		}
		if l, _ := p.Check(); l == Dead {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the command's child %d survived the timeout", child)
		case <-time.After(10 * time.Millisecond):
		}
	}
	if log := readFile(t, filepath.Join(s.LogDir, LogFile)); !strings.HasSuffix(log, "failed: timed out after 500ms\n") {
		t.Errorf("log ends with %q", log[max(0, len(log)-100):])
	}
}

// What Preflight refuses is not run.
func TestRunOncePreflight(t *testing.T) {
	s := helperSpec(t, "once", "BAD=a\x00b")
	_, err := RunOnce(testCtx(t), s, time.Second, false)
	if !errors.Is(err, ErrPreflight) {
		t.Fatalf("RunOnce: %v, want ErrPreflight", err)
	}
	if _, err := os.Stat(s.LogDir); err == nil {
		t.Error("a refused run created the log dir")
	}
}

// steward appends to a log file in a directory the merchant's user owns:
// a link planted there is not written through.
func TestRunOnceDoesNotFollowLinks(t *testing.T) {
	s := helperSpec(t, "once")
	target := filepath.Join(t.TempDir(), "elsewhere")
	if err := os.WriteFile(target, []byte("precious\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(s.LogDir, 0o750); err != nil {
		t.Fatal(err)
	}
	for _, link := range []func(old, new string) error{os.Symlink, os.Link} {
		os.Remove(filepath.Join(s.LogDir, LogFile))
		if err := link(target, filepath.Join(s.LogDir, LogFile)); err != nil {
			t.Fatal(err)
		}
		out, err := RunOnce(testCtx(t), s, 10*time.Second, false)
		if err != nil || !strings.Contains(out, "oops") {
			t.Fatalf("RunOnce: %q, %v", out, err)
		}
		if got := readFile(t, target); got != "precious\n" {
			t.Errorf("written through a link: %q", got)
		}
	}
}
