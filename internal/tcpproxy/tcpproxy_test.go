package tcpproxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// echoServer echoes every line back until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func newProxy(t *testing.T) *Proxy {
	t.Helper()
	p, err := New(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip sends a line and expects it back.
func roundTrip(c net.Conn) error {
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "ping\n" {
		return errors.New("echo answered " + line)
	}
	return nil
}

// expectClosed waits (bounded) for the peer to close c.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err := c.Read(make([]byte, 16))
	if err == nil {
		t.Fatal("read succeeded on a cut connection")
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("connection still open 2s after it should have been closed")
	}
}

func TestForwards(t *testing.T) {
	p := newProxy(t)
	c := dial(t, p.Addr())
	for range 3 {
		if err := roundTrip(c); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCutEndsConnectionsAndRefusesNewOnesUntilRestore(t *testing.T) {
	p := newProxy(t)
	old := dial(t, p.Addr())
	if err := roundTrip(old); err != nil {
		t.Fatal(err)
	}
	p.Cut()
	expectClosed(t, old)

	start := time.Now()
	expectClosed(t, dial(t, p.Addr()))
	if d := time.Since(start); d > time.Second {
		t.Errorf("a new connection through a cut proxy took %s to fail", d)
	}

	p.Restore()
	if err := roundTrip(dial(t, p.Addr())); err != nil {
		t.Fatalf("after Restore: %v", err)
	}
}

func TestBlackholeHoldsConnectionsSilentUntilRestore(t *testing.T) {
	p := newProxy(t)
	p.Blackhole()
	c := dial(t, p.Addr())
	io.WriteString(c, "ping\n")
	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := c.Read(make([]byte, 16)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read from a blackholed connection: %v, want a timeout", err)
	}
	p.Restore()
	expectClosed(t, c)
	if err := roundTrip(dial(t, p.Addr())); err != nil {
		t.Fatalf("after Restore: %v", err)
	}
}

func TestCloseEndsEverything(t *testing.T) {
	p := newProxy(t)
	c := dial(t, p.Addr())
	if err := roundTrip(c); err != nil {
		t.Fatal(err)
	}
	addr := p.Addr()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, c)
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("dial succeeded after Close")
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
