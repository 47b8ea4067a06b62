package router

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// requireNginx skips the test when nginx is not installed, and fails it
// instead under CI, so that CI never passes without having run it.
func requireNginx(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		for _, p := range []string{"/usr/sbin/nginx", "/usr/local/sbin/nginx"} {
			if _, serr := os.Stat(p); serr == nil {
				return p
			}
		}
		if os.Getenv("CI") != "" {
			t.Fatalf("nginx is not installed under CI (.ci/run installs it): %v", err)
		}
		t.Skipf("nginx is not installed (apt-get install nginx-light), skipping: %v", err)
	}
	return bin
}

var portMu sync.Mutex

// Test ports stay below the kernel's ephemeral range (32768 and up), where
// outgoing connections of other tests would make ports look busy, and
// outside 8100-8999, the example fleet's range.
const testPortLow, testPortHigh = 20000, 32000

var nextPort = testPortLow + (os.Getpid()%120)*100

// freePort returns a port nobody listened on a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	portMu.Lock()
	defer portMu.Unlock()
	for tries := 0; tries < 2000; tries++ {
		p := nextPort
		nextPort++
		if nextPort >= testPortHigh {
			nextPort = testPortLow
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		l.Close()
		return p
	}
	t.Fatal("no free port")
	return 0
}

// testPrefix returns a directory for nginx's prefix that nginx's workers
// can reach when the tests run as root (they run as nobody then).
func testPrefix(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	return filepath.Join(dir, "router")
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// managed returns a managed Router with its own prefix and port, stopped
// when the test ends.
func managed(t testing.TB, edit func(*Config)) *Router {
	t.Helper()
	bin := requireNginx(t)
	cfg := Config{Mode: Managed, Binary: bin, Listen: "127.0.0.1:" + strconv.Itoa(freePort(t)), Prefix: testPrefix(t),
		RetryAfter: 7, ProxyConnectTimeout: 2 * time.Second, ProxyReadTimeout: 10 * time.Second,
		WorkerShutdownTimeout: 10 * time.Second, Logger: testLogger(t)}
	if os.Geteuid() == 0 {
		cfg.User = "nobody"
	}
	if len(cfg.Prefix) > maxUnixPath-len("/control.sock") { // a long TMPDIR
		cfg.Control = "127.0.0.1:" + strconv.Itoa(freePort(t))
	}
	if edit != nil {
		edit(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := r.Stop(ctx); err != nil {
			t.Errorf("stopping nginx: %v", err)
		}
	})
	return r
}

func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// backend is a merchant instance: an HTTP server on its own port that
// answers with its name.
type backend struct {
	name string
	port int
	srv  *http.Server
	done chan struct{}
}

func newBackend(t testing.TB, name string, h http.Handler) *backend {
	t.Helper()
	var l net.Listener
	var err error
	for range 20 {
		if l, err = net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(freePort(t))); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{name: name, port: l.Addr().(*net.TCPAddr).Port, done: make(chan struct{})}
	if h == nil {
		h = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			w.Header().Set("X-Backend", name)
			fmt.Fprintf(w, "%s host=%s xff=%s proto=%s", name, req.Host, req.Header.Get("X-Forwarded-For"), req.Header.Get("X-Forwarded-Proto"))
		})
	}
	b.srv = &http.Server{Handler: h}
	go func() {
		defer close(b.done)
		b.srv.Serve(l)
	}()
	t.Cleanup(b.close)
	return b
}

// close closes the listener and every connection at once.
func (b *backend) close() {
	b.srv.Close()
	<-b.done
}

// answer is what a request through nginx got.
type answer struct {
	status int
	body   string
	header http.Header
}

// get sends one request for host and path to r's listener, on a fresh
// connection.
func get(t testing.TB, r *Router, method, host, path string) answer {
	t.Helper()
	a, err := tryGet(http.DefaultTransport.(*http.Transport).Clone(), r, method, host, path)
	if err != nil {
		t.Fatalf("%s %s%s: %v", method, host, path, err)
	}
	return a
}

func tryGet(tr *http.Transport, r *Router, method, host, path string) (answer, error) {
	req, err := http.NewRequest(method, "http://"+r.cfg.Listen+path, nil)
	if err != nil {
		return answer{}, err
	}
	req.Host = host
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, err
	}
	return answer{status: resp.StatusCode, body: string(b), header: resp.Header}, nil
}

// wantBackend asserts that host reaches the backend named name.
func wantBackend(t testing.TB, r *Router, host, path, name string) {
	t.Helper()
	a := get(t, r, http.MethodGet, host, path)
	if a.status != http.StatusOK || !strings.HasPrefix(a.body, name+" ") {
		t.Fatalf("GET %s%s: %d %q, want 200 from %s", host, path, a.status, a.body, name)
	}
}

// wantStatus asserts the status of a request to host.
func wantStatus(t testing.TB, r *Router, host, path string, status int) answer {
	t.Helper()
	a := get(t, r, http.MethodGet, host, path)
	if a.status != status {
		t.Fatalf("GET %s%s: %d %q, want %d", host, path, a.status, a.body, status)
	}
	return a
}

func mustApply(t testing.TB, r *Router, routes ...Route) bool {
	t.Helper()
	changed, err := r.Apply(testCtx(t, 30*time.Second), routes)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return changed
}

// masters returns the nginx masters running with r's configuration.
func masters(r *Router) []int {
	var out []int
	procs(func(p proc, st pstat) {
		if r.isOurMaster(p.PID) {
			out = append(out, p.PID)
		}
	})
	return out
}

// waitGone waits, through a pidfd, until p has exited, bounded.
func waitGone(t testing.TB, p proc, d time.Duration) {
	t.Helper()
	fd, err := unix.PidfdOpen(p.PID, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return
		}
		t.Fatalf("pidfd_open %d: %v", p.PID, err)
	}
	defer unix.Close(fd)
	if !p.alive() { // the pid was reused before the pidfd was opened, or p is a zombie
		return
	}
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, int(d/time.Millisecond))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Fatalf("pid %d still alive after %s", p.PID, d)
		}
		return
	}
}

var errNon2xx = errors.New("non-2xx")
