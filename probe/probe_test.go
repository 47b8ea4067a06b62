package probe

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// rawServer answers every request on a connection with answer(n), n
// counting the requests on that connection from 1. An empty answer hangs
// (reads on, answers nothing); close closes the connection after
// answering. It counts connections.
type rawServer struct {
	port  int
	conns atomic.Int64
	// ended receives once per connection that ended (the prober closed it).
	ended chan struct{}
}

func newRawServer(t testing.TB, answer func(n int) (string, bool)) *rawServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{port: l.Addr().(*net.TCPAddr).Port, ended: make(chan struct{}, 1000)}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					select {
					case s.ended <- struct{}{}:
					default:
					}
				}()
				defer c.Close()
				buf := make([]byte, 4096)
				for n := 1; ; n++ {
					// One request per read is enough for these tests: the
					// prober writes each request whole and waits.
					if _, err := c.Read(buf); err != nil {
						return
					}
					out, closeAfter := answer(n)
					if out == "" {
						io.Copy(io.Discard, c)
						return
					}
					if _, err := io.WriteString(c, out); err != nil || closeAfter {
						return
					}
				}
			}()
		}
	}()
	return s
}

const okAnswer = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"

func TestProbeAnswers(t *testing.T) {
	big := "HTTP/1.1 200 OK\r\nContent-Length: 70000\r\n\r\n" + strings.Repeat("x", 70000)
	tests := []struct {
		name    string
		answer  string
		path    string
		status  int
		wantErr string // "" for success
	}{
		{name: "200", answer: okAnswer},
		{name: "204 is a 2xx", answer: "HTTP/1.1 204 No Content\r\n\r\n"},
		{name: "500", answer: "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n", wantErr: "GET /health answered 500"},
		{name: "redirect is not followed", answer: "HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n", wantErr: "GET /health answered 302"},
		{name: "expected status", answer: "HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n", status: 503},
		{name: "expected status, other 2xx", answer: okAnswer, status: 204, wantErr: "answered 200"},
		{name: "HTTP/1.0 without length", answer: "HTTP/1.0 200 OK\r\n\r\nok\n"},
		{name: "chunked", answer: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nok\n\r\n0\r\n\r\n"},
		{name: "body over the kept-connection limit", answer: big},
		{name: "not HTTP", answer: "SSH-2.0-OpenSSH_9.2\r\n", wantErr: "GET /health: malformed HTTP"},
		{name: "status line only then close", answer: "HTTP/1.1 200 OK\r\n", wantErr: "GET /health: connection closed without an answer"},
		{name: "path without slash", answer: okAnswer, path: "health", wantErr: `health path "health" does not start with '/'`},
		{name: "path with a space", answer: okAnswer, path: "/a b", wantErr: "contains a space or control character"},
		{name: "path with CRLF", answer: okAnswer, path: "/a\r\nX-Injected: 1", wantErr: "contains a space or control character"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newRawServer(t, func(int) (string, bool) { return tt.answer, strings.HasSuffix(tt.name, "then close") })
			path := tt.path
			if path == "" {
				path = "/health"
			}
			for _, how := range []string{"once", "session"} {
				var err error
				if how == "once" {
					err = New().Probe(context.Background(), srv.port, path, tt.status, time.Second)
				} else {
					s := New().NewSession()
					err = s.Probe(context.Background(), srv.port, path, tt.status, time.Second)
					s.Close()
				}
				switch {
				case tt.wantErr == "" && err != nil:
					t.Errorf("%s: %v, want success", how, err)
				case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
					t.Errorf("%s: error %v, want one containing %q", how, err, tt.wantErr)
				}
			}
		})
	}
}

func TestSessionKeepsItsConnection(t *testing.T) {
	srv := newRawServer(t, func(int) (string, bool) { return okAnswer, false })
	s := New().NewSession()
	defer s.Close()
	for i := range 10 {
		if err := s.Probe(context.Background(), srv.port, "/health", 0, time.Second); err != nil {
			t.Fatalf("probe %d: %v", i, err)
		}
	}
	if n := srv.conns.Load(); n != 1 {
		t.Errorf("10 probes opened %d connections, want 1", n)
	}
}

