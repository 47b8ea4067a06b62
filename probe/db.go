package probe

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sort"
	pgdsn "steward/internal/dsn"
	"sync"
	"time"

	"github.com/lib/pq"
)

// Defaults for DBTarget fields left zero (the same as the fleet spec's).
const (
	DefaultDBInterval  = 5 * time.Second
	DefaultDBTimeout   = 2 * time.Second
	DefaultDBDownAfter = 3
	DefaultDBUpAfter   = 2
)

// Flap damping: when a database goes down again less than
// flapWindowIntervals*Interval after it came back up, the successes it needs
// to come up next time double, up to UpAfter<<maxFlapPenalty; they return to
// UpAfter once it has stayed up that long.
const (
	flapWindowIntervals = 20
	maxFlapPenalty      = 4
)

// DBTarget is one database server to watch.
type DBTarget struct {
	Name string
	// DSN is the server's connection string (URL or key=value form). It is
	// a secret: it is never logged or returned, and String, GoString and
	// LogValue leave it out.
	DSN string
	// Interval between checks and Timeout of one check (connect, ping and
	// SELECT 1 together); zero means the defaults.
	Interval, Timeout time.Duration
	// DownAfter consecutive failures make an up database down; UpAfter
	// consecutive successes make a down database up. Zero means the
	// defaults.
	DownAfter, UpAfter int
}

func (t DBTarget) withDefaults() DBTarget {
	if t.Interval <= 0 {
		t.Interval = DefaultDBInterval
	}
	if t.Timeout <= 0 {
		t.Timeout = DefaultDBTimeout
	}
	if t.DownAfter <= 0 {
		t.DownAfter = DefaultDBDownAfter
	}
	if t.UpAfter <= 0 {
		t.UpAfter = DefaultDBUpAfter
	}
	return t
}

// String describes t without its DSN.
func (t DBTarget) String() string {
	return fmt.Sprintf("database %q (interval %s, timeout %s, down after %d, up after %d)", t.Name, t.Interval, t.Timeout, t.DownAfter, t.UpAfter)
}

// GoString is String, so that %#v does not print the DSN either.
func (t DBTarget) GoString() string { return t.String() }

// LogValue logs t without its DSN.
func (t DBTarget) LogValue() slog.Value {
	return slog.GroupValue(slog.String("name", t.Name), slog.Duration("interval", t.Interval), slog.Duration("timeout", t.Timeout))
}

// DBStatus is what is known of one database.
type DBStatus struct {
	Name string
	// Up is meaningful only when Checked.
	Up bool
	// Since is when Up last changed (or was first determined).
	Since time.Time
	// LastError is the last check's error, with secrets removed; "" when
	// the last check succeeded.
	LastError string
	// Latency is how long the last check took.
	Latency time.Duration
	// Checked is set once the state has been determined: at the first
	// successful check, or after DownAfter failed ones.
	Checked bool
}

// DBWatcherOptions configures a DBWatcher. Every field is optional.
type DBWatcherOptions struct {
	// OnChange is called with the new status on each up/down transition,
	// and once when a database's state is first determined. Calls are
	// serialized across all databases. It may call Set and Status.
	OnChange func(DBStatus)
	// Now is the clock for Since (default time.Now).
	Now func() time.Time
}

// DBWatcher checks the reachability of a few database servers, one
// goroutine each, with hysteresis: an up database goes down after DownAfter
// consecutive failed checks and a down one comes up after UpAfter
// consecutive successes (more for a flapping one, see flap damping below).
//
// The first determination is fast and optimistic: the first successful
// check marks a database up at once; a database that never answers is
// marked down after DownAfter failed checks. Until then its status has
// Checked false, and consumers decide what "unknown" means.
//
// Flap damping: when a database goes down again less than 20 Intervals after
// it came back up, the successes it needs to come up next double (up to 16
// times UpAfter), and return to UpAfter once it stays up for 20 Intervals.
// A flapping server therefore stays down instead of toggling every few
// checks.
type DBWatcher struct {
	opts  DBWatcherOptions
	check func(ctx context.Context, dsn string, timeout time.Duration) (time.Duration, error)

	mu       sync.Mutex
	checkers map[string]*dbChecker
	ctx      context.Context // set while Run runs
	wg       sync.WaitGroup
	cbMu     sync.Mutex // serializes OnChange
}

