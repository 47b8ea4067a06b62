package dashboard

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"steward/api"
	"steward/state"
)

// Source is what the dashboard reads: the daemon, through the same
// methods as the API.
type Source interface {
	Status(ctx context.Context) (api.Status, error)
	History(ctx context.Context, q api.HistoryQuery) ([]state.Event, error)
}

//go:embed assets templates
var files embed.FS

// states are the merchant states, most urgent first: the fleet table's
// default order.
var states = []string{"failed", "crashloop", "held", "starting", "stopped", "suspended", "running"}

// Dashboard serves the dashboard's pages and assets.
type Dashboard struct {
	src Source
	// Now is the clock; tests set it.
	Now func() time.Time
	Log *slog.Logger

	tmpl    *template.Template
	assets  fs.FS
	version map[string]string // asset name → content hash
	mux     *http.ServeMux
}

// Page bounds.
const (
	merchantHistory = 200 // events read for a merchant page
	databaseHistory = 100 // events read per database
)

// New returns the dashboard over src.
func New(src Source) *Dashboard {
	d := &Dashboard{src: src, Now: time.Now, Log: slog.New(slog.DiscardHandler), version: map[string]string{}}
	d.assets, _ = fs.Sub(files, "assets")
	fs.WalkDir(d.assets, ".", func(p string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			b, _ := fs.ReadFile(d.assets, p)
			sum := sha256.Sum256(b)
			d.version[p] = hex.EncodeToString(sum[:6])
		}
		return nil
	})
	d.tmpl = template.Must(template.New("").Funcs(template.FuncMap{
		"asset":    d.assetURL,
		"ago":      func(t time.Time) string { return ago(d.Now(), t) },
		"stamp":    stamp,
		"iso":      func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
		"short":    shortRev,
		"deref":    func(t *time.Time) time.Time { return *t },
		"query":    query,
		"join":     strings.Join,
		"plural":   plural,
		"inc":      func(i int) int { return i + 1 },
		"eventCls": eventClass,
	}).ParseFS(files, "templates/*.html"))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", d.fleet)
	mux.HandleFunc("GET /merchants/{id}", d.merchant)
	mux.HandleFunc("GET /assets/{name}", d.asset)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		d.errorPage(w, http.StatusNotFound, "Not found", "There is no page at "+r.URL.Path+".")
	})
	d.mux = mux
	return d
}

// ServeHTTP serves the pages, each with a policy that lets them load
// nothing but this server's own scripts, styles and API.
func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
	d.mux.ServeHTTP(w, r)
}

func (d *Dashboard) assetURL(name string) string {
	return "/assets/" + name + "?v=" + d.version[name]
}

func (d *Dashboard) asset(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if _, ok := d.version[name]; !ok {
		http.NotFound(w, r)
		return
	}
	if r.URL.Query().Get("v") == d.version[name] {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		w.Header().Set("Cache-Control", "no-cache")
	}
	http.ServeFileFS(w, r, d.assets, name)
}

