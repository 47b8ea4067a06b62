package dashboard

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"steward/api"
	"steward/state"
)

// isUnhealthy: the event is a health check's verdict, or a restart for one
// (the daemon's reason for those starts with "health").
func isUnhealthy(ev state.Event) bool {
	return ev.Action == "unhealthy" || strings.HasPrefix(ev.Reason, "health")
}

// isRestart: the process exited, or was restarted for any other reason.
func isRestart(ev state.Event) bool {
	return ev.Action == "exited" || ev.Action == "restart" && !isUnhealthy(ev)
}

// rect is one rectangle of a chart, in viewBox units.
type rect struct {
	X, Y, W, H float64
	Class      string
	Title      string
}

type tick struct {
	X      float64
	Text   string
	Anchor string // text-anchor: the last label ends at the plot's edge
}

// chart is the merchant page's bar chart: per time bin, its exits and
// restarts and its unhealthy verdicts, stacked.
type chart struct {
	Width, Height       float64
	Left, Bottom, Top   float64
	Bars                []rect
	Ticks               []tick
	Max                 int
	Span                string
	Restarts, Unhealthy int
	From, To            time.Time
}

// Chart geometry.
const (
	chartW, chartH        = 960.0, 180.0
	chartLeft, chartRight = 34.0, 8.0
	chartTop, chartBottom = 10.0, 24.0
	chartBins             = 48
)

// chartSpans are the windows a chart can show: the smallest that holds
// the oldest event read, at most the last.
var chartSpans = []time.Duration{time.Hour, 6 * time.Hour, 24 * time.Hour, 7 * 24 * time.Hour}

func merchantChart(evs []state.Event, now time.Time) chart {
	span := chartSpans[0]
	if len(evs) > 0 {
		age := now.Sub(evs[0].Time)
		for _, s := range chartSpans {
			span = s
			if age <= s {
				break
			}
		}
	}
	c := chart{Width: chartW, Height: chartH, Left: chartLeft, Bottom: chartH - chartBottom, Top: chartTop, From: now.Add(-span), To: now, Span: span.String()}
	c.Span = map[time.Duration]string{time.Hour: "hour", 6 * time.Hour: "6 hours", 24 * time.Hour: "24 hours", 7 * 24 * time.Hour: "7 days"}[span]
	bin := span / chartBins
	var restarts, unhealthy [chartBins]int
	for _, ev := range evs {
		if ev.Time.Before(c.From) || ev.Time.After(now) {
			continue
		}
		i := min(int(ev.Time.Sub(c.From)/bin), chartBins-1)
		switch {
		case isUnhealthy(ev):
			unhealthy[i]++
			c.Unhealthy++
		case isRestart(ev):
			restarts[i]++
			c.Restarts++
		}
	}
	c.Max = 1
	for i := range chartBins {
		c.Max = max(c.Max, restarts[i]+unhealthy[i])
	}
	plotW, plotH := chartW-chartLeft-chartRight, c.Bottom-chartTop
	bw := plotW / chartBins
	layout := "15:04"
	if span > 24*time.Hour {
		layout = "Jan 2"
	}
	for i := range chartBins {
		x := chartLeft + float64(i)*bw
		from := c.From.Add(time.Duration(i) * bin)
		title := fmt.Sprintf("%s – %s UTC: %s, %s", from.UTC().Format("Jan 2 15:04"), from.Add(bin).UTC().Format("15:04"),
			plural(restarts[i], "exit or restart", "exits and restarts"), plural(unhealthy[i], "unhealthy", "unhealthy"))
		y := c.Bottom
		for _, part := range []struct {
			n     int
			class string
		}{{restarts[i], "restart"}, {unhealthy[i], "unhealthy"}} {
			if part.n == 0 {
				continue
			}
			h := plotH * float64(part.n) / float64(c.Max)
			y -= h
			c.Bars = append(c.Bars, rect{X: round(x + 1), Y: round(y), W: round(bw - 2), H: round(h), Class: part.class, Title: title})
		}
	}
	for i := 0; i <= 4; i++ {
		t := c.From.Add(span * time.Duration(i) / 4)
		anchor := "middle"
		if i == 4 {
			anchor = "end"
		}
		c.Ticks = append(c.Ticks, tick{X: round(chartLeft + plotW*float64(i)/4), Text: t.UTC().Format(layout), Anchor: anchor})
	}
	return c
}

func round(f float64) float64 { return float64(int(f*10+0.5)) / 10 }

