package probe

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// helperEnv makes the test binary impersonate a merchant process: a tiny
// HTTP server that prints its port and serves GET /health until its stdin
// is closed.
const helperEnv = "STEWARD_PROBE_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "http" {
		os.Exit(helperServer())
	}
	os.Exit(m.Run())
}

func helperServer() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(ln.Addr().(*net.TCPAddr).Port)
	go func() {
		// The parent closing the pipe (or dying) ends the helper.
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	http.Serve(ln, mux)
	return 1
}

// helperProcess starts the test binary as a merchant-like HTTP server and
// returns its pid and port. The process is killed when the test ends.
func helperProcess(t *testing.T) (pid, port int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=http")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// SIGKILL ends a stopped process too.
		cmd.Process.Kill()
		stdin.Close()
		cmd.Wait()
	})
	lines := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		lines <- line
	}()
	select {
	case line := <-lines:
		port, err = strconv.Atoi(strings.TrimSpace(line))
		if err != nil {
			t.Fatalf("helper printed %q: %v", line, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("helper process did not print its port within 10s")
	}
	return cmd.Process.Pid, port
}

// stop sends SIGSTOP to pid and arranges SIGCONT at the end of the test,
// so that cleanup never leaves a stopped process behind.
func stop(t *testing.T, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGCONT) })
}

func syscallCont(pid int) error { return syscall.Kill(pid, syscall.SIGCONT) }

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
