package state

import (
	"time"

	"steward/reconcile"
)

// Snapshot is everything a store holds but the events, read at one time.
// Maps are never nil.
type Snapshot struct {
	// Lineage identifies one state history; it is set once, by the first
	// write, and "" until then.
	Lineage string
	// Revision is the store's revision counter: every record write takes
	// the next revision, which becomes the record's Rev.
	Revision uint64
	// Key keys the fingerprints of sensitive settings; nil until a writer
	// made one (see Store.Key).
	Key       []byte
	Merchants map[string]*reconcile.Record
	Rollouts  map[string]*reconcile.Rollout
	Databases map[string]*Database
}

// NewSnapshot returns an empty snapshot.
func NewSnapshot() *Snapshot {
	return &Snapshot{Merchants: map[string]*reconcile.Record{}, Rollouts: map[string]*reconcile.Rollout{}, Databases: map[string]*Database{}}
}

// Database is the last reachability the daemon saw of one database server:
// an observation kept so that commands run without the daemon can show it.
// It is written without compare-and-swap: the last observation wins.
type Database struct {
	Name      string        `json:"name"`
	Up        bool          `json:"up"`
	Since     time.Time     `json:"since,omitzero"`
	LastError string        `json:"last_error,omitempty"`
	Latency   time.Duration `json:"latency,omitempty"`
}

// Event is one recorded action or observation. Events are append-only.
type Event struct {
	Time     time.Time `json:"time"`
	Merchant string    `json:"merchant,omitempty"`
	// Action is the plan action kind (create, start, stop, restart, upgrade,
	// rollback, delete, hold) or an observation (exited, database up, ...).
	Action string `json:"action"`
	Reason string `json:"reason,omitempty"`
	// Result is "ok", "error", "skipped" or "observed".
	Result   string `json:"result,omitempty"`
	Error    string `json:"error,omitempty"`
	Revision string `json:"revision,omitempty"`
	Version  string `json:"version,omitempty"`
	PID      int    `json:"pid,omitempty"`
	// Detail carries what else the event produced: a backup's path, the
	// end of a migration's output (scrubbed of every secret steward knows).
	Detail string `json:"detail,omitempty"`
	// Reconcile is the id of the reconcile pass that recorded the event.
	Reconcile string `json:"reconcile,omitempty"`
}
