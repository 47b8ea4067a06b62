package router

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"time"
)

// drainPoll is how often Drain looks at the connections and workers; the
// kernel offers no event for "this port's last connection closed".
const drainPoll = 20 * time.Millisecond

// drainSettle bounds how long Drain waits for nginx workers of replaced
// configurations once no connection to the port is left. Such a worker may
// still hold a request it accepted before the switch and has not sent on
// yet (its client is still sending headers); after this long it is taken to
// be busy with other merchants (long polls, websockets), which
// worker_shutdown_timeout bounds.
const drainSettle = 5 * time.Second

// Drain returns once no established TCP connection to or from
// 127.0.0.1:port (IPv4 or IPv6 loopback, either end) remains and the nginx
// workers that were shutting down when Drain was called, the ones that may
// still route to port, have exited (or drainSettle has passed without a
// connection to port). Call it after Sync has made a route that no longer
// names port live, and before stopping the instance on port, so that the
// requests nginx was sending there finish. Connections of anybody else
// count too: close your own (health probes) first. When ctx ends first,
// Drain returns an error saying what is left.
func (r *Router) Drain(ctx context.Context, port int) error {
	if port <= 0 || port > 65535 {
		return fmt.Errorf("drain: port %d out of range", port)
	}
	var old []proc
	if m, ok := r.masterProc(ctx); ok {
		for _, w := range workers(m, r.bin) {
			if shuttingDown(w) {
				old = append(old, w)
			}
		}
	}
	start := time.Now()
	var quiet time.Time // since when no connection was seen
	t := time.NewTicker(drainPoll)
	defer t.Stop()
	for {
		n, err := countConns(port)
		if err != nil {
			return fmt.Errorf("drain port %d: %w", port, err)
		}
		old = pruneGone(old)
		switch {
		case n > 0:
			quiet = time.Time{}
		case quiet.IsZero():
			quiet = time.Now()
		}
		if n == 0 && (len(old) == 0 || time.Since(quiet) >= drainSettle) {
			r.log.Debug("drained", "port", port, "took", time.Since(start).Round(time.Millisecond))
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("drain port %d: %d connections and %d nginx workers of replaced configurations left after %s: %w",
				port, n, len(old), time.Since(start).Round(time.Millisecond), ctx.Err())
		case <-t.C:
		}
	}
}

func pruneGone(ps []proc) []proc {
	out := ps[:0]
	for _, p := range ps {
		if p.alive() {
			out = append(out, p)
		}
	}
	return out
}

// TCP states of /proc/net/tcp that carry or are about to carry a request.
const (
	tcpEstablished = 0x01
	tcpSynSent     = 0x02
	tcpSynRecv     = 0x03
)

// countConns counts the sockets of connections to 127.0.0.1:port (or ::1,
// or ::ffff:127.0.0.1): server ends established or half-open, client ends
// established or connecting.
func countConns(port int) (int, error) {
	total := 0
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		fh, err := os.Open(f)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) && f == "/proc/net/tcp6" {
				continue // no IPv6
			}
			return 0, err
		}
		n, err := countConnsIn(fh, uint16(port))
		fh.Close()
		if err != nil {
			return 0, fmt.Errorf("%s: %w", f, err)
		}
		total += n
	}
	return total, nil
}

func countConnsIn(rd io.Reader, port uint16) (int, error) {
	n := 0
	err := scanTCP(rd, func(local, remote netip.AddrPort, state int) {
		switch {
		case local.Port() == port && local.Addr().Unmap().IsLoopback() && (state == tcpEstablished || state == tcpSynRecv):
			n++
		case remote.Port() == port && remote.Addr().Unmap().IsLoopback() && (state == tcpEstablished || state == tcpSynSent):
			n++
		}
	})
	return n, err
}

// scanTCP calls fn for every socket line of a /proc/net/tcp or tcp6 file.
func scanTCP(rd io.Reader, fn func(local, remote netip.AddrPort, state int)) error {
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 0, 4096), 64*1024)
	first := true
	for sc.Scan() {
		if first { // the header
			first = false
			continue
		}
		f := bytes.Fields(sc.Bytes())
		if len(f) < 4 {
			return fmt.Errorf("malformed line %q", sc.Text())
		}
		local, err1 := parseHexAddr(f[1])
		remote, err2 := parseHexAddr(f[2])
		state, err3 := strconv.ParseUint(string(f[3]), 16, 8)
		if err := errors.Join(err1, err2, err3); err != nil {
			return fmt.Errorf("malformed line %q: %w", sc.Text(), err)
		}
		fn(local, remote, int(state))
	}
	return sc.Err()
}

// parseHexAddr parses the kernel's "ADDR:PORT" in hex, where ADDR is 4 or
// 16 bytes written as 32-bit words in host byte order (little-endian on
// every platform steward runs on) and PORT is big-endian.
func parseHexAddr(b []byte) (netip.AddrPort, error) {
	i := bytes.IndexByte(b, ':')
	if i < 0 {
		return netip.AddrPort{}, fmt.Errorf("address %q: no port", b)
	}
	port, err := strconv.ParseUint(string(b[i+1:]), 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q: %w", b, err)
	}
	raw, err := hex.DecodeString(string(b[:i]))
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, fmt.Errorf("address %q: not 4 or 16 hex bytes", b)
	}
	for w := 0; w < len(raw); w += 4 {
		binary.BigEndian.PutUint32(raw[w:], binary.LittleEndian.Uint32(raw[w:]))
	}
	addr, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(addr, uint16(port)), nil
}
