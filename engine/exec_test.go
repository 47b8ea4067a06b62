package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"steward/pkgstore"
	"steward/reconcile"
	"steward/runtime"
	"steward/spec"
	"steward/state"
)

var bg = context.Background()

func TestCreateThenConverged(t *testing.T) {
	r := newRig(t, "1.0.0", "acme")
	r.converge("acme")
	rec := r.record("acme")
	if rec.Current.Version != "1.0.0" || rec.Phase != reconcile.PhaseRunning || rec.Port != 9000 || !slices.Contains(rec.GoodVersions, "1.0.0") {
		t.Fatalf("after create: %+v", rec)
	}
	if got := r.rt.alive("acme"); !slices.Equal(got, []string{"1.0.0:9000"}) {
		t.Errorf("processes %v", got)
	}
	if r.rt.schema["acme"] != 1 {
		t.Errorf("a first start migrates: schema %d", r.rt.schema["acme"])
	}
	rev := rec.Rev
	r.converge("acme")
	if r.record("acme").Rev != rev {
		t.Error("reconciling a converged merchant wrote its record")
	}
}

func TestUpgradeStepsAndCommit(t *testing.T) {
	r := newRig(t, "1.0.0", "acme")
	r.converge("acme")
	old := r.record("acme").Current.PID
	r.setFleet("1.1.0", "acme")
	r.converge("acme")
	rec := r.record("acme")
	if rec.Current.Version != "1.1.0" || rec.Change != nil || rec.Candidate != nil || !slices.Equal(rec.GoodVersions, []string{"1.0.0", "1.1.0"}) {
		t.Fatalf("after the upgrade: %+v", rec)
	}
	if got := r.rt.alive("acme"); !slices.Equal(got, []string{"1.1.0:9000"}) || rec.Current.PID == old {
		t.Errorf("processes %v (old pid %d, now %d)", got, old, rec.Current.PID)
	}
	if r.rt.schema["acme"] != 2 {
		t.Errorf("schema %d after the upgrade, want 2", r.rt.schema["acme"])
	}
	ro := r.e.Rollout("invoicing@1.1.0")
	if ro == nil || !slices.Equal(ro.Succeeded, []string{"acme"}) || ro.Halted {
		t.Errorf("rollout %+v", ro)
	}
}

// A canary that fails its gate halts its rollout and is returned to its
// last good version and schema, by itself.
func TestFailedGateReturnsToLastGood(t *testing.T) {
	r := newRig(t, "1.0.0", "acme", "bluebird")
	r.converge("acme", "bluebird")
	r.pr.sick["1.1.0"] = true
	r.setFleet("1.1.0", "acme", "bluebird")
	res, err := r.e.Reconcile(bg, r.d, "acme", ObserveOptions{})
	if err == nil || !strings.Contains(err.Error(), "rolled back to 1.0.0") {
		t.Fatalf("reconcile of the canary = %+v, %v", res, err)
	}
	rec := r.record("acme")
	if rec.Current.Version != "1.0.0" || !slices.Contains(rec.BadVersions, "1.1.0") || rec.Change != nil || rec.Candidate != nil {
		t.Fatalf("after the failed gate: %+v", rec)
	}
	if got := r.rt.alive("acme"); !slices.Equal(got, []string{"1.0.0:9000"}) {
		t.Errorf("processes %v", got)
	}
	if r.rt.schema["acme"] != 1 {
		t.Errorf("schema %d after returning, want 1", r.rt.schema["acme"])
	}
	ro := r.e.Rollout("invoicing@1.1.0")
	if ro == nil || !ro.Halted || !strings.Contains(ro.Reason, "canary acme failed") {
		t.Fatalf("rollout %+v", ro)
	}
	// The halted rollout keeps bluebird where it is.
	starts := len(r.rt.starts)
	r.converge("bluebird")
	if r.record("bluebird").Current.Version != "1.0.0" || len(r.rt.starts) != starts {
		t.Errorf("bluebird changed past the halted rollout: %+v", r.record("bluebird"))
	}
	// And the bad version is never launched again for acme: not by a
	// restart, not after a crash.
	if err := r.e.Restart(bg, r.d, "acme", nil); err != nil {
		t.Fatal(err)
	}
	if v := r.record("acme").Current.Version; v != "1.0.0" {
		t.Fatalf("steward restart launched %s", v)
	}
	r.rt.kill(r.record("acme").Current.PID)
	r.converge("acme")
	if v := r.record("acme").Current.Version; v != "1.0.0" {
		t.Fatalf("the crash restart launched %s", v)
	}
	if r.rt.schema["acme"] != 1 {
		t.Errorf("a restart migrated: schema %d", r.rt.schema["acme"])
	}
}

