package api

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// evictingListener accepts at most max connections at once. At the cap a
// new connection makes room by closing the one that has waited longest
// without a request in progress (headers not yet complete, or idle
// between requests): clients that open connections and then send nothing,
// or send a byte at a time, cannot keep the operator's commands and the
// webhook out, as they could if newcomers waited for them in the listen
// queue. When every connection is busy with a request, a newcomer waits
// for one to end.
type evictingListener struct {
	net.Listener
	max   int
	mu    sync.Mutex
	freed *sync.Cond
	conns map[*trackedConn]struct{}
}

func newEvictingListener(ln net.Listener, max int) *evictingListener {
	l := &evictingListener{Listener: ln, max: max, conns: map[*trackedConn]struct{}{}}
	l.freed = sync.NewCond(&l.mu)
	return l
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
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	for len(l.conns) >= l.max {
		victim := l.waitingLongest()
		if victim == nil {
			l.freed.Wait()
			continue
		}
		l.mu.Unlock()
		victim.Close() // forgets it
		l.mu.Lock()
	}
	tc := &trackedConn{Conn: c, l: l, state: http.StateNew, since: time.Now()}
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
	l.mu.Unlock()
	l.freed.Signal()
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
	l.mu.Unlock()
}
