package dbadmin

import (
	"context"
	"database/sql"
	"errors"
	"sync"
	"time"
)

// LockKey is the key of steward's migration lock, a session-level advisory
// lock: the FNV-1a 64-bit hash of "steward migrations", as the signed
// bigint pg_advisory_lock takes. Advisory locks are scoped to the current
// database, so merchants that share one database serialise on it and
// merchants with their own databases do not.
const LockKey int64 = -4586910709500307452 // uint64 0xc05805031fcc9804

// Lock polling: pg_try_advisory_lock is retried after minLockPoll, doubling
// up to maxLockPoll, until it succeeds or ctx ends.
const (
	minLockPoll = 10 * time.Millisecond
	maxLockPoll = 200 * time.Millisecond
)

// UnlockTimeout bounds the unlock function Lock returns (it takes no
// context).
const UnlockTimeout = 10 * time.Second

// lockWaitHook, when set (by tests), is called each time the lock was
// found taken.
var lockWaitHook func()

// ErrLockLost is returned (wrapped) by unlock when the lock's connection
// failed: the server releases a session's advisory locks when the session
// ends, so the lock is gone or will be once the server notices, but the
// critical section may have run partly without it.
var ErrLockLost = errors.New("lock connection lost")

// Lock takes steward's migration lock (LockKey) in the database
// databaseURL names, waiting until it is free or ctx ends, and returns the
// function that releases it.
//
// The lock lives on one connection pinned for its whole lifetime (a
// session lock taken through a pool could be released on another
// connection, which would fail and leave it held). unlock runs
// pg_advisory_unlock on that connection, checks that it returned true,
// and closes the connection; it is safe to call more than once (later calls
// return the first result). If the connection died meanwhile, unlock
// returns an error wrapping ErrLockLost.
//
// Waiting polls pg_try_advisory_lock (every 10ms at first, backing off to
// 200ms) rather than blocking in pg_advisory_lock: a blocked query can only
// be interrupted by lib/pq sending a cancel request over a new connection,
// which needs a reachable server and leaves the connection unusable, while
// between polls a cancelled ctx ends the wait at once. The price is a
// handoff latency of up to one poll interval and no FIFO order among
// waiters, neither of which matters for migrations.
func Lock(ctx context.Context, databaseURL string) (unlock func() error, err error) {
	db, c, err := conn(ctx, databaseURL)
	if err != nil {
		return nil, redact(ctx, "lock: connect", err, databaseURL)
	}
	closeAll := func() {
		c.Close()
		db.Close()
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for poll := minLockPoll; ; poll = min(2*poll, maxLockPoll) {
		var got bool
		if err := c.QueryRowContext(ctx, `SELECT pg_try_advisory_lock($1)`, LockKey).Scan(&got); err != nil {
			closeAll()
			return nil, redact(ctx, "lock", err, databaseURL)
		}
		if got {
			break
		}
		if lockWaitHook != nil {
			lockWaitHook()
		}
		timer.Reset(poll)
		select {
		case <-ctx.Done():
			closeAll()
			return nil, redact(ctx, "lock: waiting", context.Cause(ctx), databaseURL)
		case <-timer.C:
		}
	}
	var (
		once sync.Once
		uerr error
	)
	return func() error {
		once.Do(func() {
			defer closeAll()
			uerr = release(c, databaseURL)
		})
		return uerr
	}, nil
}

// release runs pg_advisory_unlock(LockKey) on c, within UnlockTimeout, and
// checks that it returned true.
func release(c *sql.Conn, dsn string) error {
	ctx, cancel := context.WithTimeout(context.Background(), UnlockTimeout)
	defer cancel()
	var released bool
	err := c.QueryRowContext(ctx, `SELECT pg_advisory_unlock($1)`, LockKey).Scan(&released)
	switch {
	case err != nil:
		msg := redact(ctx, "unlock: "+ErrLockLost.Error()+"; the server releases the lock when it ends the session", err, dsn).Error()
		return &opError{msg: msg, cause: ErrLockLost}
	case !released:
		return errors.New("dbadmin: unlock: pg_advisory_unlock returned false: this session did not hold the lock")
	}
	return nil
}
