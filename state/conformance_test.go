package state

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// testStoreConformance checks the behaviour every Store backend must have.
// open returns a new, empty store of its own (not shared with any other call)
// and arranges its cleanup with t.Cleanup. The suite uses only the Store
// interface. Times are given at microsecond precision and compared with
// time.Equal, so backends may store them in any zone at that precision.
func testStoreConformance(t *testing.T, open func(t *testing.T) Store) {
	t.Run("EmptyLoad", func(t *testing.T) { testEmptyLoad(t, open(t)) })
	t.Run("SaveIncrementsSerial", func(t *testing.T) { testSaveIncrementsSerial(t, open(t)) })
	t.Run("StaleSaveRefused", func(t *testing.T) { testStaleSaveRefused(t, open(t)) })
	t.Run("OtherLineageRefused", func(t *testing.T) { testOtherLineageRefused(t, open(t)) })
	t.Run("InvalidRecordsRefused", func(t *testing.T) { testInvalidRecordsRefused(t, open(t)) })
	t.Run("RoundTrip", func(t *testing.T) { testRoundTrip(t, open(t)) })
	t.Run("Events", func(t *testing.T) { testEvents(t, open(t)) })
	t.Run("LockExclusion", func(t *testing.T) { testLockExclusion(t, open(t)) })
	t.Run("LockWait", func(t *testing.T) { testLockWait(t, open(t)) })
	t.Run("LockWaitCancelled", func(t *testing.T) { testLockWaitCancelled(t, open(t)) })
	t.Run("ConcurrentSave", func(t *testing.T) { testConcurrentSave(t, open(t)) })
	t.Run("CancelledContext", func(t *testing.T) { testCancelledContext(t, open(t)) })
}

// fullState returns a state with every field of every record set.
func fullState(lineage string) *State {
	at := func(sec int) time.Time { return time.Date(2026, 11, 22, 3, 20, sec, 123456000, time.UTC) }
	east := time.FixedZone("east", 8*3600)
	s := New(lineage)
	s.Revision = "3f2c9e1"
	s.Merchants["acme"] = &Merchant{
		ID:           "acme",
		Package:      "invoicing",
		Version:      "1.4.2",
		Port:         8101,
		PID:          4242,
		StartTime:    987654321,
		Applied:      map[string]string{"env.LOCALE": "sha256:ab12", "database": "sha256:cd34", "command": "sha256:ef56"},
		Phase:        "running",
		Suspended:    true,
		Restarts:     3,
		Failures:     2,
		StartedAt:    at(1),
		ExitedAt:     at(2).In(east),
		NextAttempt:  at(3),
		LastError:    "exit status 1: \"boom\"\n<html>",
		GoodVersions: []string{"1.4.0", "1.4.1"},
		BadVersions:  []string{"1.5.0-rc1"},
		Revision:     "3f2c9e0",
	}
	s.Merchants["bolt"] = &Merchant{ID: "bolt", Port: 8102, Phase: "stopped"}
	s.Databases["db-east"] = &Database{Name: "db-east", Up: true, Since: at(4), LastError: "connection refused", Latency: 1500 * time.Microsecond}
	s.Databases["db-west"] = &Database{Name: "db-west"}
	s.Rollouts[RolloutKey("invoicing", "1.5.0")] = &Rollout{Package: "invoicing", Version: "1.5.0", Succeeded: []string{"acme"},
		Failed: []string{"bolt"}, Halted: true, Reason: "canary bolt failed", StartedAt: at(5), HaltedAt: at(6)}
	return s
}

// normState returns a copy of s with every time in UTC, for comparison.
func normState(s *State) *State {
	c := *s
	c.Merchants = map[string]*Merchant{}
	for k, m := range s.Merchants {
		mc := *m
		mc.StartedAt, mc.ExitedAt, mc.NextAttempt = mc.StartedAt.UTC(), mc.ExitedAt.UTC(), mc.NextAttempt.UTC()
		c.Merchants[k] = &mc
	}
	c.Databases = map[string]*Database{}
	for k, d := range s.Databases {
		dc := *d
		dc.Since = dc.Since.UTC()
		c.Databases[k] = &dc
	}
	c.Rollouts = map[string]*Rollout{}
	for k, r := range s.Rollouts {
		rc := *r
		rc.StartedAt, rc.HaltedAt = rc.StartedAt.UTC(), rc.HaltedAt.UTC()
		c.Rollouts[k] = &rc
	}
	return &c
}

