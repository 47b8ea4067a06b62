package state

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Store persists State with optimistic concurrency and an append-only event log.
type Store interface {
	// Load returns the current state; a store that was never saved returns
	// New(lineage) at serial 0 (lineage generated once and persisted on
	// first Save).
	Load(ctx context.Context) (*State, error)
	// Save writes s if s.Serial equals the stored serial, and then sets
	// s.Serial to stored+1. Otherwise it returns an error wrapping ErrStale
	// and writes nothing.
	Save(ctx context.Context, s *State) error
	// AppendEvent appends events (durably: fsync) in order.
	AppendEvent(ctx context.Context, events ...Event) error
	// Events returns the events for merchant ("" = all), oldest first;
	// limit > 0 keeps only the newest limit.
	Events(ctx context.Context, merchant string, limit int) ([]Event, error)
	// Lock takes the exclusive writer lock, waiting up to wait (0 = try
	// once). who describes the holder ("steward apply", "steward run").
	// When it cannot be had, the error wraps ErrLocked (it is a *LockError)
	// and names the holder.
	Lock(ctx context.Context, who string, wait time.Duration) (Unlock func() error, err error)
	// Close releases the store and any writer lock still held through it.
	Close() error
}

var (
	// ErrStale is wrapped by Save when the state was saved by someone else
	// since it was loaded.
	ErrStale = errors.New("state is stale")
	// ErrLocked is wrapped by Lock when another holder has the writer lock.
	ErrLocked = errors.New("state is locked")
)

// LockError reports who holds the writer lock. It wraps ErrLocked.
// Holder fields are informational and may be zero when the holder could not
// be identified.
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

// staleError builds the error Save returns when serials differ.
func staleError(have, stored uint64) error {
	return fmt.Errorf("%w: it was loaded at serial %d but the stored serial is %d; load it again and redo the change", ErrStale, have, stored)
}
