package api

import (
	"time"

	"steward/reconcile"
)

// PlanFormat is the version of the plan document's layout.
const PlanFormat = 1

// Plan is the plan document: GET /v1/plan, `steward plan -o json` and the
// file `steward plan -out` writes. Its field names are part of steward's
// outside contract. It holds no secret: texts come redacted from the
// planner.
type Plan struct {
	Format     int       `json:"format_version"`
	Revision   string    `json:"revision"`
	Lineage    string    `json:"lineage"`
	Serial     uint64    `json:"serial"`
	HasChanges bool      `json:"has_changes"`
	Summary    Summary   `json:"summary"`
	Actions    []Action  `json:"actions"`
	CreatedAt  time.Time `json:"created_at,omitzero"`
	// Digest identifies what the plan does (reconcile.Plan.Digest).
	Digest string `json:"digest,omitempty"`
	// Routing says why the router's routing would change ("" when it is
	// live, or without a router).
	Routing string `json:"routing,omitempty"`
}

// Summary counts a plan's actions the way people read them.
type Summary struct {
	Create int `json:"create"`
	Change int `json:"change"`
	Delete int `json:"delete"`
	Hold   int `json:"hold"`
}

// Action is one action of the plan document.
type Action struct {
	Action      string     `json:"action"`
	Merchant    string     `json:"merchant"`
	Reason      string     `json:"reason"`
	Before      *Snapshot  `json:"before,omitempty"`
	After       *Snapshot  `json:"after,omitempty"`
	NotBefore   *time.Time `json:"not_before,omitempty"`
	Wave        int        `json:"wave,omitempty"`
	Canary      bool       `json:"canary,omitempty"`
	ForDatabase bool       `json:"for_database,omitempty"`
	Unhealthy   bool       `json:"unhealthy,omitempty"`
	Resume      bool       `json:"resume,omitempty"`
	Class       string     `json:"class,omitempty"`
	Rollout     string     `json:"rollout,omitempty"`
	// Rev is the revision of the merchant's record the action was planned
	// against: a saved plan is refused when it moved on.
	Rev uint64 `json:"rev,omitempty"`
}

// Snapshot is the part of a merchant an action moves between.
type Snapshot struct {
	Package  string `json:"package,omitempty"`
	Version  string `json:"version,omitempty"`
	Port     int    `json:"port,omitempty"`
	Database string `json:"database,omitempty"`
	PID      int    `json:"pid,omitempty"`
}

// PlanOf is the plan document of p.
func PlanOf(p *reconcile.Plan) *Plan {
	s := p.Summary()
	out := &Plan{Format: PlanFormat, Revision: p.Revision, Lineage: p.Lineage, Serial: p.Serial, HasChanges: p.HasChanges(),
		Summary: Summary{Create: s.Create, Change: s.Change, Delete: s.Delete, Hold: s.Hold}, Actions: []Action{}, CreatedAt: p.CreatedAt, Digest: p.Digest(), Routing: p.Routing}
	for _, a := range p.Actions {
		x := Action{Action: string(a.Kind), Merchant: a.Merchant, Reason: a.Reason, Before: snapshotOf(a.Before), After: snapshotOf(a.After),
			Wave: a.Wave, Canary: a.Canary, ForDatabase: a.ForDatabase, Unhealthy: a.Unhealthy, Resume: a.Resume, Class: string(a.Class), Rollout: a.Rollout, Rev: a.Rev}
		if !a.NotBefore.IsZero() {
			t := a.NotBefore
			x.NotBefore = &t
		}
		out.Actions = append(out.Actions, x)
	}
	return out
}

// Reconcile is the planner's form of the plan document.
func (p *Plan) Reconcile() *reconcile.Plan {
	out := &reconcile.Plan{Lineage: p.Lineage, Serial: p.Serial, Revision: p.Revision, CreatedAt: p.CreatedAt, Routing: p.Routing}
	for _, a := range p.Actions {
		x := reconcile.Action{Kind: reconcile.Kind(a.Action), Merchant: a.Merchant, Reason: a.Reason, Before: snapshotBack(a.Before), After: snapshotBack(a.After),
			Wave: a.Wave, Canary: a.Canary, ForDatabase: a.ForDatabase, Unhealthy: a.Unhealthy, Resume: a.Resume, Class: reconcile.Class(a.Class), Rollout: a.Rollout, Rev: a.Rev}
		if a.NotBefore != nil {
			x.NotBefore = *a.NotBefore
		}
		out.Actions = append(out.Actions, x)
	}
	return out
}

func snapshotOf(s *reconcile.Snapshot) *Snapshot {
	if s == nil {
		return nil
	}
	return &Snapshot{Package: s.Package, Version: s.Version, Port: s.Port, Database: s.Database, PID: s.PID}
}

func snapshotBack(s *Snapshot) *reconcile.Snapshot {
	if s == nil {
		return nil
	}
	return &reconcile.Snapshot{Package: s.Package, Version: s.Version, Port: s.Port, Database: s.Database, PID: s.PID}
}