func normEvents(es []Event) []Event {
	out := make([]Event, len(es))
	for i, e := range es {
		e.Time = e.Time.UTC()
		out[i] = e
	}
	return out
}

func mustLoad(t *testing.T, st Store) *State {
	t.Helper()
	s, err := st.Load(context.Background())
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return s
}

func mustSave(t *testing.T, st Store, s *State) {
	t.Helper()
	if err := st.Save(context.Background(), s); err != nil {
		t.Fatalf("Save at serial %d: %v", s.Serial, err)
	}
}

func testEmptyLoad(t *testing.T, st Store) {
	s := mustLoad(t, st)
	if s.Serial != 0 || s.Format != FormatVersion || s.Lineage == "" {
		t.Errorf("empty Load = serial %d, format %d, lineage %q; want 0, %d, non-empty", s.Serial, s.Format, s.Lineage, FormatVersion)
	}
	if s.Merchants == nil || s.Databases == nil || len(s.Merchants) != 0 || len(s.Databases) != 0 {
		t.Errorf("empty Load maps = %#v, %#v; want empty and non-nil", s.Merchants, s.Databases)
	}
	if again := mustLoad(t, st); again.Lineage != s.Lineage {
		t.Errorf("second Load of an unsaved store has lineage %q, first had %q", again.Lineage, s.Lineage)
	}
	es, err := st.Events(context.Background(), "", 0)
	if err != nil || len(es) != 0 {
		t.Errorf("Events of an empty store = %v, %v; want none", es, err)
	}
}

func testSaveIncrementsSerial(t *testing.T, st Store) {
	s := mustLoad(t, st)
	lineage := s.Lineage
	for want := uint64(1); want <= 3; want++ {
		s.Revision = fmt.Sprint("rev", want)
		mustSave(t, st, s)
		if s.Serial != want {
			t.Fatalf("after Save, s.Serial = %d; want %d", s.Serial, want)
		}
		got := mustLoad(t, st)
		if got.Serial != want || got.Revision != s.Revision || got.Lineage != lineage {
			t.Fatalf("Load after Save = serial %d revision %q lineage %q; want %d %q %q", got.Serial, got.Revision, got.Lineage, want, s.Revision, lineage)
		}
	}
}

func testStaleSaveRefused(t *testing.T, st Store) {
	a, b := mustLoad(t, st), mustLoad(t, st)
	a.Revision = "a"
	mustSave(t, st, a)

	b.Revision = "b"
	err := st.Save(context.Background(), b)
	if !errors.Is(err, ErrStale) {
		t.Fatalf("Save of a stale state: %v; want ErrStale", err)
	}
	if b.Serial != 0 {
		t.Errorf("refused Save changed s.Serial to %d", b.Serial)
	}
	if got := mustLoad(t, st); got.Serial != 1 || got.Revision != "a" {
		t.Errorf("after refused Save, Load = serial %d revision %q; want 1 \"a\"", got.Serial, got.Revision)
	}

	ahead := mustLoad(t, st)
	ahead.Serial = 7
	if err := st.Save(context.Background(), ahead); !errors.Is(err, ErrStale) {
		t.Errorf("Save with a serial ahead of the store: %v; want ErrStale", err)
	}
	if got := mustLoad(t, st); got.Serial != 1 {
		t.Errorf("after refused Save, serial = %d; want 1", got.Serial)
	}
}

func testOtherLineageRefused(t *testing.T, st Store) {
	s := mustLoad(t, st)
	mustSave(t, st, s)
	other := New("another-history")
	other.Serial = s.Serial
	other.Revision = "other"
	if err := st.Save(context.Background(), other); !errors.Is(err, ErrStale) {
		t.Errorf("Save of another lineage: %v; want ErrStale", err)
	}
	if got := mustLoad(t, st); got.Lineage != s.Lineage || got.Revision == "other" {
		t.Errorf("refused Save of another lineage was written: %+v", got)
	}
}

func testInvalidRecordsRefused(t *testing.T, st Store) {
	for name, mutate := range map[string]func(*State){
		"nil merchant":       func(s *State) { s.Merchants["acme"] = nil },
		"merchant key":       func(s *State) { s.Merchants["acme"] = &Merchant{ID: "bolt"} },
		"nil database":       func(s *State) { s.Databases["db"] = nil },
		"database key":       func(s *State) { s.Databases["db"] = &Database{Name: "other"} },
		"empty merchant id":  func(s *State) { s.Merchants["acme"] = &Merchant{} },
		"empty database key": func(s *State) { s.Databases["db"] = &Database{} },
	} {
		s := mustLoad(t, st)
		mutate(s)
		err := st.Save(context.Background(), s)
		if err == nil || errors.Is(err, ErrStale) {
			t.Errorf("%s: Save = %v; want a validation error", name, err)
		}
	}
	if got := mustLoad(t, st); got.Serial != 0 {
		t.Errorf("refused Saves moved the serial to %d", got.Serial)
	}
}

