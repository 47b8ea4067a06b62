package api

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// evictingListener accepts at most max connections at once. At the cap a
// newcomer makes room by closing the connection that has waited longest
// (at least evictAfter) without a request in progress: headers not yet
// complete, or idle between requests. Clients that open connections and
// then send nothing, or a byte now and then, cannot keep the operator's
// commands and the webhook out, as they could if newcomers waited for them
// in the listen queue; a request that is being sent normally is never cut
// off. When every connection is busy with a request, newcomers wait for
// one to end. Room is made before a connection is accepted, so the
// connections open never pass max.
type evictingListener struct {
	net.Listener
	max     int
	mu      sync.Mutex
	changed chan struct{} // closed and replaced when a connection ends or changes state
	conns   map[*trackedConn]struct{}
	done    chan struct{}
	close   sync.Once
}

// evictAfter is how long a connection must have waited without a request
// in progress before a newcomer may take its place.
const evictAfter = time.Second

func newEvictingListener(ln net.Listener, limit int) *evictingListener {
	return &evictingListener{Listener: ln, max: max(limit, 1), conns: map[*trackedConn]struct{}{},
		changed: make(chan struct{}), done: make(chan struct{})}
}

func (l *evictingListener) Close() error {
	l.close.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// trackedConn is a connection of an evictingListener with its HTTP state.
type trackedConn struct {
	net.Conn
	l     *evictingListener
	state http.ConnState
	since time.Time // when it entered state
	once  sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.l.forget(c) })
	return c.Conn.Close()
}

func (l *evictingListener) Accept() (net.Conn, error) {
	for {
		l.mu.Lock()
		if len(l.conns) < l.max {
			l.mu.Unlock()
			break
		}
		victim, wait := l.waitingLongest(), time.Duration(-1)
		if victim != nil {
			wait = evictAfter - time.Since(victim.since)
		}
		changed := l.changed
		l.mu.Unlock()
		if victim != nil && wait <= 0 {
			victim.Close() // forgets it
			continue
		}
		var timeout <-chan time.Time
		var t *time.Timer
		if wait > 0 {
			t = time.NewTimer(wait)
			timeout = t.C
		}
		select {
		case <-changed:
		case <-timeout:
		case <-l.done:
			return nil, net.ErrClosed
		}
		if t != nil {
			t.Stop()
		}
	}
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, l: l, state: http.StateNew, since: time.Now()}
	l.mu.Lock()
	l.conns[tc] = struct{}{}
	l.mu.Unlock()
	return tc, nil
}

// waitingLongest is the connection without a request in progress that has
// been so the longest; nil when every one is serving a request.
func (l *evictingListener) waitingLongest() *trackedConn {
	var oldest *trackedConn
	for c := range l.conns {
		if c.state != http.StateNew && c.state != http.StateIdle {
			continue
		}
		if oldest == nil || c.since.Before(oldest.since) {
			oldest = c
		}
	}
	return oldest
}

func (l *evictingListener) forget(c *trackedConn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.notifyLocked()
	l.mu.Unlock()
}

func (l *evictingListener) notifyLocked() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// connState is the http.Server's ConnState hook: it keeps each
// connection's state for the choice of whom to evict.
func (l *evictingListener) connState(nc net.Conn, st http.ConnState) {
	c, ok := nc.(*trackedConn)
	if !ok {
		return
	}
	switch st {
	case http.StateClosed, http.StateHijacked:
		c.once.Do(func() { l.forget(c) })
		return
	}
	l.mu.Lock()
	c.state, c.since = st, time.Now()
	l.notifyLocked()
	l.mu.Unlock()
}
