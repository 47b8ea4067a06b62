package dashboard

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"steward/api"
	"steward/state"
)

// fakeDaemon implements api.Daemon over a made-up fleet of thirteen
// merchants: a crash loop, a held merchant, a halted rollout and another
// in progress, a database that is down.
type fakeDaemon struct {
	mu     sync.Mutex
	now    time.Time
	doc    api.Status
	events []state.Event
	logs   map[string][]string
	subs   []chan api.Change
	calls  []string
}

func ptr[T any](v T) *T { return &v }

func newFleet(now time.Time) *fakeDaemon {
	at := func(d time.Duration) time.Time { return now.Add(-d) }
	ev := func(d time.Duration, merchant, action, reason, result string) state.Event {
		return state.Event{Time: at(d), Merchant: merchant, Action: action, Reason: reason, Result: result, Revision: "sha256:4be1c07a93d2e8f1"}
	}
	f := &fakeDaemon{now: now, logs: map[string][]string{}}
	running := func(id, version string, pid, port int, db string, since time.Duration) api.MerchantStatus {
		return api.MerchantStatus{ID: id, State: "running", PID: pid, Port: port, Version: version, DesiredVersion: version, Healthy: true,
			Database: db, InSpecs: true, Since: ptr(at(since)), Domains: []string{id + ".example.com"}}
	}
	ms := []api.MerchantStatus{
		running("acme", "1.4.2", 41873, 8101, "db-east", 26*time.Hour),
		running("bolt", "1.4.2", 41880, 8102, "db-east", 26*time.Hour),
		{ID: "cove", State: "crashloop", Port: 8103, Version: "1.4.2", DesiredVersion: "1.4.2", Database: "db-east", Restarts: 7, Failures: 5,
			InSpecs: true, NextAttempt: ptr(now.Add(40 * time.Second)), LastError: "process exited with status 2 after 1.2s", Domains: []string{"cove.example.com"}},
		{ID: "dune", State: "held", PID: 40112, Port: 8104, Version: "1.4.1", DesiredVersion: "1.4.2", Healthy: true, Database: "db-west",
			InSpecs: true, Since: ptr(at(3 * 24 * time.Hour)), Domains: []string{"dune.example.com"}},
		running("ember", "2.3.1", 40561, 8105, "db-west", 2*time.Hour),
		{ID: "fjord", State: "suspended", PID: 39987, Port: 8106, Version: "1.3.9", DesiredVersion: "1.4.2", Healthy: true, Database: "db-east",
			InSpecs: true, Since: ptr(at(9 * 24 * time.Hour))},
		running("grove", "2.3.1", 40577, 8107, "db-east", 90*time.Minute),
		running("harbor", "1.4.2", 42210, 8108, "db-east", 24*time.Minute),
		{ID: "iris", State: "starting", PID: 42391, Port: 8109, Version: "2.3.1", DesiredVersion: "2.3.1", Database: "db-east", InSpecs: true,
			Since: ptr(at(4 * time.Second)), Domains: []string{"iris.example.com"}},
		{ID: "jade", State: "stopped", Port: 8110, Version: "1.4.0", Database: "db-east", Restarts: 1},
		{ID: "kiln", State: "failed", Port: 8111, DesiredVersion: "1.4.3", Database: "db-east", Failures: 3, InSpecs: true,
			LastError: "install invoicing 1.4.3: checksum mismatch: invoicing-1.4.3.tar.gz is not the file its .sha256 names"},
		running("lumen", "2.3.1", 41022, 8112, "db-east", 5*time.Hour),
		running("maple", "2.3.1", 40590, 8113, "db-east", 80*time.Minute),
	}
	ms[1].Restarts = 1
	ms[11].Restarts = 2
	ms[7].DesiredVersion = "1.5.0"
	f.doc = api.Status{
		Merchants: ms,
		Databases: []api.DatabaseStatus{
			{Name: "db-east", Up: true, Checked: true, Since: ptr(at(20 * time.Hour))},
			{Name: "db-west", Up: false, Checked: true, Since: ptr(at(14 * time.Minute)), LastError: "dial tcp db-west.internal:5432: i/o timeout"},
		},
		Rollouts: []api.RolloutStatus{
			{Package: "invoicing", Version: "1.5.0", Halted: true, Reason: "canary harbor failed its health gate: GET /health answered 500 for 60s; harbor is back on 1.4.2",
				Succeeded: []string{}, Failed: []string{"harbor"}, Merchants: []string{"harbor", "acme", "bolt", "cove", "dune", "fjord"},
				Canary: 1, MaxParallel: 2, StartedAt: ptr(at(31 * time.Minute)), HaltedAt: ptr(at(24 * time.Minute))},
			{Package: "shop", Version: "2.3.1", Succeeded: []string{"ember", "grove", "maple"}, Failed: []string{},
				Merchants: []string{"ember", "grove", "maple", "lumen", "iris"}, Canary: 1, MaxParallel: 2, StartedAt: ptr(at(2 * time.Hour))},
		},
		Revision: "sha256:4be1c07a93d2e8f1c3a0",
		Serial:   1842,
	}
	// cove: a crash loop that started two hours ago, after a quiet day.
	f.events = append(f.events,
		ev(23*time.Hour, "cove", "start", "created", "ok"),
		ev(19*time.Hour, "cove", "restart", "health: GET /health: context deadline exceeded, 3 times in a row", "ok"),
		ev(11*time.Hour, "cove", "restart", "restart requested", "ok"),
	)
	for i, d := range []time.Duration{118, 111, 104, 92, 81, 66, 52, 38, 27, 17, 9, 3} {
		e := ev(d*time.Minute, "cove", "exited", fmt.Sprintf("process %d exited with status 2", 44100+i), "observed")
		e.Version = "1.4.2"
		f.events = append(f.events, e)
		if i%4 == 1 {
			f.events = append(f.events, ev(d*time.Minute-30*time.Second, "cove", "restart", "health: GET /health answered 503, 3 times in a row", "ok"))
		} else {
			s := ev(d*time.Minute-20*time.Second, "cove", "start", "process exited; restart 1 of the backoff", "ok")
			s.PID, s.Version = 44200+i, "1.4.2"
			f.events = append(f.events, s)
		}
	}
	f.events = append(f.events,
		ev(70*time.Minute, "harbor", "upgrade", "rollout invoicing 1.5.0: canary", "ok"),
		ev(24*time.Minute, "harbor", "rollback", "health gate failed on 1.5.0: GET /health answered 500 for 60s", "ok"),
		ev(14*time.Minute, "dune", "hold", "database db-west is down: upgrade to 1.4.2 waits", "skipped"),
		ev(30*time.Minute, "acme", "restart", "env.LOCALE changed", "ok"),
		ev(3*time.Hour, "fjord", "suspend", "suspend requested", "ok"),
		ev(5*time.Hour, "kiln", "upgrade", "rollout invoicing 1.4.3", "error"),
		ev(2*time.Hour, "ember", "upgrade", "rollout shop 2.3.1: canary", "ok"),
		ev(90*time.Minute, "grove", "upgrade", "rollout shop 2.3.1: wave 1", "ok"),
		ev(80*time.Minute, "maple", "upgrade", "rollout shop 2.3.1: wave 1", "ok"),
		ev(4*time.Second, "iris", "upgrade", "rollout shop 2.3.1: wave 2", "ok"),
		ev(5*time.Hour, "lumen", "restart", "health: GET /health: connection refused, 3 times in a row", "ok"),
		ev(26*time.Hour, "bolt", "exited", "process 41002 was killed by signal 9", "observed"),
		ev(3*24*time.Hour, "jade", "stop", "removed from the specs", "ok"),
	)
	for i := range f.events {
		if f.events[i].Merchant == "kiln" {
			f.events[i].Error = f.doc.Merchants[10].LastError
		}
	}
	for _, e := range []struct {
		d    time.Duration
		name string
		up   bool
		err  string
	}{
		{21 * time.Hour, "db-east", false, "dial tcp db-east.internal:5432: connect: connection refused"},
		{20 * time.Hour, "db-east", true, ""},
		{6 * time.Hour, "db-west", false, "dial tcp db-west.internal:5432: i/o timeout"},
		{5*time.Hour + 40*time.Minute, "db-west", true, ""},
		{14 * time.Minute, "db-west", false, "dial tcp db-west.internal:5432: i/o timeout"},
	} {
		what := map[bool]string{true: "up", false: "down"}[e.up]
		f.events = append(f.events, state.Event{Time: at(e.d), Action: "database " + what, Reason: "database " + e.name + " is " + what, Result: "observed", Error: e.err})
	}
	slices.SortStableFunc(f.events, func(a, b state.Event) int { return a.Time.Compare(b.Time) })
	for i := range f.doc.Merchants {
		m := &f.doc.Merchants[i]
		for j := len(f.events) - 1; j >= 0; j-- {
			if f.events[j].Merchant == m.ID {
				m.LastEvent = ptr(f.events[j])
				break
			}
		}
	}
	t0 := at(2 * time.Minute).UTC()
	stamp := func(s int) string { return t0.Add(time.Duration(s) * time.Second).Format("2006-01-02T15:04:05.000Z") }
	f.logs["cove"] = []string{
		stamp(0) + " invoicing 1.4.2 starting for merchant cove on :8103",
		stamp(0) + " database: connected (schema 7)",
		stamp(1) + " templates: loading 41 templates from templates/",
		stamp(1) + ` panic: template "zh_CN/receipt.tmpl": function "currency" not defined`,
		"",
		"goroutine 1 [running]:",
		"main.mustLoadTemplates({0xc0000a6000, 0x29})",
		"\t/src/invoicing/templates.go:58 +0x1d4",
		"main.main()",
		"\t/src/invoicing/main.go:31 +0x2a5",
	}
	f.logs["acme"] = []string{
		stamp(0) + ` GET /health 200 0.4ms`,
		stamp(3) + ` POST /invoices 201 18.2ms invoice=INV-2026-00412`,
		stamp(9) + ` GET /invoices/INV-2026-00412.pdf 200 41.0ms`,
		stamp(15) + ` GET /health 200 0.3ms`,
	}
	return f
}

