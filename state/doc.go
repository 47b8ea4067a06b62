// Package state keeps what steward decided and did: one record per merchant
// and per rollout, each with its own revision and written with
// compare-and-swap on that record alone; the last observed reachability of
// each database; an append-only event log; a random key for fingerprints of
// sensitive settings; and a writer lease per scope. Store is the contract;
// FileStore (OpenFile) is the embedded default backend. Every backend must
// pass the conformance suite in package state/statetest.
//
// # Revisions
//
// Every record write takes the next value of the store's revision counter,
// which becomes the record's Rev. A write succeeds only when the record's
// Rev is the stored one (0 for a record not stored yet); otherwise it
// writes nothing and returns a *StaleError (wrapping ErrStale), and the
// caller reads that one record again and redoes its change. A write of a
// record equal to the stored one writes nothing and keeps its revision,
// so a no-op save changes nothing: not the record, not the counter, not a
// saved plan's validity. Saved plans carry the revision of every record
// they touch and are refused when one of them moved on.
//
// # The writer lease
//
// Lease excludes other writers of a scope (steward apply, steward run, and
// the one-merchant commands) for as long as they hold it, across processes
// and within one process. It is separate from compare-and-swap: the lease
// stops two writers from working at once, compare-and-swap keeps a write
// that lost a race from landing. When the lease is held elsewhere, Lease
// returns a *LockError naming the holder's pid, description and start time.
//
// # Files of the embedded backend
//
// A FileStore keeps, in its directory (mode 0700, files 0600):
//
//	format            the layout version (2)
//	lineage           the state history's id, written by the first write
//	key               the fingerprint key (hex)
//	revision          the revision counter; written without fsync, since the records' revisions restore it
//	merchants/ID.json one record per merchant, replaced atomically (temporary file, fsync, rename, fsync of the directory)
//	rollouts/KEY.json one record per rollout (KEY is package@version)
//	databases/N.json  the last observed reachability of each database
//	records.lock      byte-range locks (F_OFD_SETLK) that serialise writes of one record across processes
//	events.jsonl      one JSON event a line; a torn last line from a crash is skipped when reading and cut off before the next append
//	lock              flock held by the host's writer lease; its content names the holder and is only informational
//
// A directory written by format 1 (one state.json) is read as it is; the
// first write migrates it and keeps the old file as state.json.v1. The
// kernel drops flocks and OFD locks when their holder dies, so a lock file
// left by a dead process never blocks. The directory must be on a local
// file system.
package state
