package reconcile

import (
	"time"

	"steward/state"
)

// ProcessChecker tells whether a recorded process is still the same live
// process: pid and start time must both match.
type ProcessChecker interface {
	Alive(pid int, startTime uint64) bool
}

// Observe checks every record of st against the machine.
func Observe(st *state.State, procs ProcessChecker, now time.Time) Observed {
	o := Observed{Now: now, State: st, Running: map[string]bool{}, DatabaseDown: map[string]bool{}}
	for id, rec := range st.Merchants {
		if rec.PID > 0 && procs.Alive(rec.PID, rec.StartTime) {
			o.Running[id] = true
		}
	}
	for name, db := range st.Databases {
		if !db.Up {
			o.DatabaseDown[name] = true
		}
	}
	return o
}
