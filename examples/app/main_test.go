package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary run as the app itself, for the signal test.
func TestMain(m *testing.M) {
	if os.Getenv("INVOICING_TEST_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// closedPort returns a local port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	return rec.Code, rec.Body.String()
}

func TestHandlers(t *testing.T) {
	var logs syncBuffer
	a, err := newApp("acme", "", log.New(&logs, "", 0))
	if err != nil {
		t.Fatal(err)
	}
	h := a.handler()
	if code, body := get(t, h, "/health"); code != 200 || body != "ok\n" {
		t.Errorf("/health = %d %q", code, body)
	}
	if code, body := get(t, h, "/version"); code != 200 || body != "dev\n" {
		t.Errorf("/version = %d %q", code, body)
	}
	code, body := get(t, h, "/")
	if code != 200 || body != `{"merchant":"acme","version":"dev","database":"none","schema":null,"schema_needed":3}`+"\n" {
		t.Errorf("/ = %d %q", code, body)
	}
	if code, _ := get(t, h, "/nothere"); code != 404 {
		t.Errorf("/nothere = %d", code)
	}
	// Requests are logged, but not passing health checks.
	for _, want := range []string{"GET /version 200 ", "GET /nothere 404 "} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log %q lacks %q", logs.String(), want)
		}
	}
	if strings.Contains(logs.String(), "/health") {
		t.Errorf("log %q has the passing health check", logs.String())
	}
}

func TestBrokenHealth(t *testing.T) {
	brokenHealth = "true"
	t.Cleanup(func() { brokenHealth = "" })
	a, _ := newApp("acme", "", log.New(io.Discard, "", 0))
	var logs syncBuffer
	a.logger = log.New(&logs, "", 0)
	if code, _ := get(t, a.handler(), "/health"); code != 500 {
		t.Errorf("/health = %d, want 500", code)
	}
	if !strings.Contains(logs.String(), "GET /health 500 ") {
		t.Errorf("a failing health check is not logged: %q", logs.String())
	}
}

// A database that cannot be reached makes / say "down" quickly, leaves
// /health alone, and its DSN and password never reach the log or the answer.
func TestDatabaseDown(t *testing.T) {
	for _, dsn := range []string{
		fmt.Sprintf("postgres://app:s3cret-pw@127.0.0.1:%d/acme?sslmode=disable", closedPort(t)),
		fmt.Sprintf("host=127.0.0.1 port=%d user=app password=s3cret-pw dbname=acme sslmode=disable", closedPort(t)),
	} {
		var logs syncBuffer
		a, err := newApp("acme", dsn, log.New(&logs, "", 0))
		if err != nil {
			t.Fatal(err)
		}
		h := a.handler()
		start := time.Now()
		code, body := get(t, h, "/")
		if code != 200 || !strings.Contains(body, `"database":"down","schema":null,`) {
			t.Errorf("/ = %d %q", code, body)
		}
		if d := time.Since(start); d > dbCheckTimeout+time.Second {
			t.Errorf("the database check took %v", d)
		}
		if code, _ := get(t, h, "/health"); code != 200 {
			t.Errorf("/health = %d with the database down", code)
		}
		if out := logs.String() + body; strings.Contains(out, "s3cret-pw") || !strings.Contains(out, "database down") {
			t.Errorf("log and answer leak the password or lack the reason:\n%s", out)
		}
		a.close()
	}
}