func testRoundTrip(t *testing.T, st Store) {
	s := fullState(mustLoad(t, st).Lineage)
	want := normState(s)
	mustSave(t, st, s)
	want.Serial = 1

	got := mustLoad(t, st)
	if !reflect.DeepEqual(normState(got), want) {
		t.Fatalf("round trip changed the state\n got: %+v\nwant: %+v", normState(got), want)
	}
	for id := range want.Merchants {
		if g, w := *normState(got).Merchants[id], *want.Merchants[id]; !reflect.DeepEqual(g, w) {
			t.Errorf("merchant %s\n got: %+v\nwant: %+v", id, g, w)
		}
	}
	// What was loaded saves again unchanged.
	mustSave(t, st, got)
	want.Serial = 2
	if again := mustLoad(t, st); !reflect.DeepEqual(normState(again), want) {
		t.Errorf("second round trip changed the state\n got: %+v\nwant: %+v", normState(again), want)
	}
}

func testEvents(t *testing.T, st Store) {
	ctx := context.Background()
	base := time.Date(2026, 11, 22, 3, 20, 0, 0, time.UTC)
	var all []Event
	for i := range 7 {
		m := []string{"acme", "bolt", ""}[i%3]
		all = append(all, Event{
			Time: base.Add(time.Duration(i) * time.Second), Merchant: m, Action: "restart",
			Reason: fmt.Sprintf("reason %d, not only about acme: \"quoted\"\nnewline", i), Result: "ok",
			Error: "err", Revision: "rev", Version: "1.4.2", PID: 100 + i,
		})
	}
	// Times out of order: order is append order, not time order.
	all[5].Time = base.Add(-time.Hour)
	if err := st.AppendEvent(ctx); err != nil {
		t.Fatalf("AppendEvent of nothing: %v", err)
	}
	if err := st.AppendEvent(ctx, all[:3]...); err != nil {
		t.Fatalf("AppendEvent: %v", err)
	}
	for _, e := range all[3:] {
		if err := st.AppendEvent(ctx, e); err != nil {
			t.Fatalf("AppendEvent: %v", err)
		}
	}
	pick := func(m string, idx ...int) []Event {
		out := []Event{}
		for _, i := range idx {
			if m != "" && all[i].Merchant != m {
				panic("bad test")
			}
			out = append(out, all[i])
		}
		return out
	}
	for _, tc := range []struct {
		merchant string
		limit    int
		want     []Event
	}{
		{"", 0, pick("", 0, 1, 2, 3, 4, 5, 6)},
		{"", -1, pick("", 0, 1, 2, 3, 4, 5, 6)},
		{"", 3, pick("", 4, 5, 6)},
		{"", 1, pick("", 6)},
		{"", 100, pick("", 0, 1, 2, 3, 4, 5, 6)},
		{"acme", 0, pick("acme", 0, 3, 6)},
		{"acme", 2, pick("acme", 3, 6)},
		{"bolt", 0, pick("bolt", 1, 4)},
		{"bolt", 5, pick("bolt", 1, 4)},
		{"nobody", 0, pick("")},
	} {
		got, err := st.Events(ctx, tc.merchant, tc.limit)
		if err != nil {
			t.Fatalf("Events(%q, %d): %v", tc.merchant, tc.limit, err)
		}
		if !reflect.DeepEqual(normEvents(got), normEvents(tc.want)) {
			t.Errorf("Events(%q, %d)\n got: %+v\nwant: %+v", tc.merchant, tc.limit, got, tc.want)
		}
	}
}

// lockError asserts that err reports the lock as held by this process for who.
func checkLockError(t *testing.T, err error, pid int, who string) {
	t.Helper()
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("Lock while held: %v; want ErrLocked", err)
	}
	var le *LockError
	if !errors.As(err, &le) {
		t.Fatalf("Lock while held: %T is not a *LockError", err)
	}
	msg := err.Error()
	for _, want := range []string{fmt.Sprintf("locked by pid %d (%s) since ", pid, who), "-lock-timeout"} {
		if !strings.Contains(msg, want) {
			t.Errorf("lock error %q does not contain %q", msg, want)
		}
	}
	if le.PID != pid || le.Who != who || le.Since.IsZero() {
		t.Errorf("LockError = %+v; want pid %d who %q and a time", le, pid, who)
	}
}