// change edits the status document and notifies the subscribers.
func (f *fakeDaemon) change(edit func(*api.Status)) {
	f.mu.Lock()
	edit(&f.doc)
	f.mu.Unlock()
	f.notify(api.Change{})
}

// merchant edits one merchant.
func (f *fakeDaemon) merchant(id string, edit func(*api.MerchantStatus)) {
	f.change(func(s *api.Status) {
		for i := range s.Merchants {
			if s.Merchants[i].ID == id {
				edit(&s.Merchants[i])
			}
		}
	})
}

func (f *fakeDaemon) record(ev state.Event) {
	f.mu.Lock()
	f.events = append(f.events, ev)
	f.mu.Unlock()
	f.notify(api.Change{Event: &ev})
}

func (f *fakeDaemon) notify(c api.Change) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ch := range f.subs {
		select {
		case ch <- c:
		default:
		}
	}
}

func (f *fakeDaemon) called() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeDaemon) act(s string) {
	f.mu.Lock()
	f.calls = append(f.calls, s)
	f.mu.Unlock()
}

func (f *fakeDaemon) known(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !slices.ContainsFunc(f.doc.Merchants, func(m api.MerchantStatus) bool { return m.ID == id }) {
		return fmt.Errorf("%w: merchant %q is not in the specs", api.ErrNotFound, id)
	}
	return nil
}

