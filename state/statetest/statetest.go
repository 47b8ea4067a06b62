// Package statetest is the conformance suite every state.Store backend
// runs: records and their revisions, compare-and-swap, no-op writes,
// rollouts, databases, the fingerprint key, events and the writer lease.
//
//	func TestConformance(t *testing.T) {
//		statetest.Run(t, func(t *testing.T) state.Store { return openMyStore(t) })
//	}
//
// open must return a new, empty store each call; Run closes it.
package statetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"steward/reconcile"
	"steward/state"
)

// Run runs the suite against stores made by open.
func Run(t *testing.T, open func(t *testing.T) state.Store) {
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, st state.Store)
	}{
		{"EmptyLoad", testEmptyLoad},
		{"EveryFieldRoundTrips", testEveryFieldRoundTrips},
		{"RevisionsIncrease", testRevisionsIncrease},
		{"StaleWriteRefused", testStaleWriteRefused},
		{"NoOpWriteChangesNothing", testNoOpWriteChangesNothing},
		{"OneRecordMovingLeavesOthersValid", testOneRecordMoving},
		{"ConcurrentWritesOneWins", testConcurrentWritesOneWins},
		{"Delete", testDelete},
		{"Rollouts", testRollouts},
		{"Databases", testDatabases},
		{"Key", testKey},
		{"Events", testEvents},
		{"LeaseExclusion", testLeaseExclusion},
		{"LeaseWait", testLeaseWait},
		{"LeaseScopes", testLeaseScopes},
		{"InvalidNames", testInvalidNames},
		{"CancelledContext", testCancelledContext},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := open(t)
			t.Cleanup(func() { st.Close() })
			tc.fn(t, st)
		})
	}
}

var ctx = context.Background()

func load(t *testing.T, st state.Store) *state.Snapshot {
	t.Helper()
	s, err := st.Load(ctx)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return s
}

func put(t *testing.T, st state.Store, r *reconcile.Record) {
	t.Helper()
	if err := st.PutMerchant(ctx, r); err != nil {
		t.Fatalf("PutMerchant(%s): %v", r.ID, err)
	}
}

// FullRecord returns a merchant record with every field set, so that a
// backend that drops one fails the round trip (crash-resume depends on
// Change, Candidate and Pin; the backoff on Failures and NextAttempt).
func FullRecord(id string) *reconcile.Record {
	ts := func(s int) time.Time { return time.Date(2026, 11, 22, 12, 0, s, 123456789, time.UTC) }
	schema := int64(3)
	return &reconcile.Record{
		ID: id, Package: "invoicing", Port: 8101, AltPort: 8102, UID: 70001,
		Current:   reconcile.Instance{PID: 4242, StartTime: 987654, Port: 8101, Version: "1.1.0", StartedAt: ts(1), Routed: true},
		Candidate: &reconcile.Instance{PID: 4343, StartTime: 987655, Port: 8102, Version: "1.2.0-rc1", StartedAt: ts(2), Routed: true},
		Applied:   map[string]string{"env.LOCALE": "zh_CN", "database.dsn": "hmac:0011"},
		Phase:     reconcile.PhaseCrashLoop, Suspended: true, Restarts: 7, Died: true, Failures: 3,
		ExitedAt: ts(3), NextAttempt: ts(4), LastError: "boom", ErrorClass: reconcile.Stalled,
		GoodVersions: []string{"1.0.0", "1.1.0"}, BadVersions: []string{"1.2.0"},
		Pin: &reconcile.Pin{Version: "1.0.0", ForSpec: "1.1.0", At: ts(5)},
		Change: &reconcile.Change{Kind: reconcile.Upgrade, From: "1.1.0", To: "1.2.0-rc1", Rollout: "invoicing@1.2.0-rc1", Canary: true,
			Step: reconcile.StepStarted, StartedAt: ts(6), Undo: true, Reason: "unhealthy"},
		Schema: &schema, Revision: "sha256:abc",
	}
}

// allFieldsSet fails when a field of v (a struct) is its zero value,
// recursively through structs and pointers, so that FullRecord keeps up
// with new fields.
func allFieldsSet(t *testing.T, v reflect.Value, path string) {
	t.Helper()
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			t.Errorf("FullRecord leaves %s unset", path)
			return
		}
		allFieldsSet(t, v.Elem(), path)
	case reflect.Struct:
		if v.Type() == reflect.TypeOf(time.Time{}) {
			if v.Interface().(time.Time).IsZero() {
				t.Errorf("FullRecord leaves %s unset", path)
			}
			return
		}
		for i := range v.NumField() {
			f := v.Type().Field(i)
			if f.Name == "Rev" {
				continue
			}
			allFieldsSet(t, v.Field(i), path+"."+f.Name)
		}
	default:
		if v.IsZero() {
			t.Errorf("FullRecord leaves %s unset", path)
		}
	}
}

