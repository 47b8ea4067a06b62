package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"steward/reconcile"
	"steward/state"
)

// fakeDaemon implements the Daemon interface this package declares, with
// a status document and history the tests change.
type fakeDaemon struct {
	mu       sync.Mutex
	syncs    int
	log      []string // the writes it was asked for, as "restart acme"
	serial   uint64
	revision string
	doc      Status
	events   []state.Event
	subs     []chan Change
	// restartTakes delays Restart, as a merchant slow to answer would.
	restartTakes time.Duration
	// logFollow: Logs with Follow writes the lines, then waits for ctx.
	logLines []string
	statuses int // Status calls
}

func newFake() *fakeDaemon {
	return &fakeDaemon{serial: 7, revision: "rev1", doc: Status{
		Merchants: []MerchantStatus{{ID: "acme", State: "running", PID: 100, Port: 8101, Version: "1.0.0", DesiredVersion: "1.0.0", Healthy: true, Database: "db-east", InSpecs: true}},
		Databases: []DatabaseStatus{{Name: "db-east", Up: true, Checked: true}},
		Serial:    7,
	}, logLines: []string{"listening on 8101", "GET /health 200", "POST /invoices 201"}}
}

func (f *fakeDaemon) record(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log = append(f.log, s)
}

func (f *fakeDaemon) calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.log...)
}

// change edits the status document and notifies the subscribers.
func (f *fakeDaemon) change(edit func(*Status)) {
	f.mu.Lock()
	edit(&f.doc)
	f.mu.Unlock()
	f.notify(Change{})
}

// addEvent records an event and notifies the subscribers.
func (f *fakeDaemon) addEvent(ev state.Event) {
	f.mu.Lock()
	f.events = append(f.events, ev)
	f.mu.Unlock()
	f.notify(Change{Event: &ev})
}

func (f *fakeDaemon) notify(c Change) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ch := range f.subs {
		select {
		case ch <- c:
		default:
		}
	}
}

func (f *fakeDaemon) Status(context.Context) (Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.statuses++
	doc := f.doc
	doc.Merchants = append([]MerchantStatus(nil), f.doc.Merchants...)
	return doc, nil
}

func (f *fakeDaemon) Plan(context.Context) (*Plan, error) {
	return PlanOf(&reconcile.Plan{Serial: f.serial, Revision: f.revision, Actions: []reconcile.Action{{Kind: reconcile.Restart, Merchant: "acme", Reason: "env.LOCALE changed"}}}), nil
}

func (f *fakeDaemon) Apply(_ context.Context, req ApplyRequest, h Hooks) (int, error) {
	p, _ := f.Plan(context.Background())
	if req.Digest != p.Digest {
		return 0, fmt.Errorf("%w: state moved on", ErrStale)
	}
	h.ActionDone(reconcile.Action{Kind: reconcile.Restart, Merchant: "acme"}, nil, time.Millisecond)
	h.ActionDone(reconcile.Action{Kind: reconcile.Upgrade, Merchant: "bolt"}, errors.New("gate failed"), time.Second)
	h.ActionDone(reconcile.Action{Kind: reconcile.Hold, Merchant: "cove"}, nil, 0)
	return 1, nil
}

func (f *fakeDaemon) Sync(context.Context) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.syncs++
	return "abc", nil
}

func (f *fakeDaemon) known(id string) error {
	if id != "acme" {
		return fmt.Errorf("%w: merchant %q is not in the specs", ErrNotFound, id)
	}
	return nil
}

func (f *fakeDaemon) Restart(ctx context.Context, id string) error {
	if err := f.known(id); err != nil {
		return err
	}
	f.mu.Lock()
	d := f.restartTakes
	f.mu.Unlock()
	select {
	case <-time.After(d):
	case <-ctx.Done():
		return ctx.Err()
	}
	f.record("restart " + id)
	return nil
}

func (f *fakeDaemon) Suspend(_ context.Context, id string, on bool) error {
	if err := f.known(id); err != nil {
		return err
	}
	f.record(map[bool]string{true: "suspend ", false: "resume "}[on] + id)
	return nil
}

func (f *fakeDaemon) Rollback(_ context.Context, id string, req RollbackRequest) (string, error) {
	if err := f.known(id); err != nil {
		return "", err
	}
	to := req.To
	if to == "9.9.9" {
		return "", fmt.Errorf("%w: %s has never run 9.9.9; name a version it ran", ErrRefused, id)
	}
	f.record("rollback " + id + " " + to)
	if to == "" {
		to = "0.9.0"
	}
	return to, nil
}

func (f *fakeDaemon) History(_ context.Context, q HistoryQuery) ([]state.Event, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log = append(f.log, fmt.Sprintf("history %s%s %d", q.Merchant, q.Database, q.N))
	var out []state.Event
	for _, ev := range f.events {
		if ev.Merchant == q.Merchant {
			out = append(out, ev)
		}
	}
	if len(out) > q.N {
		out = out[len(out)-q.N:]
	}
	return out, nil
}

func (f *fakeDaemon) Logs(ctx context.Context, q LogQuery, w io.Writer) error {
	if err := f.known(q.Merchant); err != nil {
		return err
	}
	f.record(fmt.Sprintf("logs %s %d", q.Merchant, q.N))
	var lines []string
	for _, l := range f.logLines {
		if q.Grep == nil || q.Grep.MatchString(l) {
			lines = append(lines, l)
		}
	}
	if len(lines) > q.N {
		lines = lines[len(lines)-q.N:]
	}
	for _, l := range lines {
		if _, err := io.WriteString(w, l+"\n"); err != nil {
			return err
		}
	}
	if q.Follow {
		<-ctx.Done()
	}
	return nil
}

func (f *fakeDaemon) Subscribe(ctx context.Context) <-chan Change {
	ch := make(chan Change, 64)
	f.mu.Lock()
	f.subs = append(f.subs, ch)
	f.mu.Unlock()
	go func() {
		<-ctx.Done()
		f.mu.Lock()
		defer f.mu.Unlock()
		for i, c := range f.subs {
			if c == ch {
				f.subs = append(f.subs[:i], f.subs[i+1:]...)
				break
			}
		}
		close(ch)
	}()
	return ch
}

var _ Daemon = (*fakeDaemon)(nil)
