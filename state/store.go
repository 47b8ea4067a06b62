package state

import (
	"context"
	"errors"
	"fmt"
	"time"

	"steward/reconcile"
)

// Store keeps steward's records: one versioned record per merchant and per
// rollout (written with compare-and-swap on that record alone), the last
// observed reachability of each database, an append-only event log, a
// fingerprint key, and a writer lease per scope.
//
// Every backend passes the conformance suite in package state/statetest.
type Store interface {
	// Load reads every record. A store never written returns an empty
	// snapshot (no lineage, no key).
	Load(ctx context.Context) (*Snapshot, error)
	// Merchant reads one merchant's record as stored; nil when there is
	// none.
	Merchant(ctx context.Context, id string) (*reconcile.Record, error)
	// PutMerchant stores r when r.Rev is the stored record's revision (0
	// when none is stored) and sets r.Rev to the new revision. A record
	// equal to the stored one is not written and keeps its revision: a
	// no-op save changes nothing. When the stored revision differs, it
	// writes nothing and returns an error wrapping ErrStale.
	PutMerchant(ctx context.Context, r *reconcile.Record) error
	// DeleteMerchant removes merchant id's record if its stored revision is
	// rev (ErrStale otherwise). Deleting a record that does not exist is
	// not an error when rev is 0.
	DeleteMerchant(ctx context.Context, id string, rev uint64) error
	// PutRollout and DeleteRollout do the same for rollout records, keyed
	// by Rollout.Key().
	PutRollout(ctx context.Context, ro *reconcile.Rollout) error
	DeleteRollout(ctx context.Context, key string, rev uint64) error
	// PutDatabase records an observed reachability (the last write wins).
	PutDatabase(ctx context.Context, d *Database) error
	// Key returns the key for fingerprints of sensitive settings, making
	// and storing a random one the first time. Only writers call it.
	Key(ctx context.Context) ([]byte, error)
	// AppendEvent appends events durably (fsync), in order.
	AppendEvent(ctx context.Context, events ...Event) error
	// Events returns merchant's events ("" = all), oldest first; limit > 0
	// keeps only the newest limit.
	Events(ctx context.Context, merchant string, limit int) ([]Event, error)
	// Lease takes the exclusive writer lease of scope (today steward has
	// one scope, HostScope), waiting up to wait (0 = try once). who says
	// who holds it ("steward apply", "steward run"). When it cannot be had
	// the error is a *LockError (wrapping ErrLocked) naming the holder.
	Lease(ctx context.Context, scope, who string, wait time.Duration) (release func() error, err error)
	// Close releases the store and any lease still held through it.
	Close() error
}

// HostScope is the lease scope of everything one host's steward manages.
const HostScope = "host"

var (
	// ErrStale is wrapped by writes whose record moved on since it was read.
	ErrStale = errors.New("state record is stale")
	// ErrLocked is wrapped by Lease when another holder has the lease.
	ErrLocked = errors.New("state is locked")
	// ErrClosed is returned by every method of a closed store.
	ErrClosed = errors.New("state: store is closed")
)

// LockError reports who holds a writer lease. It wraps ErrLocked. Holder
// fields are informational and may be zero when the holder could not be
// identified.
type LockError struct {
	PID   int
	Who   string
	Since time.Time
}

func (e *LockError) Error() string {
	if e.PID == 0 {
		return "state is locked by another process; wait for it to finish, or retry with -lock-timeout"
	}
	msg := fmt.Sprintf("state is locked by pid %d", e.PID)
	if e.Who != "" {
		msg += " (" + e.Who + ")"
	}
	if !e.Since.IsZero() {
		msg += " since " + e.Since.UTC().Format(time.RFC3339)
	}
	return msg + "; wait for it to finish, or retry with -lock-timeout"
}

// Unwrap makes errors.Is(err, ErrLocked) hold.
func (e *LockError) Unwrap() error { return ErrLocked }

// StaleError is the error of a write refused because the record moved on.
type StaleError struct {
	What         string // "merchant acme", "rollout invoicing@1.2.0"
	Have, Stored uint64
}

func (e *StaleError) Error() string {
	return fmt.Sprintf("%s: %s was read at revision %d but is stored at revision %d; read it again and redo the change", ErrStale, e.What, e.Have, e.Stored)
}

// Unwrap makes errors.Is(err, ErrStale) hold.
func (e *StaleError) Unwrap() error { return ErrStale }
