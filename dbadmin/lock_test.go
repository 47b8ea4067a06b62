package dbadmin

import (
	"context"
	"errors"
	"hash/fnv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestLockKey(t *testing.T) {
	h := fnv.New64a()
	h.Write([]byte("steward migrations"))
	if got := int64(h.Sum64()); got != LockKey {
		t.Fatalf("LockKey = %d, FNV-1a of \"steward migrations\" = %d", LockKey, got)
	}
}

// waitSignals makes Lock report each time it finds the lock taken, on the
// returned channel (which never blocks Lock).
func waitSignals(t *testing.T) <-chan struct{} {
	ch := make(chan struct{}, 1)
	lockWaitHook = func() {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	t.Cleanup(func() { lockWaitHook = nil })
	return ch
}

func within(t *testing.T, d time.Duration, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(d):
		t.Fatalf("%s: nothing after %s", what, d)
	}
}

func TestLockSerialises(t *testing.T) {
	_, _, dbURL := newDB(t)
	ctx := testCtx(t)
	waiting := waitSignals(t)

	// events records the order of the critical sections' edges.
	var (
		mu     sync.Mutex
		events []string
	)
	record := func(e string) {
		mu.Lock()
		events = append(events, e)
		mu.Unlock()
	}

	unlockA, err := Lock(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	record("A in")

	type result struct {
		unlock func() error
		err    error
		at     time.Time
	}
	bDone := make(chan result, 1)
	kvURL := keyValue(t, dbURL) // the same database, the other DSN form
	go func() {
		unlock, err := Lock(ctx, kvURL)
		at := time.Now()
		if err == nil {
			record("B in")
		}
		bDone <- result{unlock, err, at}
	}()

	// B has tried and found the lock taken: it is waiting now.
	within(t, 10*time.Second, waiting, "B waiting")
	select {
	case r := <-bDone:
		t.Fatalf("B got the lock while A held it (err %v)", r.err)
	default:
	}
	// Let B try a few more times while A holds it.
	for range 3 {
		within(t, 10*time.Second, waiting, "B still waiting")
	}
	record("A out")
	released := time.Now()
	if err := unlockA(); err != nil {
		t.Fatalf("unlock A: %v", err)
	}
	if err := unlockA(); err != nil {
		t.Fatalf("second unlock A: %v", err)
	}
	var r result
	select {
	case r = <-bDone:
	case <-time.After(10 * time.Second):
		t.Fatal("B did not get the lock after A released it")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Logf("lock handoff took %s", r.at.Sub(released))
	record("B out")
	if err := r.unlock(); err != nil {
		t.Fatalf("unlock B: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if got := strings.Join(events, ", "); got != "A in, A out, B in, B out" {
		t.Fatalf("critical sections overlapped: %s", got)
	}
}

func TestLockDifferentDatabasesDoNotSerialise(t *testing.T) {
	_, _, db1 := newDB(t)
	_, _, db2 := newDB(t)
	ctx := testCtx(t)
	waiting := waitSignals(t)
	unlock1, err := Lock(ctx, db1)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock1()
	unlock2, err := Lock(ctx, db2)
	if err != nil {
		t.Fatalf("lock on another database while the first is held: %v", err)
	}
	select {
	case <-waiting:
		t.Fatal("the second database's lock was found taken")
	default:
	}
	if err := unlock2(); err != nil {
		t.Fatal(err)
	}
	if err := unlock1(); err != nil {
		t.Fatal(err)
	}
}

func TestLockCancelWhileWaiting(t *testing.T) {
	_, _, dbURL := newDB(t)
	ctx := testCtx(t)
	waiting := waitSignals(t)
	unlock, err := Lock(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	pwURL := withPassword(t, dbURL)
	go func() {
		u, err := Lock(wctx, pwURL)
		if u != nil {
			u()
		}
		done <- err
	}()
	within(t, 10*time.Second, waiting, "waiting")
	cancelled := time.Now()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Lock after cancel = %v, want context.Canceled", err)
		}
		noSecret(t, err)
		if d := time.Since(cancelled); d > time.Second {
			t.Fatalf("Lock returned %s after cancel", d)
		} else {
			t.Logf("Lock returned %s after cancel", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Lock still waiting 5s after cancel")
	}

	// A deadline ends the wait too.
	dctx, dcancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer dcancel()
	if _, err := Lock(dctx, dbURL); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock past its deadline = %v, want context.DeadlineExceeded", err)
	}
}

func TestUnlockChecksResult(t *testing.T) {
	_, _, dbURL := newDB(t)
	ctx := testCtx(t)
	// A session that does not hold the lock: pg_advisory_unlock returns
	// false (with a warning), which release must report.
	db, c, err := conn(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	defer c.Close()
	err = release(c, dbURL)
	if err == nil || !strings.Contains(err.Error(), "returned false") {
		t.Fatalf("release without the lock = %v, want a 'returned false' error", err)
	}
	// The session holds it: true, no error.
	if _, err := c.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, LockKey); err != nil {
		t.Fatal(err)
	}
	if err := release(c, dbURL); err != nil {
		t.Fatalf("release with the lock: %v", err)
	}
}

func TestLockReleasedWhenHolderDies(t *testing.T) {
	server, name, dbURL := newDB(t)
	ctx := testCtx(t)
	unlock, err := Lock(ctx, withPassword(t, dbURL))
	if err != nil {
		t.Fatal(err)
	}
	// The holder's backend, found through pg_locks (a bigint key is split
	// into classid, the high half, and objid, the low half).
	pid := queryInt(t, ctx, server, `SELECT pid FROM pg_locks
		WHERE locktype = 'advisory' AND granted AND objsubid = 1
		  AND database = (SELECT oid FROM pg_database WHERE datname = $1)
		  AND (classid::bigint << 32 | objid::bigint) = $2`, name, LockKey)
	var ok bool
	db, c, err := conn(ctx, server)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	defer c.Close()
	// With a timeout, pg_terminate_backend waits until the backend is gone.
	if err := c.QueryRowContext(ctx, `SELECT pg_terminate_backend($1::int, 10000)`, pid).Scan(&ok); err != nil || !ok {
		t.Fatalf("pg_terminate_backend(%d) = %v, %v", pid, ok, err)
	}

	unlock2, err := Lock(withTimeout(t, ctx, 5), dbURL)
	if err != nil {
		t.Fatalf("Lock after the holder died: %v", err)
	}
	if err := unlock2(); err != nil {
		t.Fatal(err)
	}
	err = unlock()
	if !errors.Is(err, ErrLockLost) {
		t.Fatalf("unlock of a dead session = %v, want ErrLockLost", err)
	}
	noSecret(t, err)
	t.Logf("unlock of a dead session: %v", err)
}
