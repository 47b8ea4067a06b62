package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// healthClient makes one fresh connection per request, so an answer always
// comes from whatever process holds the port right now.
var healthClient = &http.Client{Transport: &http.Transport{
	Proxy:              nil,
	DisableKeepAlives:  true,
	DisableCompression: true,
	DialContext:        (&net.Dialer{}).DialContext,
}}

// healthy reports whether 127.0.0.1:port answers GET /health with 200
// within timeout.
func healthy(ctx context.Context, port int, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(port)+"/health", nil)
	if err != nil {
		return false
	}
	resp, err := healthClient.Do(req)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<10))
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// upTimes is when each port first answered /health, measured from t0.
type upTimes struct {
	Last   time.Duration         // the instant the last port answered
	First  time.Duration         // the instant the first port answered
	Median time.Duration         // half of the ports answered by then
	ByPort map[int]time.Duration // per port
}

// waitAllUp waits until every port answers GET /health with 200 and
// returns when each did, measured from t0.
//
// Hammering N closed ports from the same 2 cores would steal CPU from the
// supervisor being measured, so the HTTP attempts are gated: one loop lists
// the listening sockets (a sock_diag dump, see diag.go) every scan
// interval, and a port gets HTTP probes (every 1ms, short timeout) as soon
// as something listens on it. The answer that
// counts is still a real GET /health; the gate only spares refused
// connects. A port that never answers fails the wait when ctx ends.
func waitAllUp(ctx context.Context, t0 time.Time, ports []int, scan time.Duration) (upTimes, error) {
	want := map[int]bool{}
	for _, p := range ports {
		want[p] = true
	}
	pending := len(ports)
	probing := map[int]bool{}
	type answer struct {
		port int
		at   time.Duration
	}
	answers := make(chan answer, len(ports))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	res := upTimes{ByPort: map[int]time.Duration{}}
	tick := time.NewTicker(scan)
	defer tick.Stop()
	for pending > 0 {
		ls, err := listeningPorts(want)
		if err != nil {
			return res, err
		}
		for port := range ls {
			if probing[port] {
				continue
			}
			probing[port] = true
			wg.Go(func() {
				for ctx.Err() == nil {
					if healthy(ctx, port, 250*time.Millisecond) {
						answers <- answer{port, time.Since(t0)}
						return
					}
					sleepCtx(ctx, time.Millisecond)
				}
			})
		}
	drain:
		for {
			select {
			case a := <-answers:
				res.ByPort[a.port] = a.at
				pending--
			default:
				break drain
			}
		}
		if pending == 0 {
			break
		}
		select {
		case <-ctx.Done():
			var missing []string
			for _, p := range ports {
				if _, ok := res.ByPort[p]; !ok {
					missing = append(missing, strconv.Itoa(p))
					if len(missing) == 10 {
						missing = append(missing, "...")
						break
					}
				}
			}
			return res, fmt.Errorf("%d of %d ports never answered /health (%s)", pending, len(ports), strings.Join(missing, " "))
		case <-tick.C:
		case a := <-answers:
			res.ByPort[a.port] = a.at
			pending--
		}
	}
	times := make([]time.Duration, 0, len(res.ByPort))
	for _, d := range res.ByPort {
		times = append(times, d)
	}
	sortDurations(times)
	res.First, res.Median, res.Last = times[0], times[len(times)/2], times[len(times)-1]
	return res, nil
}

// killAndTime SIGKILLs pid (which must hold port) and returns the time from
// the signal to the first 200 answer to GET /health on port, polled every
// poll. The process is addressed through a pidfd, so a reused pid is never
// signalled, and probing starts once the killed process is gone (so its
// dying listener cannot answer).
func killAndTime(ctx context.Context, pid, port int, poll, limit time.Duration) (time.Duration, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return 0, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(fd)
	if !strings.Contains(cmdline(pid), "--port="+strconv.Itoa(port)) {
		return 0, fmt.Errorf("pid %d is not the merchant on port %d: %q", pid, port, cmdline(pid))
	}
	t0 := time.Now()
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil {
		return 0, fmt.Errorf("kill %d: %w", pid, err)
	}
	// A pidfd of a process that is not our child polls readable once the
	// process has terminated.
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(pfd, 5000)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("poll pidfd: %w", err)
		}
		if n == 0 {
			return 0, fmt.Errorf("pid %d still alive 5s after SIGKILL", pid)
		}
		break
	}
	deadline := t0.Add(limit)
	for time.Now().Before(deadline) {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if healthy(ctx, port, 100*time.Millisecond) {
			return time.Since(t0), nil
		}
		time.Sleep(poll)
	}
	return 0, fmt.Errorf("port %d did not answer within %s of the kill", port, limit)
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
