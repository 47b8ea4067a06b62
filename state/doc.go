// Package state remembers what steward applied: one State record with
// optimistic concurrency, an append-only event log, and an exclusive writer
// lock. Store is the contract; FileStore (OpenFile) is the embedded default
// backend. Every backend must pass the same conformance tests.
//
// # Serials and lineage
//
// A State carries a Serial and a Lineage. Load of a store that was never
// saved returns New(lineage) at serial 0; the lineage is generated once and
// persisted by the first Save. Save succeeds only when s.Serial equals the
// stored serial and, once something is stored, s.Lineage equals the stored
// lineage; it then writes serial stored+1 and sets s.Serial to it. Otherwise
// it returns an error wrapping ErrStale and writes nothing: the caller must
// Load again and redo its change. The serial check is made against the
// stored state, so two savers (goroutines or processes) that loaded the same
// serial cannot both win. A saved plan records the serial it was made against
// and is refused when the serial moved on.
//
// Every stored state holds these invariants, checked by Save and Load:
// Merchants and Databases hold no nil records, each merchant is keyed by its
// ID and each database by its Name. Load never returns nil maps. A state
// written by a newer format (Format > FormatVersion) is an error, never
// silently read.
//
// # Events
//
// AppendEvent appends events durably in the order given; Events returns them
// oldest first (append order), filtered by merchant and trimmed to the newest
// limit. Events are never rewritten.
//
// # The writer lock
//
// Lock excludes other writers (steward apply, steward run) for as long as
// they hold it, across processes and within one process. It is separate from
// the serial check: the lock stops two writers from working at once, the
// serial check keeps a write that lost a race from landing. When the lock is
// held elsewhere, Lock returns a *LockError (wrapping ErrLocked) naming the
// holder's pid, description and start time.
//
// # Files of the embedded backend
//
// A FileStore keeps, in its directory (mode 0700, files 0600):
//
//	state.json       the State, replaced atomically (temporary file, fsync, rename, fsync of the directory)
//	state.json.lock  flock taken only around a Save's check-and-write
//	events.jsonl     one JSON event a line; a torn last line from a crash is skipped when reading and cut off before the next append
//	lock             flock held by the writer lock; its content names the holder and is only informational
//
// The kernel drops an flock when its holder dies, so a lock file left by a
// dead process never blocks. Locks are flock(2), so the directory must be on
// a local file system.
package state
