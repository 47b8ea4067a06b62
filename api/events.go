package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"steward/state"
)

// Timing of the event stream.
const (
	// statusDebounce is the least time between two status events: changes
	// that come faster are folded into one document.
	statusDebounce = 250 * time.Millisecond
	// statusPoll is how often the document is rebuilt even without a
	// notice, so that a dropped notice only delays an update.
	statusPoll = 5 * time.Second
	// subscriberBuffer is how many events a stream may fall behind before
	// it is ended (its client reconnects and starts from a fresh document).
	subscriberBuffer = 64
)

// message is one server-sent event.
type message struct {
	event string // "status" or "history"
	data  []byte
	// public is the data for a reader without the token; nil: data.
	public []byte
	// merchant is the merchant of a history event.
	merchant string
}

type subscriber struct {
	ch chan message
	// gone is closed when the hub drops the subscriber for falling behind.
	gone chan struct{}
}

// hub builds the status document once per change for all event streams
// and fans it and every recorded event out to them. Its loop runs while
// at least one stream is open.
type hub struct {
	s       *Server
	mu      sync.Mutex
	clients map[*subscriber]struct{}
	stop    context.CancelFunc // of the running loop; nil when none runs
	gen     uint64             // the running loop's generation
	last    *message           // the newest status event sent
}

func (h *hub) join() *subscriber {
	sub := &subscriber{ch: make(chan message, subscriberBuffer), gone: make(chan struct{})}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.clients[sub] = struct{}{}
	switch {
	case h.stop == nil:
		ctx, cancel := context.WithCancel(context.Background())
		h.gen++
		h.stop = cancel
		go h.run(ctx, h.gen)
	case h.last != nil:
		sub.ch <- *h.last
	}
	return sub
}

func (h *hub) leave(sub *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.clients, sub)
	if len(h.clients) == 0 && h.stop != nil {
		h.stop()
		h.stop, h.last = nil, nil
	}
}

// broadcast sends m to every subscriber of loop generation gen, ending the
// streams that fell behind.
func (h *hub) broadcast(gen uint64, m message) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if gen != h.gen || h.stop == nil {
		return
	}
	if m.event == "status" {
		h.last = &m
	}
	for sub := range h.clients {
		select {
		case sub.ch <- m:
		default:
			delete(h.clients, sub)
			close(sub.gone)
		}
	}
}

func (h *hub) run(ctx context.Context, gen uint64) {
	changes := h.s.Daemon.Subscribe(ctx)
	timer := time.NewTimer(0) // the first document at once
	defer timer.Stop()
	poll := time.NewTicker(statusPoll)
	defer poll.Stop()
	pending := true
	var lastSent time.Time
	var last []byte
	schedule := func() {
		if !pending {
			pending = true
			timer.Reset(max(0, statusDebounce-time.Since(lastSent)))
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case c, ok := <-changes:
			if !ok {
				changes = nil // the poll goes on
				continue
			}
			if c.Event != nil {
				if data, err := json.Marshal(c.Event); err == nil {
					m := message{event: "history", data: data, merchant: c.Event.Merchant}
					if c.Event.Detail != "" {
						m.public, _ = json.Marshal(PublicEvent(*c.Event))
					}
					h.broadcast(gen, m)
				}
			}
			schedule()
		case <-poll.C:
			schedule()
		case <-timer.C:
			pending = false
			lastSent = time.Now()
			doc, err := h.s.Daemon.Status(ctx)
			if err != nil {
				h.s.Log.Debug("event stream: building the status document failed", "err", err)
				continue
			}
			data, err := json.Marshal(doc)
			if err != nil || bytes.Equal(data, last) {
				continue
			}
			last = data
			m := message{event: "status", data: data}
			if pub, _ := json.Marshal(doc.Public()); !bytes.Equal(pub, data) {
				m.public = pub
			}
			h.broadcast(gen, m)
		}
	}
}

// events serves GET /v1/events: server-sent events "status" (the status
// document, when it changes) and "history" (each recorded event), and
// keep-alive comments.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	only := r.URL.Query().Get("merchant")
	if only != "" && !ValidMerchantID(only) {
		badRequest(w, "bad merchant=%.80q: a merchant id is 1 to 63 lower-case letters, digits and '-'", only)
		return
	}
	if _, ok := s.readBody(w, r); !ok {
		return
	}
	done, ok := s.stream(w, r)
	if !ok {
		return
	}
	defer done()
	authorized := s.tokenOK(r)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	send := func(format string, args ...any) bool {
		if _, err := fmt.Fprintf(w, format, args...); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !send("retry: 2000\n\n") {
		return
	}
	sub := s.hub.join()
	defer s.hub.leave(sub)
	keep := time.NewTicker(s.lim.KeepAlive)
	defer keep.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-sub.gone:
			return
		case m := <-sub.ch:
			if only != "" && m.event == "history" && m.merchant != only {
				continue
			}
			data := m.data
			if !authorized && m.public != nil {
				data = m.public
			}
			if !send("event: %s\ndata: %s\n\n", m.event, data) {
				return
			}
		case <-keep.C:
			if !send(": keep-alive\n\n") {
				return
			}
		}
	}
}

// Update is one event of the GET /v1/events stream.
type Update struct {
	// Status is set for a "status" event, Event for a "history" event.
	Status *Status
	Event  *state.Event
}
