package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
)

// The parts of steward's files and documents faultsim reads. They are
// declared here, not imported, so that the checks stay independent of the
// code they check.

// record is a merchant's record: state/merchants/ID.json.
type record struct {
	ID           string    `json:"id"`
	Current      instance  `json:"current"`
	Candidate    *instance `json:"candidate"`
	Change       *change   `json:"change"`
	GoodVersions []string  `json:"good_versions"`
	BadVersions  []string  `json:"bad_versions"`
	LastError    string    `json:"last_error"`
}

type instance struct {
	PID       int    `json:"pid"`
	StartTime uint64 `json:"start_time"`
	Port      int    `json:"port"`
	Version   string `json:"version"`
}

type change struct {
	Kind string `json:"kind"`
	From string `json:"from"`
	To   string `json:"to"`
	Step int    `json:"step"`
	Undo bool   `json:"undo"`
}

var stepNames = []string{"planned", "installed", "migrated", "stopped", "started", "ready", "gated", "routed"}

func stepName(s int) string {
	if s >= 0 && s < len(stepNames) {
		return stepNames[s]
	}
	return fmt.Sprintf("step %d", s)
}

// rollout is state/rollouts/KEY.json.
type rollout struct {
	Package string   `json:"package"`
	Version string   `json:"version"`
	Failed  []string `json:"failed"`
	Halted  bool     `json:"halted"`
	Reason  string   `json:"reason"`
}

// event is one line of state/events.jsonl.
type event struct {
	Time     time.Time `json:"time"`
	Merchant string    `json:"merchant"`
	Action   string    `json:"action"`
	Reason   string    `json:"reason"`
	Result   string    `json:"result"`
	Error    string    `json:"error"`
	PID      int       `json:"pid"`
}

// statusDoc is `steward status -o json` (and GET /v1/status).
type statusDoc struct {
	Merchants []struct {
		ID             string `json:"id"`
		State          string `json:"state"`
		PID            int    `json:"pid"`
		Port           int    `json:"port"`
		Version        string `json:"version"`
		DesiredVersion string `json:"desired_version"`
		Healthy        bool   `json:"healthy"`
		LastError      string `json:"last_error"`
		InSpecs        bool   `json:"in_specs"`
	} `json:"merchants"`
	SpecError string `json:"spec_error"`
}

func parseStatus(b []byte) (statusDoc, error) {
	var st statusDoc
	err := json.Unmarshal(b, &st)
	return st, err
}

// readRecords reads every merchant record of the state directory.
func readRecords(stateDir string) (map[string]*record, error) {
	out := map[string]*record{}
	err := readJSONDir(filepath.Join(stateDir, "merchants"), func(name string, b []byte) error {
		var r record
		if err := json.Unmarshal(b, &r); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		out[strings.TrimSuffix(name, ".json")] = &r
		return nil
	})
	return out, err
}

// readRollouts reads every rollout record, by version.
func readRollouts(stateDir string) (map[string]*rollout, error) {
	out := map[string]*rollout{}
	err := readJSONDir(filepath.Join(stateDir, "rollouts"), func(name string, b []byte) error {
		var r rollout
		if err := json.Unmarshal(b, &r); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if r.Package == "invoicing" {
			out[r.Version] = &r
		}
		return nil
	})
	return out, err
}

