package main

import (
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// kindRow is one line of the table.
type kindRow struct {
	kind                         string
	injected, recovered, notBack int
	lost, dup                    int
	took                         []time.Duration
	p50, max                     time.Duration
}

// summarize counts the faults by kind, in the table's order.
func summarize(faults []*fault) (rows []kindRow, total kindRow) {
	byKind := map[kind]*kindRow{}
	for _, f := range faults {
		r := byKind[f.kind]
		if r == nil {
			r = &kindRow{kind: f.kind.String()}
			byKind[f.kind] = r
		}
		r.injected++
		switch {
		case f.recovered:
			r.recovered++
			r.took = append(r.took, f.took)
		case f.watched:
			r.notBack++
		}
		r.lost += f.lost
		r.dup += f.dup
	}
	total.kind = "total"
	for k := range numKinds {
		r := byKind[k]
		if r == nil {
			continue
		}
		slices.Sort(r.took)
		if n := len(r.took); n > 0 {
			r.p50 = r.took[(n-1)/2]
			r.max = r.took[n-1]
		}
		rows = append(rows, *r)
		total.injected += r.injected
		total.recovered += r.recovered
		total.notBack += r.notBack
		total.lost += r.lost
		total.dup += r.dup
		total.took = append(total.took, r.took...)
	}
	slices.Sort(total.took)
	if n := len(total.took); n > 0 {
		total.p50 = total.took[(n-1)/2]
		total.max = total.took[n-1]
	}
	return rows, total
}

func fmtDur(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(10 * time.Millisecond).String()
}

// report prints the run's table, notes and violations.
func (s *sim) report(convergence time.Duration, converged bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.out
	c := s.cfg
	fmt.Fprintf(w, "\nfaultsim: seed %d, %d merchants, %s source, restart block %s, faults for %s\n",
		c.seed, c.merchants, c.source, onOff(c.restartBlock), s.injectEnd.Sub(s.injectStart).Round(time.Second))
	fmt.Fprintf(w, "recovered = back within %s of the fault (of its end, for faults that last; or of the end of a later fault that rightly\n", c.recoverBound)
	fmt.Fprintf(w, "  holds it back, see bench/README.md), plus the restart backoff due (%s doubling up to %s):\n", s.policy.initial, s.policy.max)
	fmt.Fprintf(w, "  merchant faults: one process serving /health and one log shim; daemon faults, disk-full, api-flood: the API answers;\n")
	fmt.Fprintf(w, "  db faults: a write through the merchant is acknowledged again; bad-spec: status shows no spec error.\n\n")

	rows, total := summarize(s.faults)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "kind\tinjected\trecovered\tnot back\trecovery p50\tmax\tlost\tduplicated\t")
	line := func(r kindRow) {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\t%d\t%d\t\n", r.kind, r.injected, r.recovered, r.notBack, fmtDur(r.p50), fmtDur(r.max), r.lost, r.dup)
	}
	for _, r := range rows {
		line(r)
	}
	if s.unblamedLost > 0 || s.unblamedDup > 0 {
		line(kindRow{kind: "(before any fault)", lost: s.unblamedLost, dup: s.unblamedDup})
		total.lost += s.unblamedLost
		total.dup += s.unblamedDup
	}
	line(total)
	tw.Flush()

	var skipped []string
	for k, why := range s.skipped {
		skipped = append(skipped, fmt.Sprintf("%s (%s)", k, why))
	}
	sort.Strings(skipped)
	if len(skipped) > 0 {
		fmt.Fprintf(w, "\nleft out: %s\n", strings.Join(skipped, "; "))
	}
	fmt.Fprintf(w, "\nwrites: %d acknowledged, %d not", s.writes.ackCount(), s.writes.failCount())
	if n := s.writes.failCount(); n > 0 {
		fmt.Fprintf(w, " (%s)", s.writes.failReasons())
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "channel versions: %s\n", strings.Join(s.history, " → "))
	fmt.Fprintf(w, "daemon starts: %d\n", s.daemons)
	if converged {
		fmt.Fprintf(w, "converged %s after the last fault was restored\n", fmtDur(convergence))
	} else {
		fmt.Fprintf(w, "NOT converged within %s after the last fault was restored\n", c.converge)
	}
	if len(s.notes) > 0 {
		fmt.Fprintf(w, "\nnotes (%d):\n", len(s.notes))
		for _, n := range s.notes {
			fmt.Fprintf(w, "  - %s\n", n)
		}
	}
	if len(s.violations) == 0 {
		fmt.Fprintf(w, "\nno violations\n")
		return
	}
	fmt.Fprintf(w, "\nVIOLATIONS (%d):\n", len(s.violations))
	for _, v := range s.violations {
		fmt.Fprintf(w, "  - %s\n", strings.ReplaceAll(v, "\n", "\n    "))
	}
	if len(s.histories) > 0 {
		var ids []string
		for id := range s.histories {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			fmt.Fprintf(w, "\nhistory of %s (last events, from %s):\n", id, filepath.Join(s.stateDir, "events.jsonl"))
			for _, l := range s.histories[id] {
				fmt.Fprintf(w, "  %s\n", l)
			}
		}
	}
	fmt.Fprintf(w, "\nreplay with: go run ./bench/faultsim -seed %d %s\n", c.seed, replayFlags(c))
}

func replayFlags(c config) string {
	var f []string
	if c.duration > 0 {
		f = append(f, "-duration", c.duration.String())
	}
	if c.faults > 0 {
		f = append(f, "-faults", fmt.Sprint(c.faults))
	}
	f = append(f, "-merchants", fmt.Sprint(c.merchants))
	if !c.restartBlock {
		f = append(f, "-restart-block=false")
	}
	if c.source != "dir" {
		f = append(f, "-source", c.source)
	}
	return strings.Join(f, " ")
}
