package probe

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Prober probes merchants on the loopback interface.
type Prober struct {
	// Host is the address merchants listen on (default 127.0.0.1).
	Host string
}

// New returns a Prober for merchants listening on 127.0.0.1.
func New() *Prober { return &Prober{Host: "127.0.0.1"} }

// Probe checks once, on a connection of its own that it closes. With an
// empty path it only connects to the port; otherwise it GETs path and
// expects status (any 2xx when status is 0). Redirects are not followed: a
// 3xx is an answer like any other.
func (p *Prober) Probe(ctx context.Context, port int, path string, status int, timeout time.Duration) error {
	s := Session{p: p, once: true}
	defer s.Close()
	return s.Probe(ctx, port, path, status, timeout)
}

// NewSession returns a Session for probing one merchant repeatedly.
func (p *Prober) NewSession() *Session { return &Session{p: p} }

// A Session probes one merchant repeatedly and keeps its HTTP connection
// open between probes. On loopback the TCP handshake and teardown of a
// fresh connection are most of a probe's CPU, and the kernel charges them
// to the prober; over a kept connection a probe is one write and one read.
// Between probes a Session holds one socket and nothing else: no goroutine
// and no buffer (read buffers are pooled), unlike net/http's client, which
// keeps two goroutines and two buffers per idle connection.
//
// When the merchant has closed the kept connection (an idle timeout, a
// restart), the probe is retried once at once on a new connection. A probe
// that times out is not retried, and any failure closes the connection, so
// a hung merchant fails exactly as it would on fresh connections. TCP
// probes (an empty path) always connect afresh: a kept connection would
// prove nothing.
//
// A Session is used by one goroutine at a time.
type Session struct {
	p    *Prober
	once bool // one probe only: ask the merchant to close
	c    net.Conn
	addr string
}

// Close closes the kept connection, if any. The Session stays usable.
func (s *Session) Close() error {
	if s.c == nil {
		return nil
	}
	err := s.c.Close()
	s.c = nil
	return err
}

// maxBody is how much of an answer's body is read so that its connection
// can carry the next probe; a longer body closes the connection instead.
const maxBody = 64 << 10

var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 1024) }}

// Probe checks once, like Prober.Probe, reusing the Session's connection.
func (s *Session) Probe(ctx context.Context, port int, path string, status int, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	host := s.p.Host
	if host == "" {
		host = "127.0.0.1"
	}
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	if path == "" {
		s.Close()
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return fmt.Errorf("tcp %s: %w", addr, simplify(err, ctx, timeout))
		}
		return c.Close()
	}
	what := "GET " + path
	if err := checkPath(path); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if s.c != nil && s.addr != addr {
		s.Close()
	}
	for {
		reused := s.c != nil
		if !reused {
			c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			if err != nil {
				return fmt.Errorf("%s: %w", what, simplify(err, ctx, timeout))
			}
			s.c, s.addr = c, addr
		}
		code, stale, err := s.exchange(ctx, addr, path)
		if err != nil {
			s.Close()
			if stale && reused {
				continue // closed by the merchant while idle: once more, afresh
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return fmt.Errorf("%s: connection closed without an answer", what)
			}
			return fmt.Errorf("%s: %w", what, simplify(err, ctx, timeout))
		}
		if code != status && !(status == 0 && code/100 == 2) {
			return fmt.Errorf("%s answered %d", what, code)
		}
		return nil
	}
}

// exchange sends one request on s.c and reads the answer's status and
// headers, and its body when the connection is to be kept. stale reports a
// failure before any byte of an answer arrived on a connection the merchant
// had already closed (a write refused, or an immediate end of stream).
func (s *Session) exchange(ctx context.Context, addr, path string) (code int, stale bool, err error) {
	c := s.c
	deadline, _ := ctx.Deadline()
	c.SetDeadline(deadline)
	// Cancelling ctx (shutdown) ends the exchange at once.
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	conn := "keep-alive"
	if s.once {
		conn = "close"
	}
	req := "GET " + path + " HTTP/1.1\r\nHost: " + addr + "\r\nUser-Agent: steward-probe\r\nAccept: */*\r\nConnection: " + conn + "\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		return 0, isStale(err), err
	}
	cr := &countingReader{r: c}
	br := readers.Get().(*bufio.Reader)
	br.Reset(cr)
	defer func() {
		br.Reset(nil)
		readers.Put(br)
	}()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, cr.n == 0 && isStale(err), err
	}
	keep := !s.once && !resp.Close
	if keep {
		n, err := io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody+1))
		keep = err == nil && n <= maxBody && br.Buffered() == 0
	}
	resp.Body.Close()
	if !keep {
		s.Close()
	}
	return resp.StatusCode, false, nil
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// isStale reports a write or read refused because the peer had closed the
// connection (http.ReadResponse reports an end of stream as
// io.ErrUnexpectedEOF).
func isStale(err error) bool {
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// checkPath refuses a path that would not make a well-formed request line.
func checkPath(path string) error {
	if !strings.HasPrefix(path, "/") {
		return fmt.Errorf("health path %q does not start with '/'", path)
	}
	for i := 0; i < len(path); i++ {
		if c := path[i]; c <= ' ' || c == 0x7f {
			return fmt.Errorf("health path %q contains a space or control character", path)
		}
	}
	return nil
}

// simplify turns deadline errors into "timed out (2s)" and strips the
// address from network errors (the caller names what was probed).
func simplify(err error, ctx context.Context, timeout time.Duration) error {
	if ctx.Err() == context.Canceled {
		return ctx.Err()
	}
	if ctx.Err() == context.DeadlineExceeded || errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("timed out (%s)", timeout)
	}
	var op *net.OpError
	if errors.As(err, &op) {
		return op.Err
	}
	return err
}