// readJSONDir calls fn with every *.json file of dir (not the temporary
// files of atomic writes, which are hidden).
func readJSONDir(dir string, fn func(name string, b []byte) error) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue // replaced meanwhile
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := fn(e.Name(), b); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// lastGood is the version a merchant falls back to by steward's rollout
// policy: the version it runs when that is not marked bad, else its
// newest good version that is not, else what it runs.
func (r *record) lastGood() string {
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

// expected is the version the rollout policy holds for a merchant now:
// the channel's version, or its last good one when that version failed
// on it or its rollout halted.
func (s *sim) expected(channel string, rec *record, rollouts map[string]*rollout) (version, why string) {
	v := channel
	if rec == nil || rec.Current.Version == v {
		return v, "the channel's version"
	}
	if slices.Contains(rec.BadVersions, v) {
		return rec.lastGood(), fmt.Sprintf("%s failed on this merchant", v)
	}
	if ro := rollouts[v]; ro != nil && ro.Halted {
		return rec.lastGood(), fmt.Sprintf("the rollout of %s halted (%s)", v, ro.Reason)
	}
	return v, "the channel's version"
}

// converge polls until the fleet passes every check of its processes,
// records and status, or bound passes; it returns what still fails.
func (s *sim) converge(ctx context.Context, bound time.Duration) []string {
	deadline := time.Now().Add(bound)
	for {
		v := s.checkFleet(ctx)
		if len(v) == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			return v
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// checkFleet checks, once, that every merchant of the specs runs and
// answers on the version the policy holds for it, with one process and one
// shim, as its record and steward's status say.
func (s *sim) checkFleet(ctx context.Context) []string {
	var v []string
	bad := func(format string, args ...any) { v = append(v, fmt.Sprintf(format, args...)) }

	s.specMu.Lock()
	channel := s.channel
	s.specMu.Unlock()
	recs, err := readRecords(s.stateDir)
	if err != nil {
		bad("reading the state's records: %v", err)
	}
	rollouts, err := readRollouts(s.stateDir)
	if err != nil {
		bad("reading the state's rollouts: %v", err)
	}
	out, errOut, err := s.stewardJSON(ctx, 30*time.Second, "status", "-o", "json")
	var st statusDoc
	if err != nil {
		bad("steward status -o json: %v: %s", err, strings.TrimSpace(errOut))
	} else if st, err = parseStatus(out); err != nil {
		bad("steward status -o json: bad JSON: %v", err)
	}
	if st.SpecError != "" {
		bad("status reports a spec error: %s", st.SpecError)
	}
	status := map[string]int{}
	for i, m := range st.Merchants {
		status[m.ID] = i
	}

	ps := s.procs.get(0)
	fp := s.layout.classify(ps)
	var daemonPID int
	if d := s.cur.Load(); d != nil && s.daemonRunning() {
		daemonPID = d.pid
	} else {
		bad("no daemon runs")
	}

	for _, m := range s.merchants {
		rec := recs[m.id]
		want, why := s.expected(channel, rec, rollouts)
		if isBroken(want) {
			bad("%s: the policy would hold the broken version %s (%s)", m.id, want, why)
		}
		// /proc: one process in its work dir, serving; one log shim.
		procs := fp.merchants[m.id]
		var server proc
		switch {
		case len(procs) == 0:
			bad("%s: no process in its work dir %s", m.id, s.layout.workDir(m.id))
		case len(procs) > 1:
			bad("%s: %d processes in its work dir: %s", m.id, len(procs), describeProcs(procs))
		case !isServer(procs[0]):
			bad("%s: the one process in its work dir is not the app serving: %s", m.id, describeProcs(procs))
		default:
			server = procs[0]
		}
		if n := len(fp.shims[m.id]); n != 1 {
			bad("%s: %d log shims, want 1: %s", m.id, n, describeProcs(fp.shims[m.id]))
		}
		// The record names that process.
		switch {
		case rec == nil:
			bad("%s: no record in %s", m.id, filepath.Join(s.stateDir, "merchants"))
		default:
			if server.pid != 0 && (rec.Current.PID != server.pid || rec.Current.StartTime != server.start) {
				bad("%s: its record says pid %d (start time %d), /proc has pid %d (start time %d) in its work dir",
					m.id, rec.Current.PID, rec.Current.StartTime, server.pid, server.start)
			}
			if rec.Current.PID != 0 {
				if p, ok := inspect(rec.Current.PID); !ok || p.start != rec.Current.StartTime || p.state == 'Z' {
					bad("%s: its record's pid %d (start time %d) is not a live process with that start time", m.id, rec.Current.PID, rec.Current.StartTime)
				}
			}
			if rec.Candidate != nil && rec.Candidate.PID != 0 {
				bad("%s: its record still has a candidate pid %d", m.id, rec.Candidate.PID)
			}
			if rec.Change != nil {
				bad("%s: its record still has a change in progress: %s %s→%s at %s (undo %v)",
					m.id, rec.Change.Kind, rec.Change.From, rec.Change.To, stepName(rec.Change.Step), rec.Change.Undo)
			}
			if rec.Current.Version != want {
				bad("%s: its record says version %s, the policy holds %s (%s; channel %s)", m.id, rec.Current.Version, want, why, channel)
			}
		}
		// steward's status.
		if i, ok := status[m.id]; !ok {
			if err == nil {
				bad("%s: not in steward status", m.id)
			}
		} else {
			ms := st.Merchants[i]
			if ms.State != "running" || !ms.Healthy {
				bad("%s: status says %s, healthy %v (last error %q)", m.id, ms.State, ms.Healthy, ms.LastError)
			}
			if ms.Version != want {
				bad("%s: status says version %s, the policy holds %s (%s)", m.id, ms.Version, want, why)
			}
			if server.pid != 0 && ms.PID != server.pid {
				bad("%s: status says pid %d, /proc has %d", m.id, ms.PID, server.pid)
			}
		}
		// The merchant itself.
		if code, body := httpGet(m.port, "/version", 2*time.Second); code != 200 {
			bad("%s: GET /version on port %d: %s", m.id, m.port, httpWhat(code))
		} else if got := strings.TrimSpace(body); got != want {
			bad("%s: GET /version answers %s, the policy holds %s (%s)", m.id, got, want, why)
		}
		if code, _ := httpGet(m.port, "/health", 2*time.Second); code != 200 {
			bad("%s: GET /health on port %d: %s", m.id, m.port, httpWhat(code))
		}
	}

	// No process of the fleet stopped; no zombie of the daemon's.
	for _, p := range ps {
		ours := s.layout.merchantOf(p) != "" || s.layout.shimOf(p) != "" || p.pid == daemonPID
		if ours && (p.state == 'T' || p.state == 't') {
			bad("pid %d (%s) is stopped (state %c)", p.pid, strings.Join(p.argv, " "), p.state)
		}
		if daemonPID != 0 && p.ppid == daemonPID && p.state == 'Z' {
			bad("pid %d is a zombie child of the daemon (pid %d)", p.pid, daemonPID)
		}
	}
	// Nothing runs for a merchant that is not in the specs.
	for id, procs := range fp.merchants {
		if s.byID[id] == nil {
			bad("processes in the work dir of %s, which is not in the specs: %s", id, describeProcs(procs))
		}
	}
	sort.Strings(v)
	return v
}

func httpWhat(code int) string {
	if code == 0 {
		return "no answer"
	}
	return fmt.Sprintf("status %d", code)
}

func describeProcs(ps []proc) string {
	var parts []string
	for _, p := range ps {
		parts = append(parts, fmt.Sprintf("pid %d [%c] %s", p.pid, p.state, strings.Join(p.argv, " ")))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, "; ")
}

// checkEvents checks the history: every event has a reason and a result,
// every line is whole, and no "exited" event names a process that is
// still alive (an exit steward made up).
func (s *sim) checkEvents() {
	path := filepath.Join(s.stateDir, "events.jsonl")
	f, err := os.Open(path)
	if err != nil {
		s.violate("reading the history: %v", err)
		return
	}
	defer f.Close()
	bt, btErr := bootTime()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	line := 0
	noReason, noResult := 0, 0
	var firstNoReason, firstNoResult string
	for sc.Scan() {
		line++
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			s.violate("%s:%d: not a whole JSON event (%v): %.200s", path, line, err, sc.Text())
			continue
		}
		if e.Reason == "" {
			if noReason++; noReason == 1 {
				firstNoReason = fmt.Sprintf("%s:%d: %.300s", path, line, sc.Text())
			}
		}
		if e.Result == "" {
			if noResult++; noResult == 1 {
				firstNoResult = fmt.Sprintf("%s:%d: %.300s", path, line, sc.Text())
			}
		}
		if e.Action == "exited" && e.PID != 0 && btErr == nil {
			if p, ok := inspect(e.PID); ok && p.state != 'Z' && s.layout.merchantOf(p) == e.Merchant {
				started := bt.Add(time.Duration(p.start) * time.Second / clockTicks)
				if started.Before(e.Time.Add(-time.Second)) {
					s.violate("%s:%d: %s's pid %d is recorded as exited at %s, but that process (started %s) is still running",
						path, line, e.Merchant, e.PID, e.Time.Format("15:04:05.000"), started.Format("15:04:05.000"))
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		s.violate("reading %s: %v", path, err)
	}
	if noReason > 0 {
		s.violate("%d history events have no reason; the first: %s", noReason, firstNoReason)
	}
	if noResult > 0 {
		s.violate("%d history events have no result; the first: %s", noResult, firstNoResult)
	}
	s.vlogf("history: %d events checked", line)
}

// checkWrites checks that every acknowledged write is in its merchant's
// database exactly once, with the id the merchant acknowledged.
func (s *sim) checkWrites(ctx context.Context) {
	byMerchant := map[string][]ack{}
	for _, a := range s.writes.all() {
		byMerchant[a.merchant] = append(byMerchant[a.merchant], a)
	}
	for _, m := range s.merchants {
		acks := byMerchant[m.id]
		rows, err := s.invoices(ctx, m)
		if err != nil {
			s.violate("%s: reading its invoices from database %s: %v (%d acknowledged writes unchecked)", m.id, m.dbName, err, len(acks))
			continue
		}
		lost, dup := 0, 0
		var examples []string
		for _, a := range acks {
			ids := rows[a.amount]
			switch {
			case len(ids) == 0:
				lost++
				s.blame(a, true)
				if len(examples) < 5 {
					examples = append(examples, fmt.Sprintf("amount %d (id %d, acknowledged at %s) is missing", a.amount, a.id, a.at.Format("15:04:05.000")))
				}
			case len(ids) > 1:
				dup++
				s.blame(a, false)
				if len(examples) < 5 {
					examples = append(examples, fmt.Sprintf("amount %d (id %d, acknowledged at %s) is there %d times: ids %v", a.amount, a.id, a.at.Format("15:04:05.000"), len(ids), ids))
				}
			case ids[0] != a.id:
				s.violate("%s: amount %d was acknowledged as id %d, the database has it as id %d", m.id, a.amount, a.id, ids[0])
			}
		}
		if lost > 0 || dup > 0 {
			s.violate("%s: %d of %d acknowledged writes lost, %d duplicated, in database %s: %s", m.id, lost, len(acks), dup, m.dbName, strings.Join(examples, "; "))
		}
	}
}

// invoices reads merchant m's invoices directly (not through its proxy):
// ids by amount.
func (s *sim) invoices(ctx context.Context, m *merchant) (map[int64][]int64, error) {
	db, err := sql.Open("postgres", s.pg.withDB(m.dbName))
	if err != nil {
		return nil, err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	rows, err := db.QueryContext(ctx, `SELECT id, amount_cents FROM invoices`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int64][]int64{}
	for rows.Next() {
		var id, amount int64
		if err := rows.Scan(&id, &amount); err != nil {
			return nil, err
		}
		out[amount] = append(out[amount], id)
	}
	return out, rows.Err()
}

// blame counts a lost (or duplicated) write against the last fault that
// may explain it: the latest one before the acknowledgement that affected
// its merchant.
func (s *sim) blame(a ack, lost bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var f *fault
	for _, c := range s.faults {
		if c.at.After(a.at) {
			break
		}
		if c.affects(a.merchant) {
			f = c
		}
	}
	if f == nil {
		if lost {
			s.unblamedLost++
		} else {
			s.unblamedDup++
		}
		return
	}
	if lost {
		f.lost++
	} else {
		f.dup++
	}
}

// keepHistories keeps, for the report, the last events of every merchant
// a violation names ("m03: ...").
func (s *sim) keepHistories(violations []string) {
	for _, v := range violations {
		id, _, ok := strings.Cut(v, ":")
		if !ok || s.byID[id] == nil {
			continue
		}
		s.mu.Lock()
		_, done := s.histories[id]
		s.mu.Unlock()
		if done {
			continue
		}
		h := s.merchantHistory(id, 25)
		s.mu.Lock()
		if s.histories == nil {
			s.histories = map[string][]string{}
		}
		s.histories[id] = h
		s.mu.Unlock()
	}
}

// merchantHistory returns the last n events of merchant id, one line each.
func (s *sim) merchantHistory(id string, n int) []string {
	f, err := os.Open(filepath.Join(s.stateDir, "events.jsonl"))
	if err != nil {
		return []string{err.Error()}
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	var out []string
	var last string
	var lastAt time.Time
	repeats := 0
	for sc.Scan() {
		var e struct {
			event
			Version string `json:"version"`
			Detail  string `json:"detail"`
		}
		if json.Unmarshal(sc.Bytes(), &e) != nil || e.Merchant != id {
			continue
		}
		what := fmt.Sprintf("%s %s [%s] %s", e.Action, e.Version, e.Result, e.Reason)
		if e.PID != 0 {
			what += fmt.Sprintf(" (pid %d)", e.PID)
		}
		if e.Error != "" {
			what += ": " + e.Error
		}
		// The same event again (a retry every resync) is counted, not repeated.
		if what == last {
			repeats++
			lastAt = e.Time
			continue
		}
		if repeats > 0 {
			out[len(out)-1] += fmt.Sprintf(" (and %d times more, until %s)", repeats, lastAt.Format("15:04:05.000"))
		}
		last, lastAt, repeats = what, e.Time, 0
		out = append(out, e.Time.Format("15:04:05.000")+" "+what)
		if len(out) > n {
			out = out[1:]
		}
	}
	if repeats > 0 && len(out) > 0 {
		out[len(out)-1] += fmt.Sprintf(" (and %d times more, until %s)", repeats, lastAt.Format("15:04:05.000"))
	}
	return out
}