// A merchant that crashes while its rollout is halted is restarted, on
// its last good version.
func TestCrashDuringHaltedRolloutRestarts(t *testing.T) {
	r := newRig(t, "1.0.0", "acme")
	r.converge("acme")
	r.setFleet("1.1.0", "acme")
	if _, err := r.e.updateRollout(bg, "invoicing", "1.1.0", func(ro *reconcile.Rollout) { ro.Halted, ro.Reason = true, "canary bravo failed" }); err != nil {
		t.Fatal(err)
	}
	r.rt.kill(r.record("acme").Current.PID)
	r.converge("acme")
	rec := r.record("acme")
	if rec.Current.Version != "1.0.0" || !rec.Current.Running() || rec.Restarts != 1 {
		t.Fatalf("after the crash: %+v", rec)
	}
	if got := r.rt.alive("acme"); !slices.Equal(got, []string{"1.0.0:9000"}) {
		t.Errorf("processes %v", got)
	}
}

// An upgrade interrupted at each step ends, after the next start, as an
// uninterrupted one would.
func TestInterruptedUpgradeResumes(t *testing.T) {
	for _, tc := range []struct {
		name        string
		step        reconcile.Step
		candidate   bool // the new process runs
		sick        bool // and fails its gate
		wantVersion string
	}{
		{"killed after install", reconcile.StepInstalled, false, false, "1.1.0"},
		{"killed after the migration", reconcile.StepMigrated, false, false, "1.1.0"},
		{"killed after the old process stopped", reconcile.StepStopped, false, false, "1.1.0"},
		{"killed in the health gate", reconcile.StepStarted, true, false, "1.1.0"},
		{"killed in the health gate, which then fails", reconcile.StepStarted, true, true, "1.0.0"},
		{"killed after the new process started, which then died", reconcile.StepStarted, false, false, "1.0.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, "1.0.0", "acme")
			r.converge("acme")
			r.setFleet("1.1.0", "acme")
			rec := r.record("acme")
			// Make the state a steward killed at tc.step leaves behind.
			rec.Change = &reconcile.Change{Kind: reconcile.Upgrade, From: "1.0.0", To: "1.1.0", Rollout: "invoicing@1.1.0", Canary: true, Step: tc.step}
			if tc.step >= reconcile.StepMigrated {
				r.rt.schema["acme"] = 2
			}
			if tc.step >= reconcile.StepStopped {
				r.rt.kill(rec.Current.PID)
				rec.Current.PID = 0
			}
			if tc.step >= reconcile.StepStarted {
				p, _ := r.rt.Start(bg, runtimeSpecFor(t, r, "1.1.0", 9000))
				rec.Candidate = &reconcile.Instance{PID: p.PID, StartTime: p.StartTime, Port: 9000, Version: "1.1.0"}
				if !tc.candidate {
					r.rt.kill(p.PID)
				}
			}
			if err := r.store.PutMerchant(bg, rec); err != nil {
				t.Fatal(err)
			}
			if err := r.e.Load(bg, true); err != nil { // a new steward
				t.Fatal(err)
			}
			r.pr.sick["1.1.0"] = tc.sick
			for range 5 {
				r.e.Reconcile(bg, r.d, "acme", ObserveOptions{})
			}
			rec = r.record("acme")
			if rec.Current.Version != tc.wantVersion || rec.Change != nil || rec.Candidate != nil || !rec.Current.Running() {
				t.Fatalf("after resuming: %+v", rec)
			}
			if got := r.rt.alive("acme"); !slices.Equal(got, []string{tc.wantVersion + ":9000"}) {
				t.Errorf("processes %v, want exactly one of %s", got, tc.wantVersion)
			}
			if r.rt.schema["acme"] != schemaOf(tc.wantVersion) {
				t.Errorf("schema %d, want %d", r.rt.schema["acme"], schemaOf(tc.wantVersion))
			}
		})
	}
}

