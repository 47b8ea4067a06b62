package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
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
	failed   map[string]int
	lastAcks map[string]time.Time
}

func newWriteLog() *writeLog {
	return &writeLog{failed: map[string]int{}, lastAcks: map[string]time.Time{}}
}

func (w *writeLog) add(a ack) {
	w.mu.Lock()
	w.acks = append(w.acks, a)
	w.lastAcks[a.merchant] = a.at
	w.mu.Unlock()
}

func (w *writeLog) fail(id string) {
	w.mu.Lock()
	w.failed[id]++
	w.mu.Unlock()
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
		if id, ok := postInvoice(ctx, client, url, amount); ok {
			s.writes.add(ack{merchant: m.id, amount: amount, id: id, at: time.Now()})
		} else if ctx.Err() == nil {
			s.writes.fail(m.id)
		}
		select {
		case <-ctx.Done():
		case <-time.After(writePace):
		}
	}
}

// postInvoice posts one invoice and returns its id when the merchant
// acknowledged it (201 with the same amount and an id).
func postInvoice(ctx context.Context, c *http.Client, url string, amount int64) (int64, bool) {
	req, err := http.NewRequestWithContext(context.WithoutCancel(ctx), "POST", url, strings.NewReader(fmt.Sprintf(`{"amount_cents": %d}`, amount)))
	if err != nil {
		return 0, false
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil || resp.StatusCode != http.StatusCreated {
		return 0, false
	}
	var out struct {
		ID          int64 `json:"id"`
		AmountCents int64 `json:"amount_cents"`
	}
	if json.Unmarshal(body, &out) != nil || out.ID <= 0 || out.AmountCents != amount {
		return 0, false
	}
	return out.ID, true
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
