// Package tcpproxy is a small in-process TCP proxy for tests: it forwards
// connections to a target and can cut them, to simulate a server that goes
// away and comes back.
//
// While cut, the proxy accepts new connections and closes them at once, so a
// client (lib/pq, net/http) sees a failure immediately rather than waiting
// for its own timeout. Blackhole instead keeps new connections open without
// forwarding a byte, to simulate a host that hangs; only a client's own
// timeout ends those.
package tcpproxy

import (
	"errors"
	"io"
	"net"
	"sync"
)

type mode int

const (
	forward mode = iota
	refuse
	blackhole
)

// Proxy forwards TCP connections from Addr to a target.
type Proxy struct {
	target string
	ln     net.Listener

	mu     sync.Mutex
	mode   mode
	closed bool
	// conns holds every open connection, client and target side alike, so
	// that Cut and Close can end them.
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// New listens on 127.0.0.1 on a free port and forwards every connection to
// target (host:port).
func New(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's listening address (host:port).
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Cut closes every current connection; until Restore, new connections are
// accepted and closed at once.
func (p *Proxy) Cut() { p.setMode(refuse) }

// Blackhole closes every current connection; until Restore, new connections
// are accepted and held open, silent, until Restore or Close ends them.
func (p *Proxy) Blackhole() { p.setMode(blackhole) }

// Restore forwards new connections again. Connections held by Blackhole are
// closed.
func (p *Proxy) Restore() { p.setMode(forward) }

func (p *Proxy) setMode(m mode) {
	p.mu.Lock()
	old := p.mode
	p.mode = m
	var end []net.Conn
	if m != forward || old == blackhole {
		for c := range p.conns {
			end = append(end, c)
		}
	}
	p.mu.Unlock()
	for _, c := range end {
		c.Close()
	}
}

// Close stops listening, closes every connection and waits for the proxy's
// goroutines to end.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	var end []net.Conn
	for c := range p.conns {
		end = append(end, c)
	}
	p.mu.Unlock()
	err := p.ln.Close()
	for _, c := range end {
		c.Close()
	}
	p.wg.Wait()
	return err
}

// track registers the target side c of a forwarded connection; it reports
// false (and closes c) when the proxy no longer forwards.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.mode != forward {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		// Deciding and tracking under one lock: a Cut or Restore either
		// sees c or has already set the mode this connection gets.
		p.mu.Lock()
		m := p.mode
		if p.closed {
			m = refuse
		}
		if m != refuse {
			p.conns[c] = struct{}{}
			p.wg.Add(1)
		}
		p.mu.Unlock()
		switch m {
		case refuse:
			c.Close()
		case blackhole:
			go func() {
				defer p.wg.Done()
				defer p.untrack(c)
				// Read and drop until the connection is closed.
				io.Copy(io.Discard, c)
			}()
		default:
			go p.forward(c)
		}
	}
}

func (p *Proxy) forward(c net.Conn) {
	defer p.wg.Done()
	defer p.untrack(c)
	t, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	// A Cut that came while dialling must still end this connection.
	if !p.track(t) {
		return
	}
	defer p.untrack(t)
	done := make(chan struct{}, 2)
	go func() {
		io.Copy(t, c)
		done <- struct{}{}
	}()
	go func() {
		io.Copy(c, t)
		done <- struct{}{}
	}()
	<-done
	// One direction ended: end both, and wait for the other copier.
	c.Close()
	t.Close()
	<-done
}
