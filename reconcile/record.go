package reconcile

import (
	"maps"
	"slices"
	"time"
)

// Record is what steward remembers about one merchant between runs: what it
// applied and decided, never a cache of what it observes. A pid in it is a
// claim that must be checked against its process start time before it is
// trusted. Records are stored one by one, each with its own revision (Rev),
// and written with compare-and-swap on that revision.
//
// The JSON encoding of a Record is the state backends' storage format.
type Record struct {
	ID string `json:"id"`
	// Rev is the store's revision of this record: 0 for a record that was
	// never stored. A write succeeds only against the stored revision.
	Rev     uint64 `json:"rev,omitempty"`
	Package string `json:"package,omitempty"`
	// Port is assigned once and kept across restarts and upgrades.
	Port int `json:"port"`
	// AltPort is a second port, assigned when a router lets a new instance
	// start beside the serving one (zero-downtime changes).
	AltPort int `json:"alt_port,omitempty"`
	// UID is the merchant's own user id (and group id), when the host
	// gives merchants users of their own (runtime.uids); assigned once.
	UID int `json:"uid,omitempty"`
	// Current is the instance serving the merchant (PID 0: none runs). Its
	// Version is the version last started, also after the process died.
	Current Instance `json:"current"`
	// Candidate is an instance being brought up to replace Current: beside
	// it on AltPort with a router, in its place without one. It becomes
	// Current once it passed its gate, and is stopped if it fails.
	Candidate *Instance `json:"candidate,omitempty"`
	// Applied holds one fingerprint per launch-relevant setting of the
	// Current instance ("env.LOCALE", "database", ...). Sensitive values are
	// keyed hashes, never stored.
	Applied map[string]string `json:"applied,omitempty"`
	Phase   Phase             `json:"phase,omitempty"`
	// Suspended merchants are left exactly as they are.
	Suspended bool `json:"suspended,omitempty"`
	// Restarts counts restarts after the process died or hung.
	Restarts int `json:"restarts"`
	// Died is set when the process ended without steward stopping it, and
	// cleared by the next start, which counts as a restart.
	Died bool `json:"died,omitempty"`
	// Failures counts consecutive fast failures; it drives the backoff.
	Failures    int       `json:"failures,omitempty"`
	ExitedAt    time.Time `json:"exited_at,omitzero"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	// ErrorClass is the class of LastError.
	ErrorClass Class `json:"error_class,omitempty"`
	// GoodVersions lists versions that passed their health gate here,
	// oldest first; BadVersions those that failed it. A bad version is
	// never launched again until the specs ask for another version (then
	// the mark is dropped, and asking for it again tries it again).
	GoodVersions []string `json:"good_versions,omitempty"`
	BadVersions  []string `json:"bad_versions,omitempty"`
	// Pin is the version "steward rollback" holds the merchant on.
	Pin *Pin `json:"pin,omitempty"`
	// Change is a version change (or a replacement of the instance) in
	// progress; it survives steward's death so that the next start
	// finishes or undoes it.
	Change *Change `json:"change,omitempty"`
	// Schema is the schema version last read from the merchant's database.
	Schema *int64 `json:"schema,omitempty"`
	// Revision is the spec revision this record was last applied from.
	Revision string `json:"revision,omitempty"`
}

// Instance is one process of a merchant.
type Instance struct {
	PID int `json:"pid,omitempty"`
	// StartTime is the process start time in clock ticks since boot; a pid
	// whose start time differs is another process and is never signalled.
	StartTime uint64    `json:"start_time,omitempty"`
	Port      int       `json:"port,omitempty"`
	Version   string    `json:"version,omitempty"`
	StartedAt time.Time `json:"started_at,omitzero"`
	// Routed says the router sends the merchant's traffic to this instance.
	Routed bool `json:"routed,omitempty"`
}

// Running reports whether the instance claims a process.
func (i Instance) Running() bool { return i.PID != 0 }

// Pin is a version set by "steward rollback". It is in force while the
// specs ask for ForSpec and ends when they ask for another version.
type Pin struct {
	Version string    `json:"version"`
	ForSpec string    `json:"for_spec"`
	At      time.Time `json:"at,omitzero"`
}

// Change is a change of a merchant's instance in progress: a version
// change (upgrade, rollback) or a replacement on the same version (a
// restart behind a router). Step is the last step that completed.
type Change struct {
	Kind Kind   `json:"kind"`
	From string `json:"from,omitempty"`
	To   string `json:"to"`
	// Rollout is the rollout the change counts in ("pkg@version"), or "".
	Rollout string `json:"rollout,omitempty"`
	// Canary marks a change in its rollout's canary wave.
	Canary    bool      `json:"canary,omitempty"`
	Step      Step      `json:"step"`
	StartedAt time.Time `json:"started_at,omitzero"`
	// Undo is set once the change failed and steward is returning the
	// merchant to From; Reason says why it failed.
	Undo   bool   `json:"undo,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// Step is how far a change got. Steps are ordered.
type Step int

// The steps of a change, in order.
const (
	StepPlanned   Step = iota // nothing done yet
	StepInstalled             // the target release is unpacked
	StepMigrated              // the database is ready for the target (forward migrations ran)
	StepStopped               // without a router: the old process is stopped
	StepStarted               // the candidate process runs (its pid is in Candidate)
	StepReady                 // the candidate answers
	StepGated                 // the candidate stayed healthy for min_healthy_time
	StepRouted                // the router sends traffic to the candidate
)

var stepNames = [...]string{"planned", "installed", "migrated", "stopped", "started", "ready", "gated", "routed"}

func (s Step) String() string {
	if int(s) < len(stepNames) {
		return stepNames[s]
	}
	return "step?"
}

// Clone returns a deep copy of r.
func (r *Record) Clone() *Record {
	if r == nil {
		return nil
	}
	c := *r
	c.Applied = maps.Clone(r.Applied)
	c.GoodVersions = slices.Clone(r.GoodVersions)
	c.BadVersions = slices.Clone(r.BadVersions)
	if r.Candidate != nil {
		x := *r.Candidate
		c.Candidate = &x
	}
	if r.Pin != nil {
		x := *r.Pin
		c.Pin = &x
	}
	if r.Change != nil {
		x := *r.Change
		c.Change = &x
	}
	if r.Schema != nil {
		v := *r.Schema
		c.Schema = &v
	}
	return &c
}

// Rollout is the progress of moving merchants onto one package version.
// It is stored like a Record, with its own revision.
type Rollout struct {
	Package string `json:"package"`
	Version string `json:"version"`
	Rev     uint64 `json:"rev,omitempty"`
	// Succeeded and Failed list merchants that passed or failed the health
	// gate on this version, in the order they did.
	Succeeded []string  `json:"succeeded,omitempty"`
	Failed    []string  `json:"failed,omitempty"`
	Halted    bool      `json:"halted,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	StartedAt time.Time `json:"started_at,omitzero"`
	HaltedAt  time.Time `json:"halted_at,omitzero"`
}

// Key is the rollout's key: RolloutKey(Package, Version).
func (ro *Rollout) Key() string { return RolloutKey(ro.Package, ro.Version) }

// Clone returns a deep copy of ro.
func (ro *Rollout) Clone() *Rollout {
	if ro == nil {
		return nil
	}
	c := *ro
	c.Succeeded = slices.Clone(ro.Succeeded)
	c.Failed = slices.Clone(ro.Failed)
	return &c
}

// RolloutKey is the key of the rollout of version of pkg.
func RolloutKey(pkg, version string) string { return pkg + "@" + version }

// markGood records version as the newest good version (at most ten kept).
func (r *Record) markGood(version string) {
	r.GoodVersions = slices.DeleteFunc(r.GoodVersions, func(v string) bool { return v == version })
	r.GoodVersions = append(r.GoodVersions, version)
	if n := len(r.GoodVersions); n > 10 {
		r.GoodVersions = r.GoodVersions[n-10:]
	}
}

// markBad records that version failed its gate here.
func (r *Record) markBad(version string) {
	if !slices.Contains(r.BadVersions, version) {
		r.BadVersions = append(r.BadVersions, version)
	}
	r.GoodVersions = slices.DeleteFunc(r.GoodVersions, func(v string) bool { return v == version })
}

// lastGood is the version a merchant falls back to: the version it runs
// when that one is not bad, else its newest good version, else what it
// runs.
func (r *Record) lastGood() string {
	if v := r.Current.Version; v != "" && !slices.Contains(r.BadVersions, v) {
		return v
	}
	for i := len(r.GoodVersions) - 1; i >= 0; i-- {
		if !slices.Contains(r.BadVersions, r.GoodVersions[i]) {
			return r.GoodVersions[i]
		}
	}
	return r.Current.Version
}