func (d *Dashboard) render(w http.ResponseWriter, code int, name string, v any) {
	var b bytes.Buffer
	if err := d.tmpl.ExecuteTemplate(&b, name, v); err != nil {
		d.Log.Error("rendering the dashboard failed", "page", name, "err", err)
		http.Error(w, "rendering the page failed; see the daemon's log", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write(b.Bytes())
}

type errorView struct {
	Title, Message string
}

func (d *Dashboard) errorPage(w http.ResponseWriter, code int, title, msg string) {
	d.render(w, code, "error.html", errorView{Title: title, Message: msg})
}

// filter is the fleet table's filter and order, from the page's query:
// ?state=S&q=TEXT&sort=COLUMN&desc=1.
type filter struct {
	State string
	Q     string
	Sort  string
	Desc  bool
}

// Columns the fleet table sorts by.
var sortColumns = []string{"merchant", "host", "state", "pid", "version", "health", "database", "port", "restarts", "event"}

func filterOf(r *http.Request) filter {
	q := r.URL.Query()
	f := filter{State: q.Get("state"), Q: strings.TrimSpace(q.Get("q")), Sort: q.Get("sort"), Desc: q.Get("desc") == "1"}
	if !slices.Contains(states, f.State) {
		f.State = ""
	}
	if !slices.Contains(sortColumns, f.Sort) {
		f.Sort = "state"
	}
	if len(f.Q) > 200 {
		f.Q = f.Q[:200]
	}
	return f
}

// query is the fleet page URL for f with one field changed.
func query(f filter, key, value string) string {
	switch key {
	case "state":
		f.State = value
	case "sort":
		if f.Sort == value {
			f.Desc = !f.Desc
		} else {
			f.Sort, f.Desc = value, false
		}
	}
	v := url.Values{}
	if f.State != "" {
		v.Set("state", f.State)
	}
	if f.Q != "" {
		v.Set("q", f.Q)
	}
	if f.Sort != "state" || f.Desc {
		v.Set("sort", f.Sort)
	}
	if f.Desc {
		v.Set("desc", "1")
	}
	if len(v) == 0 {
		return "/"
	}
	return "/?" + v.Encode()
}

// row is one merchant of the fleet table.
type row struct {
	api.MerchantStatus
	// Drift: the merchant does not run the version it should.
	Drift bool
}

// stateCount is one state's number of merchants.
type stateCount struct {
	State string
	N     int
}

type column struct {
	Key, Label string
	Sort       string // "ascending", "descending" or ""
	Href       string
}

type fleetView struct {
	Doc       api.Status
	Rows      []row
	Total     int
	Counts    []stateCount
	Filter    filter
	Columns   []column
	HasHosts  bool
	Databases []databaseView
	Rollouts  []rolloutView
	States    []string
	Now       time.Time
}

func (d *Dashboard) fleet(w http.ResponseWriter, r *http.Request) {
	doc, err := d.src.Status(r.Context())
	if err != nil {
		d.errorPage(w, http.StatusServiceUnavailable, "Status unavailable", "The daemon could not build its status: "+err.Error())
		return
	}
	doc = doc.Public()
	now := d.Now()
	f := filterOf(r)
	// ?part=databases: the databases section alone, for the page's
	// script to refresh it when one goes up or down.
	v := fleetView{Doc: doc, Total: len(doc.Merchants), Filter: f, States: states, Now: now}
	counts := map[string]int{}
	for _, m := range doc.Merchants {
		counts[m.State]++
		v.HasHosts = v.HasHosts || m.Host != ""
	}
	for _, s := range states {
		if counts[s] > 0 {
			v.Counts = append(v.Counts, stateCount{s, counts[s]})
		}
	}
	v.Rows = rowsOf(doc.Merchants, f)
	for _, c := range []column{{"merchant", "Merchant", "", ""}, {"host", "Host", "", ""}, {"state", "State", "", ""}, {"pid", "PID", "", ""},
		{"version", "Version", "", ""}, {"health", "Health", "", ""}, {"database", "Database", "", ""}, {"port", "Port / route", "", ""},
		{"restarts", "Restarts", "", ""}, {"event", "Last event", "", ""}} {
		if c.Key == "host" && !v.HasHosts {
			continue
		}
		if c.Key == f.Sort {
			c.Sort = map[bool]string{false: "ascending", true: "descending"}[f.Desc]
		}
		c.Href = query(f, "sort", c.Key)
		v.Columns = append(v.Columns, c)
	}
	for _, db := range doc.Databases {
		evs, err := d.src.History(r.Context(), api.HistoryQuery{Database: db.Name, N: databaseHistory})
		if err != nil {
			d.Log.Warn("dashboard: reading a database's history failed", "database", db.Name, "err", err)
		}
		v.Databases = append(v.Databases, newDatabaseView(db, evs, now))
	}
	if r.URL.Query().Get("part") == "databases" {
		d.render(w, http.StatusOK, "databases", v)
		return
	}
	for _, ro := range doc.Rollouts {
		v.Rollouts = append(v.Rollouts, newRolloutView(ro))
	}
	d.render(w, http.StatusOK, "fleet.html", v)
}

// rowsOf filters and orders merchants as the fleet table shows them; the
// page's script does the same in the browser.
func rowsOf(ms []api.MerchantStatus, f filter) []row {
	q := strings.ToLower(f.Q)
	var rows []row
	for _, m := range ms {
		if f.State != "" && m.State != f.State {
			continue
		}
		if q != "" && !strings.Contains(strings.ToLower(searchText(m)), q) {
			continue
		}
		rows = append(rows, row{MerchantStatus: m, Drift: m.DesiredVersion != "" && m.Version != m.DesiredVersion})
	}
	slices.SortStableFunc(rows, func(a, b row) int {
		c := compareBy(f.Sort, a.MerchantStatus, b.MerchantStatus)
		if f.Desc {
			c = -c
		}
		return cmp.Or(c, cmp.Compare(a.ID, b.ID))
	})
	return rows
}

// searchText is what the text filter looks in.
func searchText(m api.MerchantStatus) string {
	parts := []string{m.ID, m.Host, m.State, m.Version, m.DesiredVersion, m.Database, fmt.Sprint(m.Port), m.LastError}
	parts = append(parts, m.Domains...)
	if m.LastEvent != nil {
		parts = append(parts, m.LastEvent.Action, m.LastEvent.Reason)
	}
	return strings.Join(parts, " ")
}

func stateRank(s string) int {
	if i := slices.Index(states, s); i >= 0 {
		return i
	}
	return 3
}

func compareBy(col string, a, b api.MerchantStatus) int {
	switch col {
	case "host":
		return cmp.Compare(a.Host, b.Host)
	case "state":
		return cmp.Compare(stateRank(a.State), stateRank(b.State))
	case "pid":
		return cmp.Compare(a.PID, b.PID)
	case "version":
		return compareVersions(a.Version, b.Version)
	case "health":
		return cmp.Compare(healthRank(a), healthRank(b))
	case "database":
		return cmp.Compare(a.Database, b.Database)
	case "port":
		return cmp.Compare(a.Port, b.Port)
	case "restarts":
		return cmp.Compare(a.Restarts, b.Restarts)
	case "event":
		return cmp.Compare(eventTime(a), eventTime(b))
	}
	return cmp.Compare(a.ID, b.ID)
}

// healthRank orders unhealthy running merchants first.
func healthRank(m api.MerchantStatus) int {
	switch {
	case m.PID != 0 && !m.Healthy:
		return 0
	case m.PID == 0:
		return 1
	}
	return 2
}

func eventTime(m api.MerchantStatus) int64 {
	if m.LastEvent == nil {
		return 0
	}
	return m.LastEvent.Time.UnixNano()
}

// compareVersions orders dotted versions numerically where they are
// numbers ("1.10.0" after "1.9.2"), as text elsewhere.
func compareVersions(a, b string) int {
	as, bs := strings.FieldsFunc(a, versionSep), strings.FieldsFunc(b, versionSep)
	for i := 0; i < len(as) && i < len(bs); i++ {
		var x, y int
		_, ex := fmt.Sscanf(as[i], "%d", &x)
		_, ey := fmt.Sscanf(bs[i], "%d", &y)
		if ex == nil && ey == nil && x != y {
			return cmp.Compare(x, y)
		}
		if c := strings.Compare(as[i], bs[i]); c != 0 && (ex != nil || ey != nil) {
			return c
		}
	}
	return cmp.Compare(len(as), len(bs))
}

func versionSep(r rune) bool { return r == '.' || r == '-' || r == '+' }

type merchantView struct {
	M        api.MerchantStatus
	Drift    bool
	Events   []state.Event // newest first
	Chart    chart
	Rollout  *rolloutView
	SpecErr  string
	Revision string
	Now      time.Time
}

func (d *Dashboard) merchant(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !api.ValidMerchantID(id) {
		d.errorPage(w, http.StatusBadRequest, "Bad merchant id", "A merchant id is 1 to 63 lower-case letters, digits and '-', not starting with '-'.")
		return
	}
	doc, err := d.src.Status(r.Context())
	if err != nil {
		d.errorPage(w, http.StatusServiceUnavailable, "Status unavailable", "The daemon could not build its status: "+err.Error())
		return
	}
	doc = doc.Public()
	i := slices.IndexFunc(doc.Merchants, func(m api.MerchantStatus) bool { return m.ID == id })
	if i < 0 {
		d.errorPage(w, http.StatusNotFound, "No merchant "+id, "steward knows no merchant "+id+": it is neither in the specs nor in the state.")
		return
	}
	// ?part=chart: the chart alone, for the page's script to refresh it.
	evs, err := d.src.History(r.Context(), api.HistoryQuery{Merchant: id, N: merchantHistory})
	if err != nil {
		d.Log.Warn("dashboard: reading a merchant's history failed", "merchant", id, "err", err)
	}
	now := d.Now()
	m := doc.Merchants[i]
	v := merchantView{M: m, Drift: m.DesiredVersion != "" && m.Version != m.DesiredVersion, Chart: merchantChart(evs, now), SpecErr: doc.SpecError, Revision: doc.Revision, Now: now}
	if r.URL.Query().Get("part") == "chart" {
		d.render(w, http.StatusOK, "chart", v.Chart)
		return
	}
	for j := len(evs) - 1; j >= 0; j-- {
		v.Events = append(v.Events, evs[j])
	}
	for _, ro := range doc.Rollouts {
		if slices.Contains(ro.Merchants, id) || slices.Contains(ro.Succeeded, id) || slices.Contains(ro.Failed, id) {
			rv := newRolloutView(ro)
			v.Rollout = &rv
			break
		}
	}
	d.render(w, http.StatusOK, "merchant.html", v)
}

// eventClass sorts an event for the timeline's colours: "bad" (an error
// or an exit), "warn" (unhealthy, held, rollback) or "".
func eventClass(ev state.Event) string {
	switch {
	case ev.Result == "error" || ev.Error != "" || ev.Action == "exited" || ev.Action == "database down":
		return "bad"
	case isUnhealthy(ev) || ev.Action == "hold" || ev.Action == "rollback" || ev.Result == "skipped":
		return "warn"
	case ev.Action == "database up":
		return "good"
	}
	return ""
}

func stamp(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") }

// ago says how long before now t was, in the largest whole unit.
func ago(now, t time.Time) string {
	d := now.Sub(t)
	switch {
	case d < 0:
		return "in " + span((-d + time.Second - 1).Truncate(time.Second)) // never "in 0s"
	case d < 5*time.Second:
		return "just now"
	}
	return span(d) + " ago"
}

func span(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func shortRev(r string) string {
	r = strings.TrimPrefix(r, "sha256:")
	if len(r) > 12 {
		return r[:12]
	}
	return r
}

func plural(n int, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}
