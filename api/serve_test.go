package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingListener counts the connections the server holds open.
type countingListener struct {
	net.Listener
	open, peak atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	n := l.open.Add(1)
	for {
		p := l.peak.Load()
		if n <= p || l.peak.CompareAndSwap(p, n) {
			break
		}
	}
	return &countedConn{Conn: c, l: l}, nil
}

type countedConn struct {
	net.Conn
	l    *countingListener
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.l.open.Add(-1) })
	return c.Conn.Close()
}

// serve runs s.Serve on a loopback port until the test ends.
func serve(t *testing.T, s *Server) (addr string, ln *countingListener) {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln = &countingListener{Listener: raw}
	if s.Log == nil {
		s.Log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return within 10s of its context ending")
		}
	})
	return raw.Addr().String(), ln
}

// halfSent opens a connection and sends a request whose body never ends.
func halfSent(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "POST /v1/sync HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"ref\":", addr)
	return c
}

// closedWithin reports whether the server ends c (an answer or EOF) within d.
func closedWithin(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

func TestHalfSentRequestsCannotExhaustTheServer(t *testing.T) {
	const maxConns, held = 4, 10
	readTimeout := 600 * time.Millisecond
	s := &Server{Daemon: newFake(), Limits: Limits{MaxConns: maxConns, ReadHeaderTimeout: 300 * time.Millisecond, ReadTimeout: readTimeout, WriteTimeout: time.Second, IdleTimeout: time.Second}}
	addr, ln := serve(t, s)

	start := time.Now()
	var conns []net.Conn
	for range held {
		conns = append(conns, halfSent(t, addr))
	}
	// A status request waits behind them for a slot, but gets one once
	// the read timeout has cut the held requests off.
	c := NewClient(addr, "")
	var doc Status
	if err := c.Status(context.Background(), &doc); err != nil {
		t.Fatalf("status while %d half-sent requests are held: %v", held, err)
	}
	took := time.Since(start)
	// held requests in waves of maxConns, each cut at readTimeout.
	bound := time.Duration((held+maxConns)/maxConns)*readTimeout + time.Second
	if took > bound {
		t.Errorf("status answered after %s; want within %s", took, bound)
	}
	if doc.Merchants[0].ID != "acme" {
		t.Errorf("status = %+v", doc)
	}
	if p := ln.peak.Load(); p > maxConns {
		t.Errorf("the server held %d connections at once; the cap is %d", p, maxConns)
	}
	// Every held request is cut off, and its slot freed.
	for i, c := range conns {
		if !closedWithin(c, bound) {
			t.Errorf("half-sent request %d still open after %s", i, bound)
		}
	}
	deadline := time.Now().Add(bound)
	for ln.open.Load() > 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := ln.open.Load(); n > 1 {
		t.Errorf("%d connections still open after the held requests were cut off", n)
	}
}

func TestSlowHeadersAreCutOff(t *testing.T) {
	s := &Server{Daemon: newFake(), Limits: Limits{ReadHeaderTimeout: 300 * time.Millisecond, ReadTimeout: 600 * time.Millisecond}}
	addr, _ := serve(t, s)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprint(c, "GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
	// One header byte every 50ms: each arrives well within any per-read
	// timeout, but the headers never end.
	start := time.Now()
	cut := make(chan time.Duration, 1)
	go func() {
		io.Copy(io.Discard, c)
		cut <- time.Since(start)
	}()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case took := <-cut:
			if took > 2*time.Second {
				t.Errorf("a header dribble was cut off after %s", took)
			}
			return
		case <-tick.C:
			if _, err := c.Write([]byte("X")); err != nil {
				return // cut off: the write fails
			}
		case <-timeout:
			t.Fatal("a header dribble is still served after 5s")
		}
	}
}