func testEmptyLoad(t *testing.T, st state.Store) {
	s := load(t, st)
	if len(s.Merchants) != 0 || len(s.Rollouts) != 0 || len(s.Databases) != 0 || s.Revision != 0 {
		t.Errorf("empty store Load = %+v", s)
	}
	if s.Merchants == nil || s.Rollouts == nil || s.Databases == nil {
		t.Error("Load returned nil maps")
	}
	if r, err := st.Merchant(ctx, "nobody"); err != nil || r != nil {
		t.Errorf("Merchant of a missing record = %v, %v", r, err)
	}
	if es, err := st.Events(ctx, "", 0); err != nil || len(es) != 0 {
		t.Errorf("Events of an empty store = %v, %v", es, err)
	}
}

func testEveryFieldRoundTrips(t *testing.T, st state.Store) {
	r := FullRecord("acme")
	allFieldsSet(t, reflect.ValueOf(r), "Record")
	put(t, st, r)
	if r.Rev == 0 {
		t.Fatal("PutMerchant left Rev at 0")
	}
	got, err := st.Merchant(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, r) {
		t.Errorf("Merchant = %+v\nwant        %+v", got, r)
	}
	if s := load(t, st); !reflect.DeepEqual(s.Merchants["acme"], r) || s.Lineage == "" || s.Revision < r.Rev {
		t.Errorf("Load = lineage %q revision %d %+v; want the record at %d", s.Lineage, s.Revision, s.Merchants["acme"], r.Rev)
	}
}

func testRevisionsIncrease(t *testing.T, st state.Store) {
	a := &reconcile.Record{ID: "a", Port: 1}
	b := &reconcile.Record{ID: "b", Port: 2}
	put(t, st, a)
	put(t, st, b)
	r1 := a.Rev
	a.Port = 3
	put(t, st, a)
	if !(a.Rev > r1 && b.Rev > r1 && a.Rev > b.Rev) {
		t.Errorf("revisions a %d→%d, b %d: every write takes the next revision", r1, a.Rev, b.Rev)
	}
	if s := load(t, st); s.Revision != a.Rev {
		t.Errorf("store revision %d, want the last write's %d", s.Revision, a.Rev)
	}
}

func testStaleWriteRefused(t *testing.T, st state.Store) {
	r := &reconcile.Record{ID: "acme", Port: 1}
	put(t, st, r)
	old := r.Clone()
	r.Port = 2
	put(t, st, r)
	old.Port = 3
	err := st.PutMerchant(ctx, old)
	var se *state.StaleError
	if !errors.Is(err, state.ErrStale) || !errors.As(err, &se) {
		t.Fatalf("stale PutMerchant = %v; want ErrStale", err)
	}
	if got, _ := st.Merchant(ctx, "acme"); got.Port != 2 {
		t.Errorf("a stale write landed: port %d", got.Port)
	}
	// A record that was never read cannot claim a revision.
	if err := st.PutMerchant(ctx, &reconcile.Record{ID: "new", Rev: 5}); !errors.Is(err, state.ErrStale) {
		t.Errorf("PutMerchant of a new record at revision 5 = %v; want ErrStale", err)
	}
	// A record made twice from nothing: the second loses.
	if err := st.PutMerchant(ctx, &reconcile.Record{ID: "acme"}); !errors.Is(err, state.ErrStale) {
		t.Errorf("PutMerchant of an existing record at revision 0 = %v; want ErrStale", err)
	}
}

func testNoOpWriteChangesNothing(t *testing.T, st state.Store) {
	r := FullRecord("acme")
	put(t, st, r)
	rev := r.Rev
	before := load(t, st)
	same := r.Clone()
	put(t, st, same)
	if same.Rev != rev {
		t.Errorf("a no-op write moved the record from revision %d to %d", rev, same.Rev)
	}
	if after := load(t, st); after.Revision != before.Revision {
		t.Errorf("a no-op write moved the store from revision %d to %d", before.Revision, after.Revision)
	}
}