func (f *fakeDaemon) Status(context.Context) (api.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	doc := f.doc
	doc.Merchants = slices.Clone(f.doc.Merchants)
	return doc, nil
}

func (f *fakeDaemon) Plan(context.Context) (*api.Plan, error) { return &api.Plan{}, nil }

func (f *fakeDaemon) Apply(context.Context, api.ApplyRequest, api.Hooks) (int, error) {
	return 0, nil
}

func (f *fakeDaemon) Sync(context.Context) (string, error) { return f.doc.Revision, nil }

func (f *fakeDaemon) Restart(_ context.Context, id string) error {
	if err := f.known(id); err != nil {
		return err
	}
	f.act("restart " + id)
	return nil
}

func (f *fakeDaemon) Suspend(_ context.Context, id string, on bool) error {
	if err := f.known(id); err != nil {
		return err
	}
	f.act(map[bool]string{true: "suspend ", false: "resume "}[on] + id)
	return nil
}

func (f *fakeDaemon) Rollback(_ context.Context, id string, req api.RollbackRequest) (string, error) {
	if err := f.known(id); err != nil {
		return "", err
	}
	f.act("rollback " + id + " " + req.To)
	return cmp.Or(req.To, "1.4.1"), nil
}

func (f *fakeDaemon) History(_ context.Context, q api.HistoryQuery) ([]state.Event, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []state.Event
	for _, ev := range f.events {
		if q.Merchant != "" && ev.Merchant == q.Merchant || q.Database != "" && strings.HasPrefix(ev.Reason, "database "+q.Database+" is ") {
			out = append(out, ev)
		}
	}
	if len(out) > q.N {
		out = out[len(out)-q.N:]
	}
	return out, nil
}

func (f *fakeDaemon) Logs(ctx context.Context, q api.LogQuery, w io.Writer) error {
	f.mu.Lock()
	lines, ok := f.logs[q.Merchant]
	f.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: no log of %s", api.ErrNotFound, q.Merchant)
	}
	var keep []string
	for _, l := range lines {
		if q.Grep == nil || q.Grep.MatchString(l) {
			keep = append(keep, l)
		}
	}
	if len(keep) > q.N {
		keep = keep[len(keep)-q.N:]
	}
	for _, l := range keep {
		if _, err := io.WriteString(w, l+"\n"); err != nil {
			return err
		}
	}
	if q.Follow {
		<-ctx.Done()
	}
	return nil
}

func (f *fakeDaemon) Subscribe(ctx context.Context) <-chan api.Change {
	ch := make(chan api.Change, 64)
	f.mu.Lock()
	f.subs = append(f.subs, ch)
	f.mu.Unlock()
	go func() {
		<-ctx.Done()
		f.mu.Lock()
		defer f.mu.Unlock()
		f.subs = slices.DeleteFunc(f.subs, func(c chan api.Change) bool { return c == ch })
		close(ch)
	}()
	return ch
}

var _ api.Daemon = (*fakeDaemon)(nil)