// databaseView is one database server with its reachability over the
// last 24 hours, drawn from its "database up" and "database down" events.
type databaseView struct {
	api.DatabaseStatus
	Strip   []rect
	Changes []state.Event // newest first
	Width   float64
}

const stripW, stripWindow = 480.0, 24 * time.Hour

func newDatabaseView(db api.DatabaseStatus, evs []state.Event, now time.Time) databaseView {
	v := databaseView{DatabaseStatus: db, Width: stripW}
	var changes []state.Event
	for _, ev := range evs {
		if ev.Action == "database up" || ev.Action == "database down" {
			changes = append(changes, ev)
		}
	}
	slices.SortStableFunc(changes, func(a, b state.Event) int { return a.Time.Compare(b.Time) })
	for i := len(changes) - 1; i >= 0 && len(v.Changes) < 6; i-- {
		v.Changes = append(v.Changes, changes[i])
	}
	from := now.Add(-stripWindow)
	// The state at the window's start: the last change before it, or the
	// opposite of the first change in it, or (no change at all) now's.
	up, known := db.Up, true
	first := slices.IndexFunc(changes, func(ev state.Event) bool { return !ev.Time.Before(from) })
	switch {
	case first > 0:
		up = changes[first-1].Action == "database up"
	case first == 0:
		up = changes[0].Action != "database up"
		known = false
	case len(changes) > 0:
		up = changes[len(changes)-1].Action == "database up"
	}
	x := func(t time.Time) float64 { return round(stripW * float64(t.Sub(from)) / float64(stripWindow)) }
	add := func(a, b time.Time, up, known bool) {
		if !b.After(a) {
			return
		}
		class, what := "down", "down"
		switch {
		case !known:
			class, what = "unknown", "not recorded"
		case up:
			class, what = "up", "up"
		}
		v.Strip = append(v.Strip, rect{X: x(a), W: max(x(b)-x(a), 1), Class: class,
			Title: fmt.Sprintf("%s from %s to %s UTC", what, a.UTC().Format("Jan 2 15:04"), b.UTC().Format("Jan 2 15:04"))})
	}
	at := from
	if first >= 0 {
		for _, ev := range changes[first:] {
			add(at, ev.Time, up, known)
			at, up, known = ev.Time, ev.Action == "database up", true
		}
	}
	add(at, now, db.Up, known || first >= 0)
	return v
}

// rolloutView is one rollout's progress.
type rolloutView struct {
	api.RolloutStatus
	Total, Done int
	State       string // "halted", "complete" or "in progress"
	Phase       string // "canary 1 of 1", "wave 2 of 3", ""
	Bar         []rect
}

const barW = 300.0

func newRolloutView(ro api.RolloutStatus) rolloutView {
	v := rolloutView{RolloutStatus: ro, Total: len(ro.Merchants), Done: len(ro.Succeeded) + len(ro.Failed)}
	if v.Total < v.Done {
		v.Total = v.Done
	}
	switch {
	case ro.Halted:
		v.State = "halted"
	case len(ro.Merchants) > 0 && len(ro.Succeeded) >= len(ro.Merchants):
		v.State = "complete"
	default:
		v.State = "in progress"
	}
	switch {
	case v.State == "complete" || v.Total == 0:
	case ro.Canary > 0 && len(ro.Succeeded) < ro.Canary:
		v.Phase = fmt.Sprintf("canary: %d of %d passed", len(ro.Succeeded), ro.Canary)
	case ro.MaxParallel > 0:
		rest := v.Total - ro.Canary
		waves := max(1, (rest+ro.MaxParallel-1)/ro.MaxParallel)
		wave := min(waves, (v.Done-ro.Canary)/ro.MaxParallel+1)
		v.Phase = fmt.Sprintf("wave %d of %d (%d at a time)", wave, waves, ro.MaxParallel)
	case ro.Canary > 0:
		v.Phase = "canary passed"
	}
	if v.Total > 0 {
		x := 0.0
		for _, part := range []struct {
			n     int
			class string
			what  string
		}{{len(ro.Succeeded), "passed", "passed"}, {len(ro.Failed), "failed", "failed"}, {v.Total - v.Done, "pending", "waiting"}} {
			if part.n == 0 {
				continue
			}
			w := round(barW * float64(part.n) / float64(v.Total))
			v.Bar = append(v.Bar, rect{X: x, W: w, Class: part.class, Title: fmt.Sprintf("%d %s", part.n, part.what)})
			x += w
		}
	}
	return v
}
