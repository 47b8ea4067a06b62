package api

import (
	"strings"
	"time"

	"steward/state"
)

// Status is the status document: GET /v1/status and `steward status -o
// json`. Its field names are part of steward's outside contract: fields
// may be added, never renamed or removed.
type Status struct {
	Merchants []MerchantStatus `json:"merchants"`
	Databases []DatabaseStatus `json:"databases"`
	Rollouts  []RolloutStatus  `json:"rollouts,omitempty"`
	Revision  string           `json:"revision,omitempty"`
	Serial    uint64           `json:"serial"`
	// Router is the router's health, when one is configured.
	Router *RouterStatus `json:"router,omitempty"`
	// PendingEvents counts history events not written yet (the store
	// refused them; they are kept and retried).
	PendingEvents int `json:"pending_events,omitempty"`
	// SpecError is set while the specs in the source do not load; the last
	// good desired state stays in force meanwhile. It holds diagnostics as
	// `steward validate` prints them: the first line of each is
	// "file:line:col: error: summary", the lines after it quote the spec.
	SpecError string `json:"spec_error,omitempty"`
}

// Public returns the document as a reader without the token may see it:
// SpecError is cut to its first line (file, line and summary), so that no
// quoted spec line reaches it.
//
// Nor does any event detail (the output of a package's commands, which may
// hold what a package printed and steward does not know to be secret):
// like logs, it needs the token.
func (s Status) Public() Status {
	s.SpecError, _, _ = strings.Cut(s.SpecError, "\n")
	ms := make([]MerchantStatus, len(s.Merchants))
	for i, m := range s.Merchants {
		if m.LastEvent != nil && m.LastEvent.Detail != "" {
			ev := PublicEvent(*m.LastEvent)
			m.LastEvent = &ev
		}
		ms[i] = m
	}
	s.Merchants = ms
	return s
}

// PublicEvent is ev as a reader without the token may see it: without its
// detail (a command's output), which DetailWithheld replaces.
func PublicEvent(ev state.Event) state.Event {
	if ev.Detail != "" {
		ev.Detail = DetailWithheld
	}
	return ev
}

// DetailWithheld stands for an event's detail in what readers without the
// token get.
const DetailWithheld = "(withheld: needs the API token)"

// MerchantStatus is one merchant of the status document.
type MerchantStatus struct {
	ID string `json:"id"`
	// Host is the host whose steward runs the merchant; empty while the
	// state belongs to one host only.
	Host string `json:"host,omitempty"`
	// State is one of running, starting, stopped, crashloop, held,
	// suspended, failed.
	State          string     `json:"state"`
	PID            int        `json:"pid"`
	Port           int        `json:"port"`
	Version        string     `json:"version"`
	DesiredVersion string     `json:"desired_version"`
	Healthy        bool       `json:"healthy"`
	Database       string     `json:"database"`
	Restarts       int        `json:"restarts"`
	Schema         *int64     `json:"schema,omitempty"`
	Failures       int        `json:"failures,omitempty"`
	NextAttempt    *time.Time `json:"next_attempt,omitempty"`
	Since          *time.Time `json:"since,omitempty"`
	LastError      string     `json:"last_error,omitempty"`
	Revision       string     `json:"revision,omitempty"`
	InSpecs        bool       `json:"in_specs"`
	// Domains (and PathPrefix) are routed to RoutePort, the port of the
	// merchant's routed instance, when a router is configured; RoutePort is
	// 0 while the merchant answers its maintenance page.
	Domains    []string `json:"domains,omitempty"`
	PathPrefix string   `json:"path_prefix,omitempty"`
	RoutePort  int      `json:"route_port,omitempty"`
	// LastEvent is the newest event of the merchant's history.
	LastEvent *state.Event `json:"last_event,omitempty"`
	// ErrorClass is the class of LastError: stalled (a person must act),
	// waiting (a dependency, such as its database) or transient (retried).
	ErrorClass string `json:"error_class,omitempty"`
	// Pin is the version "steward rollback" holds the merchant on.
	Pin string `json:"pin,omitempty"`
	// HoldReason says why the merchant runs another version than its
	// specs' (a version that failed on it, a halted rollout or one whose
	// gate is closed, a rollback pin).
	HoldReason string `json:"hold_reason,omitempty"`
	// Change describes a change in progress ("upgrade 1.0.0 → 1.1.0, step
	// started").
	Change string `json:"change,omitempty"`
	// Instances are the merchant's processes: the current one, and during
	// a change the candidate; Routed says which one gets its traffic.
	Instances []InstanceStatus `json:"instances,omitempty"`
}

// RouterStatus is the router's health.
type RouterStatus struct {
	Mode    string `json:"mode"`
	Listen  string `json:"listen,omitempty"`
	Running bool   `json:"running"`
	PID     int    `json:"pid,omitempty"`
	Routes  int    `json:"routes"`
	Reloads int    `json:"reloads"`
	// LastReload is the last reload (or start) of nginx through steward.
	LastReload *time.Time `json:"last_reload,omitempty"`
	// Failing is true while the latest change was refused (nginx -t): the
	// routing before it is still in force. LastError holds nginx's output.
	Failing     bool       `json:"failing"`
	Failures    int        `json:"failures"`
	LastError   string     `json:"last_error,omitempty"`
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
}

// InstanceStatus is one process of a merchant.
type InstanceStatus struct {
	Role    string `json:"role"` // "current" or "candidate"
	PID     int    `json:"pid"`
	Port    int    `json:"port"`
	Version string `json:"version"`
	Routed  bool   `json:"routed"`
	Alive   bool   `json:"alive"`
}

// DatabaseStatus is one database server's reachability.
type DatabaseStatus struct {
	Name string `json:"name"`
	Up   bool   `json:"up"`
	// Checked is false while the database has not been checked yet (up
	// is then false, meaning not known to be up).
	Checked   bool       `json:"checked"`
	Since     *time.Time `json:"since,omitempty"`
	LastError string     `json:"last_error,omitempty"`
}

// RolloutStatus is the progress of one rollout the specs still ask for.
type RolloutStatus struct {
	Package   string   `json:"package"`
	Version   string   `json:"version"`
	Halted    bool     `json:"halted"`
	Reason    string   `json:"reason,omitempty"`
	Succeeded []string `json:"succeeded"`
	Failed    []string `json:"failed"`
	// Merchants are all the merchants the rollout moves to Version, in
	// rollout order (canaries first); empty when unknown.
	Merchants []string `json:"merchants,omitempty"`
	// Canary is the number of merchants upgraded first, alone; then waves
	// of at most MaxParallel merchants follow (the rollout block's canary
	// and max_parallel).
	Canary      int        `json:"canary,omitempty"`
	MaxParallel int        `json:"max_parallel,omitempty"`
	StartedAt   *time.Time `json:"started_at,omitempty"`
	HaltedAt    *time.Time `json:"halted_at,omitempty"`
}