func testLockExclusion(t *testing.T, st Store) {
	ctx := context.Background()
	unlock, err := st.Lock(ctx, "steward run", 0)
	if err != nil {
		t.Fatalf("Lock: %v", err)
	}
	_, err = st.Lock(ctx, "steward apply", 0)
	checkLockError(t, err, os.Getpid(), "steward run")
	_, err = st.Lock(ctx, "steward apply", 20*time.Millisecond)
	checkLockError(t, err, os.Getpid(), "steward run")

	if err := unlock(); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	unlock2, err := st.Lock(ctx, "steward apply", 0)
	if err != nil {
		t.Fatalf("Lock after Unlock: %v", err)
	}
	if err := unlock2(); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
}

func testLockWait(t *testing.T, st Store) {
	ctx := context.Background()
	unlock, err := st.Lock(ctx, "steward run", 0)
	if err != nil {
		t.Fatalf("Lock: %v", err)
	}
	started := make(chan struct{})
	got := make(chan error, 1)
	go func() {
		close(started)
		u, err := st.Lock(ctx, "steward apply", time.Minute)
		if err == nil {
			err = u()
		}
		got <- err
	}()
	<-started
	select {
	case err := <-got:
		t.Fatalf("Lock with wait returned while the lock was held: %v", err)
	default:
	}
	if err := unlock(); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("Lock with wait after the holder unlocked: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Lock with wait did not return 30s after the holder unlocked")
	}
}

func testLockWaitCancelled(t *testing.T, st Store) {
	unlock, err := st.Lock(context.Background(), "steward run", 0)
	if err != nil {
		t.Fatalf("Lock: %v", err)
	}
	defer unlock()
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan error, 1)
	go func() {
		u, err := st.Lock(ctx, "steward apply", time.Hour)
		if err == nil {
			u()
		}
		got <- err
	}()
	cancel()
	select {
	case err := <-got:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Lock with a cancelled context: %v; want context.Canceled", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Lock did not return 30s after its context was cancelled")
	}
}

func testConcurrentSave(t *testing.T, st Store) {
	base := mustLoad(t, st)
	mustSave(t, st, base)
	const n = 32
	states := make([]*State, n)
	for i := range states {
		states[i] = mustLoad(t, st)
		states[i].Revision = fmt.Sprint("writer-", i)
	}
	start := make(chan struct{})
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = st.Save(context.Background(), states[i])
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil:
			if winner >= 0 {
				t.Errorf("writers %d and %d both saved against serial %d", winner, i, base.Serial)
			}
			winner = i
		case !errors.Is(err, ErrStale):
			t.Errorf("writer %d: %v; want nil or ErrStale", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no writer saved")
	}
	got := mustLoad(t, st)
	if got.Serial != base.Serial+1 || got.Revision != states[winner].Revision {
		t.Errorf("after concurrent Saves, Load = serial %d revision %q; want %d %q", got.Serial, got.Revision, base.Serial+1, states[winner].Revision)
	}
}

func testCancelledContext(t *testing.T, st Store) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s := mustLoad(t, st)
	if _, err := st.Load(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Load: %v; want context.Canceled", err)
	}
	if err := st.Save(ctx, s); !errors.Is(err, context.Canceled) {
		t.Errorf("Save: %v; want context.Canceled", err)
	}
	if err := st.AppendEvent(ctx, Event{Action: "start"}); !errors.Is(err, context.Canceled) {
		t.Errorf("AppendEvent: %v; want context.Canceled", err)
	}
	if _, err := st.Events(ctx, "", 0); !errors.Is(err, context.Canceled) {
		t.Errorf("Events: %v; want context.Canceled", err)
	}
	if _, err := st.Lock(ctx, "x", 0); !errors.Is(err, context.Canceled) {
		t.Errorf("Lock: %v; want context.Canceled", err)
	}
	if got := mustLoad(t, st); got.Serial != 0 {
		t.Errorf("Save with a cancelled context was written: serial %d", got.Serial)
	}
	if es, err := st.Events(context.Background(), "", 0); err != nil || len(es) != 0 {
		t.Errorf("AppendEvent with a cancelled context was written: %v, %v", es, err)
	}
}
