package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// flood is an API flood in progress: a tenth of its connections are
// ordinary requests sent as fast as they are answered, the rest are held
// open, half of them with a request body announced and never sent in full,
// half sending their header lines one by one, slowly (slowloris).
type flood struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns []net.Conn // every held connection
	slow  []net.Conn // the slowloris ones among them

	requests, answered, held, dialFailed atomic.Int64
}

func startFlood(addr string, n int) *flood {
	ctx, cancel := context.WithCancel(context.Background())
	fl := &flood{cancel: cancel}
	busy := max(n/10, 1)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: busy, MaxConnsPerHost: busy}}
	for range busy {
		fl.wg.Go(func() {
			for ctx.Err() == nil {
				fl.requests.Add(1)
				req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/v1/status", nil)
				resp, err := client.Do(req)
				if err != nil {
					// Refused or reset: do not spin.
					select {
					case <-ctx.Done():
					case <-time.After(50 * time.Millisecond):
					}
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				fl.answered.Add(1)
			}
		})
	}
	// Held connections, dialled by a few goroutines so that a full accept
	// backlog does not stall the start.
	rest := n - busy
	next := atomic.Int64{}
	for range 16 {
		fl.wg.Go(func() {
			d := net.Dialer{Timeout: time.Second}
			for ctx.Err() == nil {
				i := next.Add(1)
				if i > int64(rest) {
					return
				}
				c, err := d.DialContext(ctx, "tcp", addr)
				if err != nil {
					fl.dialFailed.Add(1)
					continue
				}
				var head string
				if i%2 == 0 {
					head = "POST /v1/sync HTTP/1.1\r\nHost: steward\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\n\r\n{\"a\":"
				} else {
					head = "GET /v1/status HTTP/1.1\r\nHost: steward\r\n"
				}
				c.SetWriteDeadline(time.Now().Add(time.Second))
				if _, err := io.WriteString(c, head); err != nil {
					c.Close()
					continue
				}
				fl.mu.Lock()
				fl.conns = append(fl.conns, c)
				if i%2 != 0 {
					fl.slow = append(fl.slow, c)
				}
				fl.mu.Unlock()
				fl.held.Add(1)
			}
		})
	}
	// Slowloris: one more header line on each such connection every second.
	fl.wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for k := 0; ; k++ {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			fl.mu.Lock()
			slow := append([]net.Conn(nil), fl.slow...)
			fl.mu.Unlock()
			for _, c := range slow {
				c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
				fmt.Fprintf(c, "X-Slow-%d: %d\r\n", k, k)
			}
		}
	})
	return fl
}

// stop ends the flood, closes every connection and says what it did.
func (fl *flood) stop() string {
	fl.cancel()
	fl.wg.Wait()
	fl.mu.Lock()
	for _, c := range fl.conns {
		c.Close()
	}
	fl.conns, fl.slow = nil, nil
	fl.mu.Unlock()
	return fmt.Sprintf("%d connections held open, %d dials failed, %d of %d requests answered",
		fl.held.Load(), fl.dialFailed.Load(), fl.answered.Load(), fl.requests.Load())
}