type dbChecker struct {
	t      DBTarget // guarded by DBWatcher.mu
	h      dbHealth // guarded by DBWatcher.mu
	cancel context.CancelFunc
}

// NewDBWatcher returns a watcher with no targets.
func NewDBWatcher(opts DBWatcherOptions) *DBWatcher {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &DBWatcher{opts: opts, check: CheckDB, checkers: map[string]*dbChecker{}}
}

// Set replaces the watched databases. A database with the same name and
// DSN as before keeps its state (new intervals and thresholds apply from its
// next check); a new or changed one starts unknown; a missing one is
// forgotten.
func (w *DBWatcher) Set(targets []DBTarget) {
	w.mu.Lock()
	defer w.mu.Unlock()
	next := make(map[string]*dbChecker, len(targets))
	for _, t := range targets {
		t = t.withDefaults()
		if c := next[t.Name]; c != nil {
			c.t = t // the last of duplicate names wins
			continue
		}
		if c := w.checkers[t.Name]; c != nil && c.t.DSN == t.DSN {
			c.t = t
			next[t.Name] = c
			continue
		}
		next[t.Name] = &dbChecker{t: t, h: dbHealth{st: DBStatus{Name: t.Name}}}
	}
	for name, c := range w.checkers {
		if next[name] != c && c.cancel != nil {
			c.cancel()
		}
	}
	w.checkers = next
	if w.ctx != nil {
		for _, c := range next {
			if c.cancel == nil {
				w.start(c)
			}
		}
	}
}

// start runs c's checker goroutine. Called with w.mu held and w.ctx set.
func (w *DBWatcher) start(c *dbChecker) {
	ctx, cancel := context.WithCancel(w.ctx)
	c.cancel = cancel
	w.wg.Add(1)
	go w.loop(ctx, c)
}

// Run checks the databases until ctx ends, then waits for the checks in
// flight (they are cancelled) and returns nil.
func (w *DBWatcher) Run(ctx context.Context) error {
	w.mu.Lock()
	if w.ctx != nil {
		w.mu.Unlock()
		return errors.New("probe: DBWatcher is already running")
	}
	w.ctx = ctx
	for _, c := range w.checkers {
		w.start(c)
	}
	w.mu.Unlock()

	<-ctx.Done()
	w.mu.Lock()
	w.ctx = nil
	for _, c := range w.checkers {
		c.cancel = nil // restarted by the next Run
	}
	w.mu.Unlock()
	w.wg.Wait()
	return nil
}