func runtimeSpecFor(t *testing.T, r *rig, version string, port int) (s runtime.Spec) {
	t.Helper()
	rel, err := r.pk.release(version)
	if err != nil {
		t.Fatal(err)
	}
	argv, _ := rel.Command(port, "acme")
	s.Merchant, s.Argv, s.ReleaseDir = "acme", argv, rel.Dir
	return s
}

// A record that could not be saved fails its action visibly: the error,
// status' last error, a metric. Nothing is reported as done.
func TestPersistenceFailureFailsTheAction(t *testing.T) {
	r := newRig(t, "1.0.0", "acme")
	r.converge("acme")
	r.rt.kill(r.record("acme").Current.PID)
	r.store.failPuts = 100
	_, err := r.e.Reconcile(bg, r.d, "acme", ObserveOptions{})
	if !errors.Is(err, ErrPersist) {
		t.Fatalf("reconcile with a failing store = %v, want ErrPersist", err)
	}
	if r.metrics.persist == 0 {
		t.Error("no persistence failure was counted")
	}
	if msg := r.e.PersistErrors()["acme"]; !strings.Contains(msg, "no space left") {
		t.Errorf("PersistErrors = %q", msg)
	}
	st := r.e.Status(bg, r.d, StatusOptions{})
	if !strings.Contains(st.Merchants[0].LastError, "could not be saved") {
		t.Errorf("status does not show the failed write: %+v", st.Merchants[0])
	}
	r.store.failPuts = 0
	r.converge("acme")
	if r.e.PersistErrors()["acme"] != "" || !r.record("acme").Current.Running() {
		t.Error("a later write did not clear the failure")
	}
}

// A record written behind the engine's back is stale to it: the write is
// refused, the engine reloads that one record, and the retry succeeds.
func TestStaleRecordIsReloadedAndRetried(t *testing.T) {
	r := newRig(t, "1.0.0", "acme", "bluebird")
	r.converge("acme", "bluebird")
	other, err := r.store.Merchant(bg, "acme")
	if err != nil {
		t.Fatal(err)
	}
	other.Restarts = 41
	if err := r.store.PutMerchant(bg, other); err != nil {
		t.Fatal(err)
	}
	bluebird := r.record("bluebird").Rev
	_, err = r.e.SetSuspended(bg, "acme", true)
	if !errors.Is(err, state.ErrStale) {
		t.Fatalf("a write of a stale record = %v, want ErrStale", err)
	}
	if got := r.record("acme"); got.Restarts != 41 || got.Rev != other.Rev {
		t.Fatalf("the stale record was not reloaded: %+v", got)
	}
	if _, err := r.e.SetSuspended(bg, "acme", true); err != nil {
		t.Fatalf("the retry: %v", err)
	}
	if r.record("bluebird").Rev != bluebird {
		t.Error("another merchant's record moved")
	}
}

// Events that cannot be written are kept, counted as pending, and written
// in order once the store takes them again.
func TestEventsSurviveAFailedAppend(t *testing.T) {
	r := newRig(t, "1.0.0", "acme")
	r.store.failEvents = 3
	r.converge("acme")
	if n, _ := r.e.PendingEvents(); n == 0 {
		t.Fatal("no pending events after failed appends")
	}
	if r.metrics.pending == 0 {
		t.Error("the pending events are not reported")
	}
	r.store.failEvents = 0
	if err := r.e.FlushEvents(bg); err != nil {
		t.Fatal(err)
	}
	if n, _ := r.e.PendingEvents(); n != 0 {
		t.Errorf("%d events still pending", n)
	}
	got := r.events("acme")
	if len(got) < 2 || got[0] != "migrate ok" || !slices.Contains(got, "create ok") {
		t.Errorf("events after the retry: %v", got)
	}
}

