package state

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"steward/reconcile"
	"steward/spec"
)

// v1State is the single-document layout of format 1 (state.json), read so
// that a directory written by an earlier steward keeps working: Load reads
// it as it is, and the first write migrates it to one file per record,
// keeping the old document as state.json.v1.
type v1State struct {
	Format    int                    `json:"format"`
	Serial    uint64                 `json:"serial"`
	Lineage   string                 `json:"lineage"`
	Merchants map[string]*v1Merchant `json:"merchants"`
	Databases map[string]*Database   `json:"databases"`
	Rollouts  map[string]*v1Rollout  `json:"rollouts"`
}

type v1Rollout struct {
	Package   string    `json:"package"`
	Version   string    `json:"version"`
	Succeeded []string  `json:"succeeded"`
	Failed    []string  `json:"failed"`
	Halted    bool      `json:"halted"`
	Reason    string    `json:"reason"`
	StartedAt time.Time `json:"started_at"`
	HaltedAt  time.Time `json:"halted_at"`
}

type v1Merchant struct {
	ID           string            `json:"id"`
	Package      string            `json:"package"`
	Version      string            `json:"version"`
	Port         int               `json:"port"`
	PID          int               `json:"pid"`
	StartTime    uint64            `json:"start_time"`
	Applied      map[string]string `json:"applied"`
	Phase        string            `json:"phase"`
	Suspended    bool              `json:"suspended"`
	Restarts     int               `json:"restarts"`
	Died         bool              `json:"died"`
	Failures     int               `json:"failures"`
	StartedAt    time.Time         `json:"started_at"`
	ExitedAt     time.Time         `json:"exited_at"`
	NextAttempt  time.Time         `json:"next_attempt"`
	LastError    string            `json:"last_error"`
	GoodVersions []string          `json:"good_versions"`
	BadVersions  []string          `json:"bad_versions"`
	Revision     string            `json:"revision"`
	UpgradeFrom  string            `json:"upgrade_from"`
	Schema       *int64            `json:"schema"`
	Override     string            `json:"override"`
	OverrideFor  string            `json:"override_for"`
}

// record converts a format 1 merchant. An upgrade in flight (UpgradeFrom)
// becomes a change whose candidate is the process that ran the new
// version, so that the next reconcile resumes its gate.
func (m *v1Merchant) record(rev uint64) *reconcile.Record {
	r := &reconcile.Record{ID: m.ID, Rev: rev, Package: m.Package, Port: m.Port, Applied: m.Applied, Phase: reconcile.Phase(m.Phase),
		Suspended: m.Suspended, Restarts: m.Restarts, Died: m.Died, Failures: m.Failures, ExitedAt: m.ExitedAt, NextAttempt: m.NextAttempt,
		LastError: m.LastError, GoodVersions: m.GoodVersions, BadVersions: m.BadVersions, Revision: m.Revision, Schema: m.Schema}
	inst := reconcile.Instance{PID: m.PID, StartTime: m.StartTime, Port: m.Port, Version: m.Version, StartedAt: m.StartedAt}
	if m.UpgradeFrom != "" {
		kind := reconcile.Upgrade
		if spec.CompareVersions(m.Version, m.UpgradeFrom) < 0 {
			kind = reconcile.Rollback
		}
		r.Change = &reconcile.Change{Kind: kind, From: m.UpgradeFrom, To: m.Version, Step: reconcile.StepStarted, StartedAt: m.StartedAt}
		r.Current = reconcile.Instance{Port: m.Port, Version: m.UpgradeFrom}
		if m.PID != 0 {
			r.Candidate = &inst
		} else {
			r.Change.Step = reconcile.StepStopped
		}
	} else {
		r.Current = inst
	}
	if m.Override != "" {
		r.Pin = &reconcile.Pin{Version: m.Override, ForSpec: m.OverrideFor}
	}
	return r
}

func (st *FileStore) readV1() (*v1State, error) {
	b, err := os.ReadFile(st.path(v1File))
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	var s v1State
	if err := decodeStrict(b, &s); err != nil {
		return nil, fmt.Errorf("state: %s: %w", st.path(v1File), err)
	}
	if s.Format != 1 || s.Lineage == "" {
		return nil, fmt.Errorf("state: %s is not a format 1 state", st.path(v1File))
	}
	for k, m := range s.Merchants {
		if m == nil || m.ID != k || validName(k) != nil {
			return nil, fmt.Errorf("state: %s: merchant %q is not a valid record", st.path(v1File), k)
		}
	}
	for k, d := range s.Databases {
		if d == nil || d.Name != k || validName(k) != nil {
			return nil, fmt.Errorf("state: %s: database %q is not a valid record", st.path(v1File), k)
		}
	}
	for k, ro := range s.Rollouts {
		if ro == nil || reconcile.RolloutKey(ro.Package, ro.Version) != k || validName(k) != nil {
			return nil, fmt.Errorf("state: %s: rollout %q is not a valid record", st.path(v1File), k)
		}
	}
	return &s, nil
}

// loadV1 reads a format 1 state as a snapshot, every record at the old
// serial.
func (st *FileStore) loadV1() (*Snapshot, error) {
	v1, err := st.readV1()
	if err != nil {
		return nil, err
	}
	s := NewSnapshot()
	s.Lineage, s.Revision = v1.Lineage, v1.Serial
	for id, m := range v1.Merchants {
		s.Merchants[id] = m.record(v1.Serial)
	}
	for k, ro := range v1.Rollouts {
		s.Rollouts[k] = &reconcile.Rollout{Package: ro.Package, Version: ro.Version, Rev: v1.Serial, Succeeded: ro.Succeeded, Failed: ro.Failed,
			Halted: ro.Halted, Reason: ro.Reason, StartedAt: ro.StartedAt, HaltedAt: ro.HaltedAt}
	}
	for k, d := range v1.Databases {
		s.Databases[k] = d
	}
	return s, nil
}

// migrateV1 writes a format 1 state as format 2 records, then keeps the
// old document as state.json.v1. The caller holds the whole-file lock.
// A crash midway leaves state.json in place and no format file, so the
// next write migrates again from the start.
func (st *FileStore) migrateV1() error {
	s, err := st.loadV1()
	if err != nil {
		return err
	}
	for _, d := range []string{merchantsDir, rolloutsDir, databasesDir} {
		if err := os.MkdirAll(st.path(d), 0o700); err != nil {
			return fmt.Errorf("state: %w", err)
		}
	}
	write := func(dir, name string, v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		return writeAtomic(st.path(dir), name+".json", append(b, '\n'))
	}
	for id, r := range s.Merchants {
		if err := write(merchantsDir, id, r); err != nil {
			return fmt.Errorf("state: migrating: %w", err)
		}
	}
	for k, ro := range s.Rollouts {
		if err := write(rolloutsDir, k, ro); err != nil {
			return fmt.Errorf("state: migrating: %w", err)
		}
	}
	for k, d := range s.Databases {
		if err := write(databasesDir, k, d); err != nil {
			return fmt.Errorf("state: migrating: %w", err)
		}
	}
	if err := writeAtomic(st.dir, lineageFile, []byte(s.Lineage+"\n")); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if err := writeAtomic(st.dir, revisionFile, []byte(fmt.Sprintf("%d\n", s.Revision))); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if err := writeAtomic(st.dir, formatFile, []byte(fmt.Sprintf("%d\n", FormatVersion))); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if err := os.Rename(st.path(v1File), st.path(v1File+".v1")); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return syncDir(st.dir)
}