// Status returns every database's status, sorted by name.
func (w *DBWatcher) Status() []DBStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]DBStatus, 0, len(w.checkers))
	for _, c := range w.checkers {
		out = append(out, c.h.st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// loop checks one database at its interval (a fixed rate: the next check is
// due an Interval after the last one started) until ctx ends.
func (w *DBWatcher) loop(ctx context.Context, c *dbChecker) {
	defer w.wg.Done()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		w.mu.Lock()
		t := c.t
		w.mu.Unlock()
		start := time.Now()
		latency, err := w.check(ctx, t.DSN, t.Timeout)
		if ctx.Err() != nil {
			return // stopped or removed: the check was cancelled, not failed
		}
		w.mu.Lock()
		changed := c.h.observe(t, latency, err, w.opts.Now())
		st := c.h.st
		w.mu.Unlock()
		if changed && w.opts.OnChange != nil {
			w.cbMu.Lock()
			if ctx.Err() == nil {
				w.opts.OnChange(st)
			}
			w.cbMu.Unlock()
		}
		timer.Reset(max(0, t.Interval-time.Since(start)))
	}
}

// dbHealth is the hysteresis of one database. It does no I/O and reads no
// clock, so tests drive it with exact times.
type dbHealth struct {
	st         DBStatus
	fails, oks int
	// penalty doubles the successes needed to come up (flap damping).
	penalty int
	// recovered is when the database last came up after being down.
	recovered time.Time
}

// observe records one check and reports whether Up changed (or was first
// determined).
func (h *dbHealth) observe(t DBTarget, latency time.Duration, err error, now time.Time) bool {
	h.st.Latency = latency
	window := flapWindowIntervals * t.Interval
	if err == nil {
		h.fails, h.st.LastError = 0, ""
		h.oks++
		switch {
		case !h.st.Checked:
			h.st.Up, h.st.Checked, h.st.Since = true, true, now
			return true
		case h.st.Up:
			if h.penalty > 0 && now.Sub(h.recovered) >= window {
				h.penalty = 0
			}
		case h.oks >= t.UpAfter<<h.penalty:
			h.st.Up, h.st.Since, h.recovered = true, now, now
			return true
		}
		return false
	}
	h.oks = 0
	h.fails++
	h.st.LastError = err.Error()
	if h.fails < t.DownAfter || (h.st.Checked && !h.st.Up) {
		return false
	}
	if h.st.Checked && !h.recovered.IsZero() && now.Sub(h.recovered) < window {
		h.penalty = min(h.penalty+1, maxFlapPenalty)
	}
	h.st.Up, h.st.Checked, h.st.Since = false, true, now
	return true
}

// CheckDB connects to the database at dsn, pings it, runs SELECT 1 and
// closes the connection, all within timeout (default DefaultDBTimeout), and
// returns how long that took. It keeps no connection between checks.
//
// connect_timeout (whole seconds, at least 1) is added to dsn unless it sets
// one, and every read and write on the connection has a deadline at the end
// of the timeout, so that a server that accepts but never answers cannot
// hold a check. SELECT 1 runs with a statement_timeout in a transaction
// (SET LOCAL, which connection poolers accept). Errors carry no secret.
func CheckDB(ctx context.Context, dsn string, timeout time.Duration) (time.Duration, error) {
	if timeout <= 0 {
		timeout = DefaultDBTimeout
	}
	start := time.Now()
	lat, err := checkDB(ctx, dsn, timeout)
	if err != nil {
		if time.Since(start) >= timeout || errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("timed out (%s): %w", timeout, err)
		}
		return time.Since(start), pgdsn.RedactError(err, dsn)
	}
	return lat, nil
}

func checkDB(ctx context.Context, dsn string, timeout time.Duration) (time.Duration, error) {
	full, err := pgdsn.WithConnectTimeout(dsn, timeout)
	if err != nil {
		return 0, err
	}
	connector, err := pq.NewConnector(full)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	connector.Dialer(deadlineDialer{deadline})
	db := sql.OpenDB(connector)
	defer db.Close()
	start := time.Now()
	conn, err := db.Conn(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	if err := conn.PingContext(ctx); err != nil {
		return 0, err
	}
	tx, err := conn.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	ms := max(1, time.Until(deadline).Milliseconds())
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("SET LOCAL statement_timeout = %d", ms)); err != nil {
		return 0, err
	}
	var one int
	if err := tx.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return 0, err
	}
	lat := time.Since(start)
	return lat, tx.Rollback()
}

// deadlineDialer dials connections whose reads and writes can never wait
// past deadline: lib/pq clears the connect deadline after the handshake and
// its query cancellation needs the server to answer, so this is what bounds
// a check against a server that hangs.
type deadlineDialer struct{ deadline time.Time }

func (d deadlineDialer) Dial(network, addr string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, addr)
}

func (d deadlineDialer) DialTimeout(network, addr string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return d.DialContext(ctx, network, addr)
}

func (d deadlineDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	ctx, cancel := context.WithDeadline(ctx, d.deadline)
	defer cancel()
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	if err := c.SetDeadline(d.deadline); err != nil {
		c.Close()
		return nil, err
	}
	return deadlineConn{c, d.deadline}, nil
}

// deadlineConn keeps every deadline at or before limit.
type deadlineConn struct {
	net.Conn
	limit time.Time
}

func (c deadlineConn) clamp(t time.Time) time.Time {
	if t.IsZero() || t.After(c.limit) {
		return c.limit
	}
	return t
}

func (c deadlineConn) SetDeadline(t time.Time) error      { return c.Conn.SetDeadline(c.clamp(t)) }
func (c deadlineConn) SetReadDeadline(t time.Time) error  { return c.Conn.SetReadDeadline(c.clamp(t)) }
func (c deadlineConn) SetWriteDeadline(t time.Time) error { return c.Conn.SetWriteDeadline(c.clamp(t)) }
