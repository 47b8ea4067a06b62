package reconcile

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"
)

// Kind is what an action does to a merchant.
type Kind string

// Action kinds.
const (
	// Create starts a merchant steward has never run.
	Create Kind = "create"
	// Start starts a known merchant whose process is not running.
	Start Kind = "start"
	// Stop stops a merchant's process but keeps its record.
	Stop Kind = "stop"
	// Restart replaces a running process because its launch settings changed
	// or it is unhealthy.
	Restart Kind = "restart"
	// Upgrade moves a merchant to a newer package version.
	Upgrade Kind = "upgrade"
	// Rollback moves a merchant to an older package version.
	Rollback Kind = "rollback"
	// Delete stops a merchant removed from the specs and forgets it.
	Delete Kind = "delete"
	// Hold changes nothing; it says why a merchant that is not converged is
	// left as it is for now (database down, crash-loop backoff, ...).
	Hold Kind = "hold"
)

// Symbol is the one-character marker of a kind in text output.
func (k Kind) Symbol() string {
	switch k {
	case Create:
		return "+"
	case Delete:
		return "-"
	case Hold:
		return "!"
	default:
		return "~"
	}
}

// IsChange reports whether the action changes anything.
func (k Kind) IsChange() bool { return k != Hold }

// Snapshot is the part of a merchant's configuration an action moves between.
type Snapshot struct {
	Package  string `json:"package,omitempty"`
	Version  string `json:"version,omitempty"`
	Port     int    `json:"port,omitempty"`
	Database string `json:"database,omitempty"`
	PID      int    `json:"pid,omitempty"`
}

// Action is one step of a plan.
type Action struct {
	Kind     Kind   `json:"action"`
	Merchant string `json:"merchant"`
	// Reason says why, for people: "env.LOCALE changed", "process not
	// running", "version 1.4.2 → 1.5.0 (channel stable)".
	Reason string    `json:"reason"`
	Before *Snapshot `json:"before,omitempty"`
	After  *Snapshot `json:"after,omitempty"`
	// NotBefore is set on holds that wait for a time (crash-loop backoff).
	NotBefore time.Time `json:"not_before,omitzero"`
	// Wave orders version changes of one rollout: 0 is the canary wave,
	// then 1, 2, ... of at most max_parallel merchants each. A wave starts
	// only when the one before it passed its health gates.
	Wave int `json:"wave,omitempty"`
	// ForDatabase marks a hold that waits for the merchant's database.
	ForDatabase bool `json:"for_database,omitempty"`
	// Unhealthy marks a restart of a process that failed its health checks:
	// it counts as a failure for the restart backoff.
	Unhealthy bool `json:"unhealthy,omitempty"`
	// Rollout names the rollout a version change belongs to
	// ("invoicing@1.2.0"); empty for other actions.
	Rollout string `json:"rollout,omitempty"`
}

// PlanFormat is the version of the saved plan layout.
const PlanFormat = 1

// Plan is an ordered list of actions made against one state serial and one
// spec revision.
type Plan struct {
	Format int `json:"format_version"`
	// Lineage and Serial identify the state the plan was made against; a
	// saved plan is refused when the state has moved on.
	Lineage string `json:"lineage"`
	Serial  uint64 `json:"serial"`
	// Revision is the spec revision the plan was made from.
	Revision  string    `json:"revision"`
	CreatedAt time.Time `json:"created_at"`
	Actions   []Action  `json:"actions"`
}

// Digest identifies what the plan would do: its actions' kinds, merchants,
// versions and ports, and the spec revision. Two plans with the same
// digest do the same thing, whatever serial they were made at.
func (p *Plan) Digest() string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n", p.Revision)
	for _, a := range p.Actions {
		fmt.Fprintf(h, "%s %s %s|", a.Kind, a.Merchant, a.Rollout)
		for _, s := range []*Snapshot{a.Before, a.After} {
			if s != nil {
				fmt.Fprintf(h, "%s %s %d|", s.Package, s.Version, s.Port)
			}
		}
		fmt.Fprintln(h)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// Summary counts actions the way people read them.
type Summary struct {
	Create int `json:"create"`
	Change int `json:"change"`
	Delete int `json:"delete"`
	Hold   int `json:"hold"`
}

// Summary counts the plan's actions.
func (p *Plan) Summary() Summary {
	var s Summary
	for _, a := range p.Actions {
		switch a.Kind {
		case Create:
			s.Create++
		case Delete:
			s.Delete++
		case Hold:
			s.Hold++
		default:
			s.Change++
		}
	}
	return s
}

// HasChanges reports whether applying the plan would change anything.
func (p *Plan) HasChanges() bool {
	for _, a := range p.Actions {
		if a.Kind.IsChange() {
			return true
		}
	}
	return false
}