func rawRequest(t *testing.T, addr, req string) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, req)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestBodiesAreBounded(t *testing.T) {
	d := newFake()
	s := &Server{Daemon: d, Token: "t0ken", Limits: Limits{MaxBody: 1024, MaxJSONDepth: 8}}
	addr, _ := serve(t, s)
	auth := "Authorization: Bearer t0ken\r\n"
	req := func(path, body string) string {
		return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%sContent-Length: %d\r\n\r\n%s", path, auth, len(body), body)
	}
	big := strings.Repeat("x", 2000)
	deep := `{"to":` + strings.Repeat("[", 9) + strings.Repeat("]", 9) + `}`
	tests := []struct {
		name string
		req  string
		code int
		want string
	}{
		{"declared too large", req("/v1/sync", big), 413, "larger than 1024 bytes"},
		{"chunked too large", "POST /v1/merchants/acme/rollback HTTP/1.1\r\nHost: 127.0.0.1\r\n" + auth + "Transfer-Encoding: chunked\r\n\r\n7d0\r\n" + big + "\r\n0\r\n\r\n", 413, "limits.api_body_size"},
		{"too large apply", req("/v1/apply", big), 413, "larger than"},
		{"deep rollback", req("/v1/merchants/acme/rollback", deep), 400, "nested deeper than 8 levels"},
		{"deep apply", req("/v1/apply", `{"revision":`+strings.Repeat("[", 40)+strings.Repeat("]", 40)+`}`), 400, "nested deeper"},
		{"unknown field", req("/v1/merchants/acme/rollback", `{"version":"1"}`), 400, "unknown field"},
		{"trailing data", req("/v1/merchants/acme/rollback", `{"to":"1.0.0"} {}`), 400, "after the JSON value"},
		{"bad version", req("/v1/merchants/acme/rollback", `{"to":"../../x"}`), 400, "a version is"},
		{"small body ok", req("/v1/merchants/acme/rollback", `{"to":"0.9.1"}`), 200, `"version": "0.9.1"`},
		{"empty body ok", req("/v1/merchants/acme/rollback", ""), 200, `"version": "0.9.0"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body := rawRequest(t, addr, tc.req)
			if code != tc.code || !strings.Contains(body, tc.want) {
				t.Errorf("%d %s; want %d with %q", code, body, tc.code, tc.want)
			}
		})
	}
	if got := d.calls(); strings.Join(got, ",") != "rollback acme 0.9.1,rollback acme " {
		t.Errorf("the daemon was asked for %q; only the two good rollbacks should reach it", got)
	}
}

func TestLongHandlersOutliveTheReadAndWriteTimeouts(t *testing.T) {
	d := newFake()
	d.restartTakes = 800 * time.Millisecond
	s := &Server{Daemon: d, Limits: Limits{ReadTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond}}
	addr, _ := serve(t, s)
	if err := NewClient(addr, "").Restart(context.Background(), "acme"); err != nil {
		t.Fatalf("a restart that takes longer than the timeouts: %v", err)
	}
	// A stream lives past both timeouts and still delivers.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	updates := make(chan Update, 16)
	go NewClient(addr, "").Watch(ctx, "", func(u Update) error { updates <- u; return nil })
	if u := next(t, updates, 2*time.Second); u.Status == nil {
		t.Fatalf("first update %+v; want the status", u)
	}
	time.Sleep(600 * time.Millisecond) // past ReadTimeout and WriteTimeout
	d.change(func(s *Status) { s.Merchants[0].State = "stopped" })
	if u := next(t, updates, 2*time.Second); u.Status == nil || u.Status.Merchants[0].State != "stopped" {
		t.Fatalf("update after the timeouts: %+v", u)
	}
}

func next(t *testing.T, ch <-chan Update, d time.Duration) Update {
	t.Helper()
	select {
	case u := <-ch:
		return u
	case <-time.After(d):
		t.Fatalf("no update within %s", d)
		return Update{}
	}
}

func TestConnCapLeavesMostDescriptors(t *testing.T) {
	for _, tc := range []struct {
		soft uint64
		want int
	}{{1024, 256}, {1 << 20, 256}, {256, 64}, {20, 8}, {0, 8}} {
		if got := connCap(tc.soft); got != tc.want {
			t.Errorf("connCap(%d) = %d, want %d", tc.soft, got, tc.want)
		}
	}
	if n := DefaultMaxConns(); n < 8 || n > 256 {
		t.Errorf("DefaultMaxConns() = %d", n)
	}
}

func TestServeStopsStreamsWithItsContext(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Daemon: newFake()}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, raw) }()
	resp, err := http.Get("http://" + raw.Addr().String() + "/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if line, _ := br.ReadString('\n'); !strings.HasPrefix(line, "retry:") {
		t.Fatalf("stream starts with %q", line)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Serve did not stop within 3s while a stream was open")
	}
	if _, err := io.Copy(io.Discard, br); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Logf("stream ended with %v", err)
	}
}

func TestCheckDepth(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{`{}`, true},
		{`{"a":[1,{"b":[]}]}`, true},
		{`[[[[]]]]`, true},
		{`[[[[[]]]]]`, false},
		{`{"a":"[[[[[[[[[["}`, true},
		{`{"a":"\"[[[[[[[[["}`, true},
		{`{"a":"\\"}`, true},
		{`"\\"[[[[[`, false},
	} {
		err := checkDepth([]byte(tc.in), 4)
		if (err == nil) != tc.ok {
			t.Errorf("checkDepth(%s) = %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
}

// depth is the nesting of a decoded JSON value.
func depth(v any) int {
	d := 0
	switch v := v.(type) {
	case []any:
		for _, e := range v {
			d = max(d, depth(e))
		}
		return d + 1
	case map[string]any:
		for _, e := range v {
			d = max(d, depth(e))
		}
		return d + 1
	}
	return 0
}

func FuzzDecodeStrict(f *testing.F) {
	f.Add([]byte(`{"to":"1.2.0"}`))
	f.Add([]byte(`{"to":"\"[[["}`))
	f.Add([]byte(strings.Repeat("[", 100) + strings.Repeat("]", 100)))
	f.Add([]byte(`{"a":[{"b":[{"c":[{"d":[]}]}]}]}`))
	f.Add(bytes.Repeat([]byte(`{"a":`), 5000))
	f.Fuzz(func(t *testing.T, b []byte) {
		const max = 6
		var v any
		err := decodeStrict(b, &v, max)
		if err == nil && depth(v) > max {
			t.Fatalf("accepted %d levels of nesting; the limit is %d", depth(v), max)
		}
		var w any
		if err != nil && json.Unmarshal(b, &w) == nil && depth(w) <= max && checkDepth(b, max) != nil {
			t.Fatalf("refused valid JSON of depth %d: %v", depth(w), err)
		}
	})
}

func TestHeadersAreBounded(t *testing.T) {
	addr, _ := serve(t, &Server{Daemon: newFake(), Limits: Limits{MaxHeaderBytes: 8 << 10}})
	code, _ := rawRequest(t, addr, "GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "+strings.Repeat("a", 64<<10)+"\r\n\r\n")
	if code != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("64 KiB of headers: %d, want 431", code)
	}
	if code, _ := rawRequest(t, addr, "GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Small: "+strings.Repeat("a", 1<<10)+"\r\n\r\n"); code != http.StatusOK {
		t.Errorf("1 KiB of headers: %d", code)
	}
}

// A page on a name made to resolve to this machine (DNS rebinding) cannot
// reach the API: only IP addresses, localhost and the configured hosts are
// answered, for reads as for writes.
func TestHostHeaderChecked(t *testing.T) {
	d := newFake()
	s := &Server{Daemon: d, Hosts: []string{"steward.example.com"}}
	addr, _ := serve(t, s)
	for _, tc := range []struct {
		host string
		code int
	}{
		{"127.0.0.1", 200},
		{addr, 200},
		{"[::1]:7070", 200},
		{"localhost:7070", 200},
		{"LocalHost", 200},
		{"app.localhost", 200},
		{"steward.example.com", 200},
		{"Steward.Example.COM.:443", 200},
		{"rebind.attacker.example:7070", 421},
		{"127.0.0.1.nip.io", 421},
		{"example.com", 421},
	} {
		for _, req := range []string{
			"GET /v1/status HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
			"POST /v1/merchants/acme/suspend HTTP/1.1\r\nHost: %s\r\nSec-Fetch-Site: same-origin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
		} {
			code, body := rawRequest(t, addr, fmt.Sprintf(req, tc.host))
			if code != tc.code {
				t.Errorf("Host %q: %d %s; want %d", tc.host, code, body, tc.code)
			}
		}
	}
	n := 0
	for _, c := range d.calls() {
		if c == "suspend acme" {
			n++
		}
	}
	if n != 8 {
		t.Errorf("%d suspends reached the daemon, want 8 (one per allowed host)", n)
	}
}

// An unauthorised sync is refused before its body is read: a client that
// sends a body a byte at a time gets 401 at once instead of holding the
// connection for the read timeout.
func TestSyncRefusedBeforeItsBody(t *testing.T) {
	s := &Server{Daemon: newFake(), Token: "secret", Limits: Limits{ReadTimeout: time.Minute}}
	addr, _ := serve(t, s)
	start := time.Now()
	code, _ := rawRequest(t, addr, "POST /v1/sync HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 900\r\n\r\nX")
	if code != http.StatusUnauthorized || time.Since(start) > 2*time.Second {
		t.Errorf("unauthorised sync with a body still arriving: %d after %s; want 401 at once", code, time.Since(start))
	}
}
