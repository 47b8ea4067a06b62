package reconcile

import "time"

// Observation is what steward saw of the machine at one moment, for the
// planner. It is a value: nothing in it changes once built, and building
// it changes nothing (the engine's Observer is the only place it is made).
type Observation struct {
	// Now is when the observation was made; the planner reads no clock.
	Now time.Time
	// Merchants holds, per merchant id, what was seen of its processes.
	Merchants map[string]MerchantObs
	// Databases holds each database server's reachability. A database
	// that is absent is Unknown.
	Databases map[string]DBState
	// BusyPorts lists ports in the runtime range that something listens
	// on, when they were looked at: the planner assigns none of them.
	BusyPorts map[int]bool
	// Needs is the schema version releases need, by RolloutKey(package,
	// version), for the releases that are installed.
	Needs map[string]int64
	// Missing says, by RolloutKey(package, version), why a release the
	// merchants need is not in its package source (a local source that
	// lacks its tarball): the planner holds what would need it.
	Missing map[string]string
}

// MerchantObs is what was seen of one merchant's processes.
type MerchantObs struct {
	// Current and Candidate are the liveness of the record's instances.
	Current, Candidate Liveness
	// ExitedAt is when Current's process exited, when an exit watcher saw
	// it (zero: unknown, take the observation time), and ExitHow how it
	// ended ("killed by SIGKILL", "exit status 2"; "" when unknown).
	ExitedAt time.Time
	ExitHow  string
	// Unhealthy says why the current instance failed its health checks
	// past the threshold; "" when it did not (or nobody probes it).
	Unhealthy string
	// Schema is the merchant database's schema version, when it was read.
	Schema *int64
}

// Liveness is what /proc says of a recorded process.
type Liveness int

const (
	// NoProcess: the record claims no process.
	NoProcess Liveness = iota
	// Alive: the pid runs and its start time matches.
	Alive
	// Dead: the kernel says so (no such pid, another start time, zombie).
	Dead
	// Unknown: it could not be read (out of descriptors, no permission).
	// Never counted as an exit, never started again.
	Unknown
)

func (l Liveness) String() string {
	return [...]string{"none", "alive", "dead", "unknown"}[l]
}

// DBState is a database server's reachability.
type DBState int

const (
	// DBUnknown: not checked yet. Merchants on it are not started.
	DBUnknown DBState = iota
	DBUp
	DBDown
)

func (s DBState) String() string { return [...]string{"unknown", "up", "down"}[s] }