func testOneRecordMoving(t *testing.T, st state.Store) {
	a := &reconcile.Record{ID: "a", Port: 1}
	b := &reconcile.Record{ID: "b", Port: 2}
	put(t, st, a)
	put(t, st, b)
	heldB := b.Clone()
	a.Port = 5
	put(t, st, a)
	heldB.Port = 6
	if err := st.PutMerchant(ctx, heldB); err != nil {
		t.Errorf("a write of b refused after a wrote: %v (compare-and-swap is per record)", err)
	}
}

func testConcurrentWritesOneWins(t *testing.T, st state.Store) {
	r := &reconcile.Record{ID: "acme", Port: 1}
	put(t, st, r)
	const n = 16
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := range n {
		c := r.Clone()
		c.Port = 100 + i
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := st.PutMerchant(ctx, c)
			switch {
			case err == nil:
				wins.Add(1)
			case !errors.Is(err, state.ErrStale):
				t.Errorf("concurrent PutMerchant: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Errorf("%d of %d writers from one revision won; want exactly 1", wins.Load(), n)
	}
}

func testDelete(t *testing.T, st state.Store) {
	r := &reconcile.Record{ID: "acme", Port: 1}
	put(t, st, r)
	if err := st.DeleteMerchant(ctx, "acme", r.Rev-1); !errors.Is(err, state.ErrStale) {
		t.Errorf("DeleteMerchant at an old revision = %v; want ErrStale", err)
	}
	if err := st.DeleteMerchant(ctx, "acme", r.Rev); err != nil {
		t.Fatalf("DeleteMerchant: %v", err)
	}
	if got, err := st.Merchant(ctx, "acme"); got != nil || err != nil {
		t.Errorf("Merchant after delete = %v, %v", got, err)
	}
	if err := st.DeleteMerchant(ctx, "acme", 0); err != nil {
		t.Errorf("DeleteMerchant of a missing record at 0 = %v", err)
	}
	// A record made again never reuses a revision.
	again := &reconcile.Record{ID: "acme", Port: 2}
	put(t, st, again)
	if again.Rev <= r.Rev {
		t.Errorf("a record made again got revision %d, not above the deleted one's %d", again.Rev, r.Rev)
	}
}

func testRollouts(t *testing.T, st state.Store) {
	ro := &reconcile.Rollout{Package: "invoicing", Version: "1.2.0", Succeeded: []string{"a"}, Failed: []string{"b"}, Halted: true, Reason: "canary b failed",
		StartedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), HaltedAt: time.Date(2026, 1, 2, 3, 5, 5, 0, time.UTC)}
	if err := st.PutRollout(ctx, ro); err != nil {
		t.Fatal(err)
	}
	s := load(t, st)
	if !reflect.DeepEqual(s.Rollouts[ro.Key()], ro) {
		t.Errorf("rollout = %+v, want %+v", s.Rollouts[ro.Key()], ro)
	}
	old := ro.Clone()
	ro.Succeeded = append(ro.Succeeded, "c")
	if err := st.PutRollout(ctx, ro); err != nil {
		t.Fatal(err)
	}
	if err := st.PutRollout(ctx, old); !errors.Is(err, state.ErrStale) {
		t.Errorf("stale PutRollout = %v", err)
	}
	if err := st.DeleteRollout(ctx, ro.Key(), ro.Rev); err != nil {
		t.Fatal(err)
	}
	if s := load(t, st); len(s.Rollouts) != 0 {
		t.Errorf("rollouts after delete: %v", s.Rollouts)
	}
}

func testDatabases(t *testing.T, st state.Store) {
	d := &state.Database{Name: "db-east", Up: false, Since: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), LastError: "refused", Latency: 3 * time.Millisecond}
	if err := st.PutDatabase(ctx, d); err != nil {
		t.Fatal(err)
	}
	d2 := *d
	d2.Up = true
	if err := st.PutDatabase(ctx, &d2); err != nil {
		t.Fatal(err)
	}
	if s := load(t, st); !reflect.DeepEqual(s.Databases["db-east"], &d2) {
		t.Errorf("database = %+v, want the last write %+v", s.Databases["db-east"], d2)
	}
}

func testKey(t *testing.T, st state.Store) {
	if s := load(t, st); s.Key != nil {
		t.Errorf("a store never written has a key")
	}
	k1, err := st.Key(ctx)
	if err != nil || len(k1) < 16 {
		t.Fatalf("Key = %x, %v", k1, err)
	}
	k2, err := st.Key(ctx)
	if err != nil || !slices.Equal(k1, k2) {
		t.Errorf("Key changed: %x then %x (%v)", k1, k2, err)
	}
	if s := load(t, st); !slices.Equal(s.Key, k1) {
		t.Errorf("Load's key %x, want %x", s.Key, k1)
	}
}