func TestWithConnectTimeout(t *testing.T) {
	tests := []struct{ in, want string }{
		{"postgres://u:p@h/db", "postgres://u:p@h/db?connect_timeout=2"},
		{"postgres://u:p@h/db?sslmode=disable", "postgres://u:p@h/db?connect_timeout=2&sslmode=disable"},
		{"postgresql://h/db?connect_timeout=5", "postgresql://h/db?connect_timeout=5"},
		{"host=h dbname=db", "host=h dbname=db connect_timeout=2"},
		{"host=h connect_timeout=7", "host=h connect_timeout=7"},
		{"host=h connect_timeout = 7", "host=h connect_timeout = 7"},
		{"host=h my_connect_timeout=1", "host=h my_connect_timeout=1 connect_timeout=2"},
	}
	for _, tt := range tests {
		if got := withConnectTimeout(tt.in); got != tt.want {
			t.Errorf("withConnectTimeout(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestRedact(t *testing.T) {
	dsn := "host=h user=u password='p w\\'x' dbname=d"
	msg := redact("failed: "+dsn+" and p w\\'x", secretsOf(dsn))
	if strings.Contains(msg, "p w") {
		t.Errorf("redact left the password: %q", msg)
	}
	u := "postgres://u:pa%20ss@h/d"
	if msg := redact("x pa ss y "+u, secretsOf(u)); strings.Contains(msg, "pa ss") || strings.Contains(msg, "pa%20ss") {
		t.Errorf("redact left the password: %q", msg)
	}
}

func TestUsageErrors(t *testing.T) {
	env := func(string) string { return "" }
	for _, args := range [][]string{{}, {"--port=x"}, {"--port=1", "extra"}} {
		var stderr strings.Builder
		if code := run(context.Background(), args, env, io.Discard, &stderr); code != 2 || stderr.Len() == 0 {
			t.Errorf("run %q = %d, stderr %q; want 2 and a message", args, code, stderr.String())
		}
	}
}

var listeningRE = regexp.MustCompile(`invoicing (\S+) for (\S*) listening on (\S+)`)

// waitListening reads lines until the start line and returns the address.
func waitListening(t *testing.T, r io.Reader) (addr string, rest *bufio.Scanner) {
	t.Helper()
	sc := bufio.NewScanner(r)
	found := make(chan string, 1)
	go func() {
		for sc.Scan() {
			if m := listeningRE.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[3]
				return
			}
		}
		close(found)
	}()
	select {
	case a, ok := <-found:
		if !ok {
			t.Fatal("the app ended before listening")
		}
		return a, sc
	case <-time.After(30 * time.Second):
		t.Fatal("no start line within 30s")
	}
	return "", nil
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The real server: the flag wins over $PORT, and cancelling the context
// (what SIGTERM does) shuts it down.
func TestRunServes(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	env := map[string]string{"PORT": "not-a-port", "MERCHANT": "acme"}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--port=0"}, func(k string) string { return env[k] }, pw, io.Discard)
		pw.Close()
	}()
	addr, sc := waitListening(t, pr)
	go func() { // keep draining the log so the app never blocks on it
		for sc.Scan() {
		}
	}()
	code, body := httpGet(t, "http://"+addr+"/")
	var got map[string]any
	if err := json.Unmarshal([]byte(body), &got); code != 200 || err != nil || got["merchant"] != "acme" || got["version"] != "dev" || got["database"] != "none" || got["schema"] != nil {
		t.Errorf("/ = %d %q", code, body)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("run returned %d", code)
		}
	case <-time.After(shutdownTimeout + 5*time.Second):
		t.Fatal("run did not return after cancel")
	}
}

func TestRunPortFromEnv(t *testing.T) {
	port := closedPort(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, nil, func(k string) string {
			if k == "PORT" {
				return fmt.Sprint(port)
			}
			return ""
		}, pw, io.Discard)
		pw.Close()
	}()
	addr, sc := waitListening(t, pr)
	go func() {
		for sc.Scan() {
		}
	}()
	if want := fmt.Sprintf("127.0.0.1:%d", port); addr != want {
		t.Errorf("listening on %s, want %s", addr, want)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(shutdownTimeout + 5*time.Second):
		t.Fatal("run did not return after cancel")
	}
}

// The process shuts down gracefully on SIGTERM and exits 0.
func TestSIGTERM(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "--port=0")
	cmd.Env = append(os.Environ(), "INVOICING_TEST_MAIN=1", "MERCHANT=acme")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr, sc := waitListening(t, stdout)
	if code, body := httpGet(t, "http://"+addr+"/version"); code != 200 {
		t.Errorf("/version = %d %q", code, body)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var rest []string
	for sc.Scan() {
		rest = append(rest, sc.Text())
	}
	if err := cmd.Wait(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) || ctx.Err() != nil {
			t.Fatalf("app exited with %v (stderr %q)", err, stderr.String())
		}
		t.Fatal(err)
	}
	if log := strings.Join(rest, "\n"); !strings.Contains(log, "GET /version 200") || !strings.HasSuffix(log, "stopped") {
		t.Errorf("log after start:\n%s", log)
	}
}