// Error classes say what the loop does next.
func TestErrorClasses(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(r *rig)
		class reconcile.Class
	}{
		{"a fixed port held by a foreign process is stalled", func(r *rig) { r.rt.foreign[9005] = 77; r.setFleet("1.0.0", "acme:9005") }, reconcile.Stalled},
		{"a bad package is stalled", func(r *rig) { r.pk.bad["1.0.0"] = fmt.Errorf("%w: sha256 mismatch", pkgstore.ErrBadPackage) }, reconcile.Stalled},
		{"a flaky download is transient", func(r *rig) { r.pk.bad["1.0.0"] = errors.New("connection reset by peer") }, reconcile.Transient},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, "1.0.0", "acme")
			tc.setup(r)
			res, err := r.e.Reconcile(bg, r.d, "acme", ObserveOptions{})
			if got := reconcile.ClassOf(err); got != tc.class {
				t.Fatalf("class %q (%v), want %q", got, err, tc.class)
			}
			if tc.class == reconcile.Stalled && (res.Requeue || res.RequeueAfter != 0) {
				t.Errorf("a stalled merchant is requeued: %+v", res)
			}
			if rec := r.e.Record("acme"); rec == nil || rec.ErrorClass != tc.class || rec.LastError == "" {
				t.Errorf("record %+v does not keep the error and its class", rec)
			}
		})
	}
}

// An assigned port skips ports held by foreign processes.
func TestAssignedPortSkipsForeignProcesses(t *testing.T) {
	r := newRig(t, "1.0.0", "acme")
	r.rt.foreign[9000], r.rt.foreign[9001] = 77, 78
	r.converge("acme")
	if p := r.record("acme").Port; p != 9002 {
		t.Fatalf("acme got port %d, want 9002 (9000 and 9001 are held by other processes)", p)
	}
}

// A process /proc cannot tell about is neither started again nor counted
// as an exit.
func TestUnknownLivenessIsNotAnExit(t *testing.T) {
	r := newRig(t, "1.0.0", "acme")
	r.converge("acme")
	pid := r.record("acme").Current.PID
	r.rt.unknown[pid] = true
	starts := len(r.rt.starts)
	res, _ := r.e.Reconcile(bg, r.d, "acme", ObserveOptions{})
	if rec := r.record("acme"); rec.Died || rec.Restarts != 0 || rec.Current.PID != pid || len(r.rt.starts) != starts {
		t.Fatalf("an unknown liveness was taken for an exit: %+v", rec)
	}
	if res.RequeueAfter == 0 {
		t.Error("an unknown liveness is not looked at again")
	}
	if r.metrics.exits != 0 {
		t.Error("an exit was counted")
	}
}

// The stop grace comes from the merchant's spec, else the host's
// runtime.stop_grace.
func TestStopGrace(t *testing.T) {
	r := newRig(t, "1.0.0", "acme")
	r.converge("acme")
	if err := r.e.Restart(bg, r.d, "acme", nil); err != nil {
		t.Fatal(err)
	}
	if len(r.rt.stops) == 0 || r.rt.stops[len(r.rt.stops)-1] != 3*time.Second {
		t.Errorf("stops with grace %v, want the host's 3s", r.rt.stops)
	}
}

// Pre-flight: what the new process needs is checked before the old one
// stops.
func TestRestartRefusedBeforeAnythingStops(t *testing.T) {
	r := newRig(t, "1.0.0", "acme")
	r.converge("acme")
	pid := r.record("acme").Current.PID
	// A merchant env with a NUL byte (validation refuses it in specs; the
	// runtime refuses it too, before the old process is stopped).
	m := *r.d.Fleet.Merchants["acme"]
	m.Env = map[string]spec.EnvValue{"BAD": {Value: spec.NewSecret("a\x00b")}}
	r.d.Fleet.Merchants["acme"] = &m
	err := r.e.Restart(bg, r.d, "acme", nil)
	if err == nil || !strings.Contains(err.Error(), "left alone") {
		t.Fatalf("restart with a bad env = %v", err)
	}
	if got := r.record("acme"); got.Current.PID != pid || !slices.Equal(r.rt.alive("acme"), []string{"1.0.0:9000"}) {
		t.Errorf("the running process was stopped: %+v", got)
	}
}

// Secrets never reach history: migration output (which may print
// DATABASE_URL) is scrubbed of every secret steward knows.
func TestHistoryHoldsNoSecret(t *testing.T) {
	r := newRig(t, "1.0.0", "acme")
	r.converge("acme")
	es, err := r.store.Events(bg, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if s := fmt.Sprintf("%+v", e); strings.Contains(s, testPassword) {
			t.Errorf("an event shows the password: %s", s)
		}
	}
}
