package router

import (
	"encoding/json"
	"os"
	"path/filepath"
)

// The health record is kept on disk beside the configuration, so that
// every steward process (the daemon, an apply, a status) reports the same
// reloads, generation and last failure, not only the ones it made itself.
// Running and PID are never stored: Status looks them up.

// healthFile is where the health record is kept.
func (r *Router) healthFile() string {
	if r.cfg.Mode == Managed {
		return filepath.Join(r.cfg.Prefix, "health.json")
	}
	return filepath.Join(filepath.Dir(r.cfg.IncludeFile), "steward-router-health.json")
}

// loadHealth starts the health record from the one on disk; a missing or
// unreadable record starts from zero.
func (r *Router) loadHealth() {
	b, err := os.ReadFile(r.healthFile())
	if err != nil || len(b) > 1<<20 {
		return
	}
	var h Health
	if json.Unmarshal(b, &h) != nil {
		return
	}
	h.Running, h.PID = false, 0
	r.health = h
}

// saveHealthLocked writes the health record; the caller holds r.mu. A
// failure to write costs the next process its counts only, so it is
// logged, not returned.
func (r *Router) saveHealthLocked() {
	h := r.health
	h.Running, h.PID = false, 0
	b, err := json.Marshal(h)
	if err == nil {
		err = os.MkdirAll(filepath.Dir(r.healthFile()), 0o755)
	}
	if err == nil {
		err = writeFileAtomic(r.healthFile(), b, 0o644)
	}
	if err != nil {
		r.log.Warn("the router's health record was not saved", "file", r.healthFile(), "err", err)
	}
}
