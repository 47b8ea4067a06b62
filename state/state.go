package state

import "time"

// FormatVersion is the version of the serialised State layout.
const FormatVersion = 1

// State is everything steward remembers between runs about what it applied.
// It is a record of actions taken, not a cache of observations: processes
// are re-inspected on every reconcile and Merchant.PID is only a claim that
// must be checked against Merchant.StartTime before it is trusted.
type State struct {
	// Format is FormatVersion when written by this build.
	Format int `json:"format"`
	// Serial increases by exactly one on every successful Save. Saved plans
	// carry the serial they were made against and are refused when it moved.
	Serial uint64 `json:"serial"`
	// Lineage identifies one state history; it is set once at creation.
	Lineage string `json:"lineage"`
	// Revision is the spec revision last applied (a git SHA or content hash).
	Revision string `json:"revision,omitempty"`
	// Merchants is keyed by merchant id.
	Merchants map[string]*Merchant `json:"merchants"`
	// Databases is keyed by database block name.
	Databases map[string]*Database `json:"databases,omitempty"`
	// Rollouts is keyed by RolloutKey(package, version).
	Rollouts map[string]*Rollout `json:"rollouts,omitempty"`
}

// Rollout is the progress of moving merchants to one package version.
type Rollout struct {
	Package string `json:"package"`
	Version string `json:"version"`
	// Succeeded and Failed list merchants that passed or failed the health
	// gate on this version.
	Succeeded []string  `json:"succeeded,omitempty"`
	Failed    []string  `json:"failed,omitempty"`
	Halted    bool      `json:"halted,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	StartedAt time.Time `json:"started_at,omitzero"`
	HaltedAt  time.Time `json:"halted_at,omitzero"`
}

// RolloutKey is the key of a rollout in State.Rollouts.
func RolloutKey(pkg, version string) string { return pkg + "@" + version }

// Merchant is the applied record of one merchant.
type Merchant struct {
	ID      string `json:"id"`
	Package string `json:"package,omitempty"`
	// Version is the package version the merchant was last started with.
	Version string `json:"version,omitempty"`
	// Port is assigned once and kept across restarts and upgrades.
	Port int `json:"port"`
	// PID and StartTime identify the process; a PID whose start time differs
	// belongs to another process and must never be signalled.
	PID       int    `json:"pid,omitempty"`
	StartTime uint64 `json:"start_time,omitempty"`
	// Applied holds one fingerprint per launch-relevant setting (for example
	// "env.LOCALE", "database", "command"); sensitive values are hashed, never
	// stored. Comparing it with the desired fingerprints explains a restart.
	Applied map[string]string `json:"applied,omitempty"`
	// Phase is the last phase steward put the merchant in (running, stopped,
	// crashloop, failed, held).
	Phase string `json:"phase,omitempty"`
	// Suspended merchants are left exactly as they are.
	Suspended bool `json:"suspended,omitempty"`
	// Restarts counts restarts steward made after the process died or hung.
	Restarts int `json:"restarts"`
	// Died is set when the process ended without steward stopping it, and
	// cleared when steward starts it again; that start counts as a restart.
	Died bool `json:"died,omitempty"`
	// Failures counts consecutive fast failures; it drives the backoff.
	Failures    int       `json:"failures,omitempty"`
	StartedAt   time.Time `json:"started_at,omitzero"`
	ExitedAt    time.Time `json:"exited_at,omitzero"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	// GoodVersions lists versions that passed their health gate, oldest first.
	GoodVersions []string `json:"good_versions,omitempty"`
	// BadVersions lists versions that failed their gate for this merchant.
	BadVersions []string `json:"bad_versions,omitempty"`
	// Revision is the spec revision this merchant's record was last applied from.
	Revision string `json:"revision,omitempty"`
	// UpgradeFrom is set while an upgrade (or rollback) has started the new
	// version but not yet passed its health gate; it is the version to
	// return to if the gate fails, also after steward itself was killed.
	UpgradeFrom string `json:"upgrade_from,omitempty"`
	// Schema is the schema version last read from the merchant's database
	// (nil when it was never read, for example while the database is down
	// or when its package declares no schema).
	Schema *int64 `json:"schema,omitempty"`
	// Override is a version set by "steward rollback"; it is in force while
	// the specs still ask for OverrideFor.
	Override    string `json:"override,omitempty"`
	OverrideFor string `json:"override_for,omitempty"`
}

// Database is the last known reachability of one database server.
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
	// rollback, delete, hold) or an observation (exited, adopted, ...).
	Action string `json:"action"`
	Reason string `json:"reason,omitempty"`
	// Result is "ok", "error" or "skipped".
	Result   string `json:"result,omitempty"`
	Error    string `json:"error,omitempty"`
	Revision string `json:"revision,omitempty"`
	Version  string `json:"version,omitempty"`
	PID      int    `json:"pid,omitempty"`
	// Detail carries what else the event produced: a backup's path, the
	// end of a migration's output.
	Detail string `json:"detail,omitempty"`
}

// New returns an empty state at serial 0 with a fresh lineage.
func New(lineage string) *State {
	return &State{Format: FormatVersion, Lineage: lineage, Merchants: map[string]*Merchant{}, Databases: map[string]*Database{}, Rollouts: map[string]*Rollout{}}
}