// A Session asked to probe another port drops the connection to the old
// one.
func TestSessionFollowsAPortChange(t *testing.T) {
	a := newRawServer(t, func(int) (string, bool) { return okAnswer, false })
	b := newRawServer(t, func(int) (string, bool) { return okAnswer, false })
	s := New().NewSession()
	defer s.Close()
	for _, port := range []int{a.port, a.port, b.port, b.port} {
		if err := s.Probe(context.Background(), port, "/health", 0, time.Second); err != nil {
			t.Fatalf("probe of port %d: %v", port, err)
		}
	}
	select {
	case <-a.ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the connection to the old port was not closed within 5s")
	}
	if na, nb := a.conns.Load(), b.conns.Load(); na != 1 || nb != 1 {
		t.Errorf("connections: %d to the old port, %d to the new, want 1 and 1", na, nb)
	}
}

func TestSessionDoesNotKeepWhatItCannotReuse(t *testing.T) {
	tests := []struct {
		name   string
		answer string
	}{
		{"Connection: close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nok\n"},
		{"HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n"},
		{"large body", "HTTP/1.1 200 OK\r\nContent-Length: 70000\r\n\r\n" + strings.Repeat("x", 70000)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newRawServer(t, func(int) (string, bool) { return tt.answer, false })
			s := New().NewSession()
			defer s.Close()
			for i := range 3 {
				if err := s.Probe(context.Background(), srv.port, "/health", 0, time.Second); err != nil {
					t.Fatalf("probe %d: %v", i, err)
				}
			}
			if n := srv.conns.Load(); n != 3 {
				t.Errorf("3 probes opened %d connections, want 3 (one each)", n)
			}
		})
	}
}

// A merchant that closes idle connections (its keep-alive timeout) or was
// restarted on the same port: the probe retries once on a new connection
// and does not fail.
func TestSessionRetriesAConnectionClosedWhileIdle(t *testing.T) {
	t.Run("closed after each answer", func(t *testing.T) {
		srv := newRawServer(t, func(int) (string, bool) { return okAnswer, true })
		s := New().NewSession()
		defer s.Close()
		for i := range 5 {
			if err := s.Probe(context.Background(), srv.port, "/health", 0, time.Second); err != nil {
				t.Fatalf("probe %d: %v", i, err)
			}
		}
		if n := srv.conns.Load(); n != 5 {
			t.Errorf("%d connections for 5 probes, want 5", n)
		}
	})
	t.Run("restarted on the same port", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
		first := &http.Server{Handler: h}
		go first.Serve(l)
		s := New().NewSession()
		defer s.Close()
		if err := s.Probe(context.Background(), port, "/health", 0, time.Second); err != nil {
			t.Fatal(err)
		}
		first.Close() // the process dies: its listener and connections close
		l2, err := net.Listen("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		second := &http.Server{Handler: h}
		go second.Serve(l2)
		defer second.Close()
		if err := s.Probe(context.Background(), port, "/health", 0, time.Second); err != nil {
			t.Fatalf("first probe after the restart: %v", err)
		}
	})
	t.Run("a merchant that never answers a reused connection", func(t *testing.T) {
		srv := newRawServer(t, func(n int) (string, bool) {
			if n == 1 {
				return okAnswer, false
			}
			return "", false // hangs from the second request on
		})
		s := New().NewSession()
		defer s.Close()
		if err := s.Probe(context.Background(), srv.port, "/health", 0, time.Second); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		err := s.Probe(context.Background(), srv.port, "/health", 0, 200*time.Millisecond)
		if err == nil || !strings.Contains(err.Error(), "timed out (200ms)") {
			t.Fatalf("probe of a hung connection: %v, want a timeout", err)
		}
		if el := time.Since(start); el > 2*time.Second {
			t.Errorf("timeout took %s (a timeout must not be retried)", el)
		}
		// The failed connection is not kept: the next probe connects afresh.
		if err := s.Probe(context.Background(), srv.port, "/health", 0, time.Second); err != nil {
			t.Fatalf("probe after the timeout: %v", err)
		}
		if n := srv.conns.Load(); n != 2 {
			t.Errorf("%d connections, want 2", n)
		}
	})
}

