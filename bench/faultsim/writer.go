package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ack is a write a merchant acknowledged: 201 with the invoice's id.
type ack struct {
	merchant string
	amount   int64 // unique over the run: the write's marker
	id       int64
	at       time.Time
}

// writeLog remembers every acknowledged write.
type writeLog struct {
	seq atomic.Int64

	mu       sync.Mutex
	acks     []ack
	failed   map[string]int // by merchant
	why      map[string]int // failed writes by what happened
	lastAcks map[string]time.Time
}

func newWriteLog() *writeLog {
	return &writeLog{failed: map[string]int{}, why: map[string]int{}, lastAcks: map[string]time.Time{}}
}

func (w *writeLog) add(a ack) {
	w.mu.Lock()
	w.acks = append(w.acks, a)
	w.lastAcks[a.merchant] = a.at
	w.mu.Unlock()
}

func (w *writeLog) fail(id, why string) {
	w.mu.Lock()
	w.failed[id]++
	w.why[why]++
	w.mu.Unlock()
}

// failReasons says what happened to the writes that failed, most
// frequent first.
func (w *writeLog) failReasons() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	type kv struct {
		k string
		n int
	}
	var all []kv
	for k, n := range w.why {
		all = append(all, kv{k, n})
	}
	slices.SortFunc(all, func(a, b kv) int { return cmp.Or(b.n-a.n, strings.Compare(a.k, b.k)) })
	var parts []string
	for _, e := range all {
		parts = append(parts, fmt.Sprintf("%d %s", e.n, e.k))
	}
	return strings.Join(parts, ", ")
}

// lastAck is when merchant id last acknowledged a write.
func (w *writeLog) lastAck(id string) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastAcks[id]
}

func (w *writeLog) ackCount() int {
	if w == nil {
		return 0
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acks)
}

func (w *writeLog) failCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, c := range w.failed {
		n += c
	}
	return n
}

func (w *writeLog) all() []ack {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]ack(nil), w.acks...)
}

// writePace is the pause between two writes to one merchant.
const writePace = 100 * time.Millisecond

// writer writes invoices through merchant m until ctx ends: each with an
// amount no other write of the run has, so that the database shows
// whether it is there once, twice or not at all. A fresh connection per
// request, so that no client retries a write on its own.
func (s *sim) writer(ctx context.Context, m *merchant) {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	url := fmt.Sprintf("http://127.0.0.1:%d/invoices", m.port)
	for ctx.Err() == nil {
		amount := s.writes.seq.Add(1)
		if id, why := postInvoice(ctx, client, url, m.id, amount); why == "" {
			s.writes.add(ack{merchant: m.id, amount: amount, id: id, at: time.Now()})
		} else if ctx.Err() == nil {
			s.writes.fail(m.id, why)
		}
		select {
		case <-ctx.Done():
		case <-time.After(writePace):
		}
	}
}

// postInvoice posts one invoice and returns its id when merchant id
// acknowledged it (201 with the same amount, the merchant's id and an
// invoice id); otherwise it says what happened. A process of another
// fleet on the port (a port left free while the merchant is down) does
// not count.
func postInvoice(ctx context.Context, c *http.Client, url, merchant string, amount int64) (int64, string) {
	req, err := http.NewRequestWithContext(context.WithoutCancel(ctx), "POST", url, strings.NewReader(fmt.Sprintf(`{"amount_cents": %d}`, amount)))
	if err != nil {
		return 0, err.Error()
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return 0, "refused (nothing listening)"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return 0, "connection reset or closed before an answer"
	case err != nil && os.IsTimeout(err):
		return 0, "no answer within 5s"
	case err != nil:
		return 0, "failed: " + err.Error()
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return 0, "answer cut off"
	}
	if resp.StatusCode != http.StatusCreated {
		return 0, fmt.Sprintf("status %d", resp.StatusCode)
	}
	var out struct {
		ID          int64  `json:"id"`
		Merchant    string `json:"merchant"`
		AmountCents int64  `json:"amount_cents"`
	}
	if json.Unmarshal(body, &out) != nil || out.ID <= 0 || out.AmountCents != amount {
		return 0, "a 201 that is not the invoice written"
	}
	if out.Merchant != merchant {
		return 0, fmt.Sprintf("answered by another merchant's process (%q) on the port", out.Merchant)
	}
	return out.ID, ""
}

// httpGet returns the status code and body of GET path on a merchant's port.
func httpGet(port int, path string, timeout time.Duration) (int, string) {
	c := &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, path))
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode, string(b)
}
