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
	// Restart replaces a running process: its settings changed, it is
	// unhealthy, or a person asked.
	Restart Kind = "restart"
	// Upgrade moves a merchant to a newer package version.
	Upgrade Kind = "upgrade"
	// Rollback moves a merchant to an older package version.
	Rollback Kind = "rollback"
	// Delete stops a merchant removed from the specs and forgets it.
	Delete Kind = "delete"
	// Hold changes nothing; it says why a merchant is left as it is for
	// now (database down, crash-loop backoff, suspended, pinned, ...).
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

// IsVersionChange reports whether k moves a merchant between versions.
func (k Kind) IsVersionChange() bool { return k == Upgrade || k == Rollback }

// Snapshot is the part of a merchant an action moves between, for people.
type Snapshot struct {
	Package  string
	Version  string
	Port     int
	Database string
	PID      int
}

// Action is one step of a plan. Its fields describe; the executor
// re-derives what to do from the specs, the record and the policy, and
// refuses an action whose record moved on since it was planned.
type Action struct {
	Kind     Kind
	Merchant string
	// Reason says why, for people: "env.LOCALE changed", "process 4242 not
	// running", "version 1.4.2 → 1.5.0 (channel stable)". It explains; it
	// never drives a decision.
	Reason        string
	Before, After *Snapshot
	// NotBefore is set on holds that wait for a time (crash-loop backoff).
	NotBefore time.Time
	// Rollout names the rollout a version change counts in
	// (RolloutKey(package, version)); "" outside one (a pin).
	Rollout string
	// Wave orders a rollout's changes: 0 is the canary wave, then 1, 2, ...
	// of at most max_parallel merchants each.
	Wave int
	// Canary marks a change in its rollout's canary wave.
	Canary bool
	// ForDatabase marks a hold that waits for the merchant's database.
	ForDatabase bool
	// Unhealthy marks a restart of a process that failed its health
	// checks: it counts as a failure for the restart backoff.
	Unhealthy bool
	// Resume marks the finishing (or undoing) of an interrupted change.
	Resume bool
	// Class is the class of a hold: Waiting (a dependency), Stalled (a
	// person must act), or "" (backoff, suspended, pinned).
	Class Class
	// Rev is the revision of the merchant's record the action was planned
	// against (0: no record yet).
	Rev uint64
}

// Plan is an ordered list of actions made against one observation of the
// records and one spec revision.
type Plan struct {
	// Lineage identifies the state history the plan was made against.
	Lineage string
	// Serial is the state's revision counter when the plan was made, for
	// people; staleness is decided per record (Action.Rev).
	Serial uint64
	// Revision is the spec revision the plan was made from.
	Revision  string
	CreatedAt time.Time
	Actions   []Action
	// Routing says why applying would change what the router serves (its
	// nginx is not running, the routes changed); "" when the routing is
	// live or there is no router. The planner does not know the router:
	// the engine fills it in.
	Routing string
}

// Digest identifies what the plan would do: its actions' kinds, merchants,
// versions and ports, and the spec revision. Two plans with the same
// digest do the same thing, whenever they were made.
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
	Create, Change, Delete, Hold int
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
	if p.Routing != "" {
		return true
	}
	for _, a := range p.Actions {
		if a.Kind.IsChange() {
			return true
		}
	}
	return false
}