func TestProbeRefusedAndCancelled(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	for _, path := range []string{"", "/health"} {
		err := New().Probe(context.Background(), port, path, 0, time.Second)
		if err == nil || !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("path %q: %v, want connection refused", path, err)
		}
	}

	srv := newRawServer(t, func(int) (string, bool) { return "", false })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- New().Probe(ctx, srv.port, "/health", 0, time.Minute) }()
	for srv.conns.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled probe: %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a cancelled probe did not return within 5s")
	}
}

// FuzzProbeAnswer feeds arbitrary answers to a Session (a merchant's answer
// is untrusted input): a probe must never panic, must end within its
// timeout, and must succeed only on a well-formed 2xx.
func FuzzProbeAnswer(f *testing.F) {
	for _, s := range []string{okAnswer, "HTTP/1.0 200 OK\r\n\r\n", "HTTP/1.1 500 x\r\n\r\n", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "HTTP/9.9 200 OK\r\n\r\n", "\r\n\r\n", "HTTP/1.1 2000 OK\r\n\r\n"} {
		f.Add([]byte(s))
	}
	answers := make(chan []byte, 1)
	srv := newRawServer(f, func(int) (string, bool) {
		a := <-answers
		if len(a) == 0 {
			return "\x00", true
		}
		return string(a), true
	})
	f.Fuzz(func(t *testing.T, answer []byte) {
		answers <- answer
		s := New().NewSession()
		defer s.Close()
		start := time.Now()
		err := s.Probe(context.Background(), srv.port, "/health", 0, time.Second)
		if el := time.Since(start); el > 3*time.Second {
			t.Fatalf("probe took %s with a 1s timeout", el)
		}
		if err == nil && !strings.HasPrefix(string(answer), "HTTP/") {
			t.Fatalf("answer %q judged healthy", answer)
		}
	})
}

// The monitor probes each target over one kept connection, and closes it
// when the target's process is replaced, when the target is removed and
// when Run ends.
func TestMonitorKeepsOneConnectionPerTarget(t *testing.T) {
	srv := newRawServer(t, func(int) (string, bool) { return okAnswer, false })
	opts, rec := options(t)
	m := NewMonitor(New(), opts)
	m.Set(Target{ID: "acme", Port: srv.port, HTTP: "/health", Interval: 5 * time.Millisecond, Generation: 1})
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { m.Run(ctx); close(ran) }()
	defer func() { cancel(); <-ran }()
	ended := func(what string) {
		t.Helper()
		select {
		case <-srv.ended:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: the kept connection was not closed within 5s", what)
		}
	}
	for range 20 {
		rec.next(t, "acme", 5*time.Second, healthy)
	}
	if n := srv.conns.Load(); n != 1 {
		t.Fatalf("20 probes of one target opened %d connections, want 1", n)
	}

	m.Set(Target{ID: "acme", Port: srv.port, HTTP: "/health", Interval: 5 * time.Millisecond, Generation: 2})
	ended("new generation")
	rec.next(t, "acme", 5*time.Second, func(r Result) bool { return r.Healthy && r.Generation == 2 })
	for range 5 {
		rec.next(t, "acme", 5*time.Second, healthy)
	}
	if n := srv.conns.Load(); n != 2 {
		t.Fatalf("after a new generation: %d connections in all, want 2", n)
	}

	m.Remove("acme")
	ended("Remove")

	m.Set(Target{ID: "bravo", Port: srv.port, HTTP: "/health", Interval: 5 * time.Millisecond})
	rec.next(t, "bravo", 5*time.Second, healthy)
	cancel()
	<-ran
	ended("Run ending")
}
