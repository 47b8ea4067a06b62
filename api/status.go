package api

import "time"

// Status is the status document: GET /v1/status and `steward status -o
// json`. Its field names are part of steward's outside contract: fields
// may be added, never renamed or removed.
type Status struct {
	Merchants []MerchantStatus `json:"merchants"`
	Databases []DatabaseStatus `json:"databases"`
	Rollouts  []RolloutStatus  `json:"rollouts,omitempty"`
	Revision  string           `json:"revision,omitempty"`
	Serial    uint64           `json:"serial"`
	// SpecError is set while the specs in the source do not load; the last
	// good desired state stays in force meanwhile.
	SpecError string `json:"spec_error,omitempty"`
}

// MerchantStatus is one merchant of the status document.
type MerchantStatus struct {
	ID string `json:"id"`
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
}

// DatabaseStatus is one database server's reachability.
type DatabaseStatus struct {
	Name      string     `json:"name"`
	Up        bool       `json:"up"`
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
}
