package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/lib/pq"

	"steward/internal/pgtest"
)

// writeTarball writes NAME-VERSION.tar.gz and its .sha256 into dir.
func writeTarball(t *testing.T, dir, name, version string, files map[string]string) {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	dirs := map[string]bool{}
	for _, n := range names {
		if d := filepath.Dir(n); d != "." && !dirs[d] {
			dirs[d] = true
			tw.WriteHeader(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: 0o755})
		}
		mode := int64(0o644)
		if strings.HasPrefix(n, "bin/") {
			mode = 0o755
		}
		tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: mode, Size: int64(len(files[n]))})
		tw.Write([]byte(files[n]))
	}
	tw.Close()
	gz.Close()
	base := fmt.Sprintf("%s-%s.tar.gz", name, version)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, base), buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(buf.Bytes())
	os.WriteFile(filepath.Join(dir, base+".sha256"), []byte(hex.EncodeToString(sum[:])+"  "+base+"\n"), 0o644)
}

var portMu sync.Mutex

// Test ports stay below the kernel's ephemeral range (32768 and up), where
// outgoing connections of other tests (and their TIME_WAIT sockets) would
// make ports look busy.
const testPortLow, testPortHigh = 20000, 32000

var nextPortBase = testPortLow + (os.Getpid()%100)*100

// freePorts returns the first port of n consecutive ports nobody listens on.
func freePorts(t *testing.T, n int) int {
	t.Helper()
	portMu.Lock()
	defer portMu.Unlock()
	for tries := 0; tries < 1000; tries++ {
		base := nextPortBase
		nextPortBase += n + 10
		if nextPortBase+n > testPortHigh {
			nextPortBase = testPortLow
		}
		ok := true
		for p := base; p < base+n && ok; p++ {
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if ok {
			return base
		}
	}
	t.Fatal("no free port range")
	return 0
}

// fleet is a temporary steward setup: host config, specs, state, runtime.
type fleet struct {
	t        *testing.T
	dir      string
	specs    string
	config   string
	low      int
	high     int
	apiPort  int
	dbPrefix string
}

func newFleet(t *testing.T, nports int) *fleet {
	t.Helper()
	low := freePorts(t, nports)
	return newFleetPorts(t, low, low+nports-1)
}

func newFleetPorts(t *testing.T, low, high int) *fleet {
	t.Helper()
	dir := t.TempDir()
	// Merchants run as an unprivileged user when the tests run as root.
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755)
	f := &fleet{t: t, dir: dir, specs: filepath.Join(dir, "specs"), low: low, high: high, apiPort: freePorts(t, 1),
		dbPrefix: fmt.Sprintf("st%d_%d", os.Getpid(), low)}
	// Merchant databases are this fleet's own; they go when the test ends,
	// after the merchants (cleanups run last-registered first).
	t.Cleanup(func() { dropDatabases(t, f.dbPrefix) })
	os.MkdirAll(f.specs, 0o755)
	f.config = filepath.Join(dir, "steward.hcl")
	host := fmt.Sprintf(`source { path = "specs" }
state { path = "state" }
runtime {
  root       = "run"
  ports      = "%d-%d"
  stop_grace = "2s"
  user       = "nobody"
}
daemon { resync = "2s" }
api {
  listen = "127.0.0.1:%d"
}
`, f.low, f.high, f.apiPort)
	if err := os.WriteFile(f.config, []byte(host), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.killAll)
	return f
}