func testEvents(t *testing.T, st state.Store) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 10 {
		m := "acme"
		if i%2 == 1 {
			m = "bluebird"
		}
		if err := st.AppendEvent(ctx, state.Event{Time: base.Add(time.Duration(i) * time.Second), Merchant: m, Action: fmt.Sprint("a", i), Reason: "r", Result: "ok",
			Error: "e", Revision: "rev", Version: "1.0.0", PID: i, Detail: "d", Reconcile: "rc"}); err != nil {
			t.Fatal(err)
		}
	}
	all, err := st.Events(ctx, "", 0)
	if err != nil || len(all) != 10 {
		t.Fatalf("Events = %d events, %v", len(all), err)
	}
	for i, e := range all {
		if e.Action != fmt.Sprint("a", i) || e.PID != i || !e.Time.Equal(base.Add(time.Duration(i)*time.Second)) || e.Reconcile != "rc" || e.Detail != "d" {
			t.Errorf("event %d = %+v: not in append order or a field was lost", i, e)
		}
	}
	acme, err := st.Events(ctx, "acme", 2)
	if err != nil || len(acme) != 2 || acme[0].Action != "a6" || acme[1].Action != "a8" {
		t.Errorf("Events(acme, 2) = %+v, %v; want the newest two of acme", acme, err)
	}
	if err := st.AppendEvent(ctx, state.Event{Action: "x1"}, state.Event{Action: "x2"}); err != nil {
		t.Fatal(err)
	}
	if all, _ := st.Events(ctx, "", 2); len(all) != 2 || all[0].Action != "x1" || all[1].Action != "x2" {
		t.Errorf("a batch is not appended in order: %+v", all)
	}
}

func testLeaseExclusion(t *testing.T, st state.Store) {
	release, err := st.Lease(ctx, state.HostScope, "steward apply", 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = st.Lease(ctx, state.HostScope, "steward run", 0)
	var le *state.LockError
	if !errors.Is(err, state.ErrLocked) || !errors.As(err, &le) {
		t.Fatalf("second Lease = %v; want a *LockError", err)
	}
	if le.Who != "steward apply" {
		t.Errorf("LockError names %q, want the holder steward apply", le.Who)
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	r2, err := st.Lease(ctx, state.HostScope, "steward run", 0)
	if err != nil {
		t.Fatalf("Lease after release: %v", err)
	}
	r2()
}

func testLeaseWait(t *testing.T, st state.Store) {
	release, err := st.Lease(ctx, state.HostScope, "holder", 0)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		r, err := st.Lease(ctx, state.HostScope, "waiter", 30*time.Second)
		if err == nil {
			r()
		}
		got <- err
	}()
	release()
	select {
	case err := <-got:
		if err != nil {
			t.Errorf("waiting Lease = %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("waiting Lease did not get the lease once it was released")
	}
	// A wait is bounded by its context.
	release, _ = st.Lease(ctx, state.HostScope, "holder", 0)
	defer release()
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := st.Lease(cctx, state.HostScope, "waiter", time.Hour); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Lease with an expired context = %v", err)
	}
}

func testLeaseScopes(t *testing.T, st state.Store) {
	a, err := st.Lease(ctx, state.HostScope, "a", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer a()
	b, err := st.Lease(ctx, "other-scope", "b", 0)
	if err != nil {
		t.Fatalf("a lease of another scope is excluded: %v", err)
	}
	b()
}

func testInvalidNames(t *testing.T, st state.Store) {
	for _, id := range []string{"", "../x", "a/b", ".hidden"} {
		if err := st.PutMerchant(ctx, &reconcile.Record{ID: id}); err == nil {
			t.Errorf("PutMerchant accepted the id %q", id)
		}
		if _, err := st.Merchant(ctx, id); err == nil {
			t.Errorf("Merchant accepted the id %q", id)
		}
	}
}

func testCancelledContext(t *testing.T, st state.Store) {
	c, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := st.Load(c); !errors.Is(err, context.Canceled) {
		t.Errorf("Load with a cancelled context = %v", err)
	}
	if err := st.PutMerchant(c, &reconcile.Record{ID: "acme"}); !errors.Is(err, context.Canceled) {
		t.Errorf("PutMerchant with a cancelled context = %v", err)
	}
}
