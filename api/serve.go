package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"syscall"
	"time"
)

// Limits bound what clients can take of the daemon: a client that sends
// slowly, never finishes, or sends too much is cut off, and all of them
// together cannot take more than MaxConns descriptors. Zero fields take
// the defaults below.
type Limits struct {
	// MaxBody is the largest request body, in bytes; larger ones get 413
	// (default DefaultMaxBody; the host config's limits.api_body_size).
	MaxBody int64
	// MaxJSONDepth bounds the nesting of a JSON request body, checked
	// before it is decoded; deeper ones get 400 (default 32).
	MaxJSONDepth int
	// MaxConns caps the connections served at once; a new one beyond it
	// closes the one that has waited longest without a request in
	// progress, or waits for one to end when all are busy (default:
	// RLIMIT_NOFILE's soft limit / 4,
	// at most 256 and at least 8, so the daemon keeps most of its
	// descriptors for processes, probes and state).
	MaxConns int
	// MaxStreams caps the long-lived answers (event streams, log follows)
	// served at once; more get 503 (default MaxConns / 2).
	MaxStreams int
	// ReadHeaderTimeout bounds reading a request's headers (default 5s).
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included
	// (default 30s). Once the body is read a handler may run longer.
	ReadTimeout time.Duration
	// WriteTimeout bounds each write of an answer (default 30s); streams
	// get a new deadline for each event they write.
	WriteTimeout time.Duration
	// IdleTimeout closes a kept-alive connection idle that long (default 60s).
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's headers (default 32 KiB).
	MaxHeaderBytes int
	// KeepAlive is the interval of keep-alive comments on event streams
	// (default 15s).
	KeepAlive time.Duration
}

// Defaults of Limits.
const (
	DefaultMaxBody      = 1 << 20
	DefaultMaxJSONDepth = 32
)

func (l Limits) withDefaults() Limits {
	if l.MaxBody <= 0 {
		l.MaxBody = DefaultMaxBody
	}
	if l.MaxJSONDepth <= 0 {
		l.MaxJSONDepth = DefaultMaxJSONDepth
	}
	if l.MaxConns <= 0 {
		l.MaxConns = DefaultMaxConns()
	}
	if l.MaxStreams <= 0 {
		l.MaxStreams = max(1, l.MaxConns/2)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&l.ReadHeaderTimeout, 5*time.Second)
	def(&l.ReadTimeout, 30*time.Second)
	def(&l.WriteTimeout, 30*time.Second)
	def(&l.IdleTimeout, 60*time.Second)
	def(&l.KeepAlive, 15*time.Second)
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = 32 << 10
	}
	return l
}

// DefaultMaxConns is the connection cap when Limits.MaxConns is not set:
// a quarter of the process's soft RLIMIT_NOFILE, at most 256, at least 8.
func DefaultMaxConns() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 64
	}
	return connCap(rl.Cur)
}

func connCap(soft uint64) int {
	return int(min(256, max(8, soft/4)))
}

// Serve serves the API on ln until ctx ends, then stops: event streams
// and log follows end at once, other requests get 5 seconds to finish.
// It returns nil after a stop for ctx, or the error that ended serving.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.init()
	l := s.lim
	el := newEvictingListener(ln, l.MaxConns)
	hs := &http.Server{
		Handler:           s.Handler(),
		ConnState:         el.connState,
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		WriteTimeout:      l.WriteTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.Log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(el) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serving the API on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		hs.Close()
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// deadlineWriter gives each write of an answer its own deadline.
type deadlineWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

func (d *deadlineWriter) extend() { d.rc.SetWriteDeadline(time.Now().Add(d.timeout)) }

func (d *deadlineWriter) WriteHeader(code int) {
	d.extend()
	d.ResponseWriter.WriteHeader(code)
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	d.extend()
	return d.ResponseWriter.Write(p)
}

func (d *deadlineWriter) Flush() {
	d.extend()
	d.rc.Flush()
}

func (d *deadlineWriter) Unwrap() http.ResponseWriter { return d.ResponseWriter }

func tooLarge(w http.ResponseWriter, limit int64) {
	w.Header().Set("Connection", "close")
	writeJSON(w, http.StatusRequestEntityTooLarge, ErrorBody{Error: fmt.Sprintf("request body larger than %d bytes (the limit is the host config's limits.api_body_size)", limit)})
}

// readBody reads the request body within the limits; when it cannot, it
// has answered (413, 408 or 400) and returns false. Once the body is read
// net/http lifts the read deadline, so a handler may work longer than
// ReadTimeout (a restart waits for the merchant to answer).
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	b, err := io.ReadAll(r.Body)
	var mbe *http.MaxBytesError
	var ne net.Error
	switch {
	case err == nil:
	case errors.As(err, &mbe):
		tooLarge(w, s.lim.MaxBody)
		return nil, false
	case errors.As(err, &ne) && ne.Timeout():
		w.Header().Set("Connection", "close")
		writeJSON(w, http.StatusRequestTimeout, ErrorBody{Error: "the request body did not arrive in time"})
		return nil, false
	default:
		badRequest(w, "reading the request body: %s", err)
		return nil, false
	}
	return b, true
}

// decodeJSON reads the request body as one JSON value into v, checking
// its nesting first; an empty body leaves v as it is when optional. When
// it fails it has answered and returns false.
func (s *Server) decodeJSON(w http.ResponseWriter, r *http.Request, v any, optional bool) bool {
	b, ok := s.readBody(w, r)
	if !ok {
		return false
	}
	if optional && len(bytes.TrimSpace(b)) == 0 {
		return true
	}
	if err := decodeStrict(b, v, s.lim.MaxJSONDepth); err != nil {
		badRequest(w, "bad request body: %s", err)
		return false
	}
	return true
}

// stream takes one of the MaxStreams slots for a long-lived answer; when
// none is free it has answered 503 and returns false. done gives the slot
// back.
//
// When a token is configured, readers without it share half of the slots,
// so that they cannot take the streams the token's holders need. A refused
// stream's connection is closed, so that it holds no connection either.
func (s *Server) stream(w http.ResponseWriter, r *http.Request) (done func(), ok bool) {
	refuse := func(n int) (func(), bool) {
		w.Header().Set("Retry-After", "5")
		w.Header().Set("Connection", "close")
		writeJSON(w, http.StatusServiceUnavailable, ErrorBody{Error: fmt.Sprintf("too many streams open (%d); try again later", n)})
		return nil, false
	}
	public := s.Token != "" && !s.tokenOK(r)
	if public {
		limit := max(1, s.lim.MaxStreams/2)
		if s.publicStreams.Add(1) > int64(limit) {
			s.publicStreams.Add(-1)
			return refuse(limit)
		}
	}
	if s.streams.Add(1) > int64(s.lim.MaxStreams) {
		s.streams.Add(-1)
		if public {
			s.publicStreams.Add(-1)
		}
		return refuse(s.lim.MaxStreams)
	}
	return func() {
		s.streams.Add(-1)
		if public {
			s.publicStreams.Add(-1)
		}
	}, true
}