// write writes a spec file. Every merchant gets a database name private to
// this fleet, so that tests never share merchant databases.
func (f *fleet) write(name, body string) {
	f.t.Helper()
	if err := os.WriteFile(filepath.Join(f.specs, name), []byte(f.privateDBs(body)), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

var merchantLine = regexp.MustCompile(`(?m)^merchant "([a-z0-9-]+)" \{\n`)

func (f *fleet) privateDBs(body string) string {
	return merchantLine.ReplaceAllStringFunc(body, func(line string) string {
		id := merchantLine.FindStringSubmatch(line)[1]
		return line + fmt.Sprintf("  db_name = %q\n", f.dbPrefix+"_"+strings.ReplaceAll(id, "-", "_"))
	})
}

// dropDatabases drops the test server's databases named prefix_*.
func dropDatabases(t *testing.T, prefix string) {
	db, err := sql.Open("postgres", pgtest.DSN()+"&connect_timeout=5")
	if err != nil {
		return
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := db.QueryContext(ctx, `SELECT datname FROM pg_database WHERE datname LIKE $1`, prefix+`\_%`)
	if err != nil {
		return
	}
	var names []string
	for rows.Next() {
		var n string
		rows.Scan(&n)
		names = append(names, n)
	}
	rows.Close()
	for _, n := range names {
		if _, err := db.ExecContext(ctx, fmt.Sprintf(`DROP DATABASE IF EXISTS %q WITH (FORCE)`, n)); err != nil {
			t.Logf("dropping test database %s: %v", n, err)
		}
	}
}

// steward runs the CLI in-process against this fleet.
func (f *fleet) steward(args ...string) (string, string, int) {
	f.t.Helper()
	return steward(f.t, nil, append(args[:1:1], append([]string{"-config", f.config}, args[1:]...)...)...)
}

// status returns status -o json.
func (f *fleet) status() statusDoc {
	f.t.Helper()
	out, errs, code := f.steward("status", "-o", "json")
	if code != 0 {
		f.t.Fatalf("status: exit %d: %s", code, errs)
	}
	var doc statusDoc
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		f.t.Fatalf("status JSON: %v\n%s", err, out)
	}
	return doc
}

func (f *fleet) merchant(doc statusDoc, id string) merchantStatus {
	for _, m := range doc.Merchants {
		if m.ID == id {
			return m
		}
	}
	f.t.Fatalf("merchant %s not in status", id)
	return merchantStatus{}
}

// daemon is a `steward run` process (the test binary impersonating steward).
type daemon struct {
	cmd  *exec.Cmd
	logs *bytes.Buffer
	done chan struct{}
}

func (f *fleet) startDaemon() *daemon {
	f.t.Helper()
	return f.startDaemonEnv()
}

// startDaemonEnv starts the daemon with extra environment variables.
func (f *fleet) startDaemonEnv(env ...string) *daemon {
	f.t.Helper()
	return f.startSteward(env, "run", "-config", f.config, "-log-level", "debug")
}

// startSteward starts steward with args in the background, its output
// appended to daemon.log.
func (f *fleet) startSteward(env []string, args ...string) *daemon {
	f.t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), "STEWARD_TEST_MAIN=1"), env...)
	logFile, err := os.OpenFile(filepath.Join(f.dir, "daemon.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		f.t.Fatal(err)
	}
	cmd.Stderr, cmd.Stdout = logFile, logFile
	// Pdeathsig: a test binary that dies (a timeout) takes its daemon along.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	logFile.Close()
	d := &daemon{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(d.done) }()
	f.t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGKILL)
		<-d.done
	})
	return d
}

func (f *fleet) daemonLog() string {
	b, _ := os.ReadFile(filepath.Join(f.dir, "daemon.log"))
	return string(b)
}

// stop ends the daemon with sig and waits for it.
func (d *daemon) stop(t *testing.T, sig syscall.Signal) {
	t.Helper()
	d.cmd.Process.Signal(sig)
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		t.Fatal("daemon did not exit")
	}
}

// waitFor polls cond until it holds or timeout passes. It is for
// conditions outside this process (a port answering, a file appearing)
// that offer no event to wait on.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	delay := 10 * time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(delay)
		delay = min(delay*2, 250*time.Millisecond)
	}
}

var httpClient = &http.Client{Timeout: 2 * time.Second}

// get returns the body of GET path on port, or "" when it does not answer.
func get(port int, path string) string {
	resp, err := httpClient.Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, path))
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	if resp.StatusCode != 200 {
		return ""
	}
	return b.String()
}

// killAll kills every process whose working directory is under the
// fleet's runtime root, so that no merchant outlives its test.
func (f *fleet) killAll() {
	root := filepath.Join(f.dir, "run")
	for _, pid := range processesUnder(root) {
		syscall.Kill(-pid, syscall.SIGKILL)
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// processesUnder lists pids whose cwd is below root.
func processesUnder(root string) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
		if err == nil && strings.HasPrefix(cwd, root+"/") {
			out = append(out, pid)
		}
	}
	return out
}

// merchantPIDs maps merchant id to the pids running in its work dir.
func (f *fleet) merchantPIDs() map[string][]int {
	root := filepath.Join(f.dir, "run", "merchants")
	out := map[string][]int{}
	for _, pid := range processesUnder(root) {
		cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
		rel, _ := filepath.Rel(root, cwd)
		id := strings.Split(rel, "/")[0]
		if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
			if i := strings.LastIndexByte(string(stat), ')'); i > 0 && len(stat) > i+2 && stat[i+2] == 'Z' {
				continue
			}
		}
		out[id] = append(out[id], pid)
	}
	return out
}

// portHolder is the pid listening on port, or 0.
func portHolder(port int) int {
	pid, found, err := runtimePortHolder(port)
	if err != nil || !found {
		return 0
	}
	return pid
}
