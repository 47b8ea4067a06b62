package main

import (
	"fmt"
	"io"
	"strings"

	"steward/reconcile"
)

// renderPlan prints a plan for people.
func renderPlan(w io.Writer, p *reconcile.Plan) {
	if len(p.Actions) == 0 && p.Routing == "" {
		fmt.Fprintln(w, "No changes. Every merchant matches the specs.")
		return
	}
	idw, kw := 0, 0
	for _, a := range p.Actions {
		idw, kw = max(idw, len(a.Merchant)), max(kw, len(a.Kind))
	}
	fmt.Fprintf(w, "steward will perform these actions (specs %s, state serial %d):\n\n", p.Revision, p.Serial)
	for _, a := range p.Actions {
		fmt.Fprintf(w, "  %s %-*s  %-*s  %s\n", a.Kind.Symbol(), idw, a.Merchant, kw, a.Kind, describe(a))
	}
	if p.Routing != "" {
		fmt.Fprintf(w, "  ~ router: apply the routing: %s\n", p.Routing)
	}
	s := p.Summary()
	fmt.Fprintln(w)
	if !p.HasChanges() {
		fmt.Fprintf(w, "No changes. %s held; the reasons are above.\n", plural(s.Hold, "merchant"))
		return
	}
	fmt.Fprintf(w, "Plan: %d to create, %d to change, %d to delete.", s.Create, s.Change, s.Delete)
	if s.Hold > 0 {
		fmt.Fprintf(w, " %d held.", s.Hold)
	}
	if p.Routing != "" {
		fmt.Fprint(w, " The routing changes.")
	}
	fmt.Fprintln(w)
}

// describe is an action's reason with the facts people need next to it.
func describe(a reconcile.Action) string {
	var extra []string
	if a.After != nil && a.Kind == reconcile.Create {
		if a.After.Port != 0 {
			extra = append(extra, fmt.Sprintf("port %d", a.After.Port))
		}
		if a.After.Database != "" {
			extra = append(extra, "database "+a.After.Database)
		}
	}
	if a.Rollout != "" && a.Kind.IsVersionChange() {
		if a.Wave == 0 {
			extra = append(extra, "canary")
		} else {
			extra = append(extra, fmt.Sprintf("wave %d", a.Wave))
		}
	}
	if a.Before != nil && a.Before.PID != 0 && (a.Kind == reconcile.Delete || a.Kind == reconcile.Stop) {
		extra = append(extra, fmt.Sprintf("pid %d", a.Before.PID))
	}
	if len(extra) == 0 {
		return a.Reason
	}
	return a.Reason + "; " + strings.Join(extra, ", ")
}
