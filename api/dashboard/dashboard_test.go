package dashboard

import (
	"flag"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"steward/api"
	"steward/state"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// fixedNow is the clock of the rendering tests.
var fixedNow = time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC)

func newTestServer(t *testing.T, f *fakeDaemon) *httptest.Server {
	t.Helper()
	ui := New(f)
	ui.Now = func() time.Time { return f.now }
	ts := httptest.NewServer((&api.Server{Daemon: f, Token: testToken, UI: ui}).Handler())
	t.Cleanup(ts.Close)
	return ts
}

func fetch(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

var assetVersion = regexp.MustCompile(`\?v=[0-9a-f]{12}`)

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	got = assetVersion.ReplaceAllString(got, "?v=HASH")
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to write it)", err)
	}
	if got != string(want) {
		gl, wl := strings.Split(got, "\n"), strings.Split(string(want), "\n")
		for i := range max(len(gl), len(wl)) {
			var g, w string
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if g != w {
				t.Fatalf("%s differs from the rendered page at line %d:\n got: %s\nwant: %s\n(run go test -update if the change is meant)", path, i+1, g, w)
			}
		}
	}
}

func TestPagesRender(t *testing.T) {
	ts := newTestServer(t, newFleet(fixedNow))
	for _, tc := range []struct {
		path, golden string
	}{
		{"/", "fleet.html"},
		{"/?state=running&sort=restarts&desc=1", "fleet-running-by-restarts.html"},
		{"/?q=db-west", "fleet-db-west.html"},
		{"/merchants/cove", "merchant-cove.html"},
		{"/merchants/acme?part=chart", "chart-acme.html"},
		{"/?part=databases", "databases.html"},
	} {
		resp, body := fetch(t, ts.URL+tc.path)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" {
			t.Errorf("GET %s: %d %s", tc.path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		golden(t, tc.golden, body)
	}
}

func TestFleetTableWithoutJavaScript(t *testing.T) {
	ts := newTestServer(t, newFleet(fixedNow))
	_, body := fetch(t, ts.URL+"/")
	rows := regexp.MustCompile(`<tr data-id="([a-z0-9-]+)"`).FindAllStringSubmatch(body, -1)
	var ids []string
	for _, r := range rows {
		ids = append(ids, r[1])
	}
	// Most urgent first, then by id.
	want := []string{"kiln", "cove", "dune", "iris", "jade", "fjord", "acme", "bolt", "ember", "grove", "harbor", "lumen", "maple"}
	if !slices.Equal(ids, want) {
		t.Errorf("fleet rows %q, want %q", ids, want)
	}
	for _, s := range []string{`<th scope="col" data-key="restarts"><a href="/?sort=restarts">Restarts</a></th>`,
		`<a href="/?state=crashloop" class="count s-crashloop" data-state="crashloop">crashloop <b>1</b></a>`,
		`13 of 13 shown`} {
		if !strings.Contains(body, s) {
			t.Errorf("the fleet page lacks %s", s)
		}
	}
	if strings.Contains(body, `data-key="host"`) {
		t.Error("a Host column without hosts in the document")
	}
	f := newFleet(fixedNow)
	f.merchant("acme", func(m *api.MerchantStatus) { m.Host = "web-2" })
	ts2 := newTestServer(t, f)
	if _, body := fetch(t, ts2.URL+"/"); !strings.Contains(body, `data-key="host"`) || !strings.Contains(body, `<td data-label="Host">web-2</td>`) {
		t.Error("no Host column once the document has hosts")
	}
}

func TestRowsOf(t *testing.T) {
	ms := newFleet(fixedNow).doc.Merchants
	ids := func(rows []row) []string {
		var out []string
		for _, r := range rows {
			out = append(out, r.ID)
		}
		return out
	}
	for _, tc := range []struct {
		f    filter
		want []string
	}{
		{filter{State: "running", Sort: "merchant"}, []string{"acme", "bolt", "ember", "grove", "harbor", "lumen", "maple"}},
		{filter{State: "running", Sort: "merchant", Desc: true}, []string{"maple", "lumen", "harbor", "grove", "ember", "bolt", "acme"}},
		{filter{Q: "DB-WEST", Sort: "state"}, []string{"dune", "ember"}},
		{filter{Q: "checksum", Sort: "state"}, []string{"kiln"}},
		{filter{Q: "harbor.example.com", Sort: "state"}, []string{"harbor"}},
		{filter{Q: "env.locale", Sort: "state"}, []string{"acme"}},
		{filter{Sort: "restarts", Desc: true, State: ""}, []string{"cove", "lumen", "bolt", "jade", "acme", "dune", "ember", "fjord", "grove", "harbor", "iris", "kiln", "maple"}},
		{filter{Sort: "version", State: "running"}, []string{"acme", "bolt", "harbor", "ember", "grove", "lumen", "maple"}},
		{filter{Sort: "pid", State: "running"}, []string{"ember", "grove", "maple", "lumen", "acme", "bolt", "harbor"}},
		{filter{Sort: "health", Q: "db-"}, []string{"iris", "cove", "jade", "kiln", "acme", "bolt", "dune", "ember", "fjord", "grove", "harbor", "lumen", "maple"}},
		{filter{Sort: "event", State: "running", Desc: true}, []string{"harbor", "acme", "maple", "grove", "ember", "lumen", "bolt"}},
		{filter{Sort: "port", State: "held"}, []string{"dune"}},
		{filter{State: "failed", Q: "nothing like this"}, nil},
	} {
		if got := ids(rowsOf(ms, tc.f)); !slices.Equal(got, tc.want) {
			t.Errorf("rowsOf(%+v) = %q, want %q", tc.f, got, tc.want)
		}
	}
}

func TestCompareVersions(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{{"1.9.2", "1.10.0", -1}, {"1.10.0", "1.9.2", 1}, {"1.4.2", "1.4.2", 0}, {"1.4", "1.4.1", -1}, {"", "1.0", -1}, {"2.0.0-rc1", "2.0.0-rc2", -1}} {
		if got := compareVersions(tc.a, tc.b); got != tc.want {
			t.Errorf("compareVersions(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestFilterFromQueryIsBounded(t *testing.T) {
	for _, tc := range []struct {
		q    string
		want filter
	}{
		{"", filter{Sort: "state"}},
		{"state=held&q=+acme+&sort=pid&desc=1", filter{State: "held", Q: "acme", Sort: "pid", Desc: true}},
		{"state=<script>&sort=../../etc&desc=yes", filter{Sort: "state"}},
		{"q=" + strings.Repeat("x", 500), filter{Q: strings.Repeat("x", 200), Sort: "state"}},
	} {
		r := httptest.NewRequest(http.MethodGet, "/?"+tc.q, nil)
		if got := filterOf(r); got != tc.want {
			t.Errorf("filterOf(%q) = %+v, want %+v", tc.q, got, tc.want)
		}
	}
	f := filter{State: "held", Q: "a&b", Sort: "pid"}
	for _, tc := range []struct{ key, value, want string }{
		{"sort", "pid", "/?desc=1&q=a%26b&sort=pid&state=held"},
		{"sort", "restarts", "/?q=a%26b&sort=restarts&state=held"},
		{"state", "", "/?q=a%26b&sort=pid"},
	} {
		if got := query(f, tc.key, tc.value); got != tc.want {
			t.Errorf("query(%s=%s) = %s, want %s", tc.key, tc.value, got, tc.want)
		}
	}
}

func TestMerchantChart(t *testing.T) {
	ev := func(ago time.Duration, action, reason string) state.Event {
		return state.Event{Time: fixedNow.Add(-ago), Merchant: "m", Action: action, Reason: reason}
	}
	for _, tc := range []struct {
		name                string
		evs                 []state.Event
		span                string
		restarts, unhealthy int
		max                 int
	}{
		{"empty", nil, "hour", 0, 0, 1},
		{"recent", []state.Event{ev(10*time.Minute, "exited", "process 1 exited"), ev(9*time.Minute, "start", "x"), ev(5*time.Minute, "restart", "health: GET /health answered 500, 3 times in a row")}, "hour", 1, 1, 1},
		{"same bin", []state.Event{ev(30*time.Second, "exited", ""), ev(20*time.Second, "exited", ""), ev(10*time.Second, "restart", "restart requested")}, "hour", 3, 0, 3},
		{"a day", []state.Event{ev(20*time.Hour, "unhealthy", "GET /health: timeout"), ev(time.Hour, "exited", "")}, "24 hours", 1, 1, 1},
		{"old events fall out", []state.Event{ev(30*24*time.Hour, "exited", ""), ev(time.Hour, "exited", "")}, "7 days", 1, 0, 1},
	} {
		c := merchantChart(tc.evs, fixedNow)
		if c.Span != tc.span || c.Restarts != tc.restarts || c.Unhealthy != tc.unhealthy || c.Max != tc.max {
			t.Errorf("%s: span %q restarts %d unhealthy %d max %d; want %q %d %d %d", tc.name, c.Span, c.Restarts, c.Unhealthy, c.Max, tc.span, tc.restarts, tc.unhealthy, tc.max)
		}
		for _, b := range c.Bars {
			if b.X < chartLeft || b.X+b.W > chartW || b.Y < chartTop-0.1 || b.Y+b.H > c.Bottom+0.1 || b.H <= 0 {
				t.Errorf("%s: bar %+v outside the plot", tc.name, b)
			}
		}
	}
}

func TestDatabaseStrip(t *testing.T) {
	ev := func(ago time.Duration, up bool) state.Event {
		return state.Event{Time: fixedNow.Add(-ago), Action: map[bool]string{true: "database up", false: "database down"}[up]}
	}
	classes := func(v databaseView) string {
		var out []string
		for _, r := range v.Strip {
			out = append(out, r.Class)
		}
		return strings.Join(out, ",")
	}
	for _, tc := range []struct {
		name string
		up   bool
		evs  []state.Event
		want string
	}{
		{"never changed", true, nil, "up"},
		{"down, never changed", false, nil, "down"},
		{"first seen in the window", true, []state.Event{ev(2*time.Hour, true)}, "unknown,up"},
		{"a cut in the window", true, []state.Event{ev(30*time.Hour, true), ev(3*time.Hour, false), ev(2*time.Hour, true)}, "up,down,up"},
		{"down now", false, []state.Event{ev(30*time.Hour, true), ev(time.Hour, false)}, "up,down"},
		{"changes before the window only", false, []state.Event{ev(40*time.Hour, true), ev(30*time.Hour, false)}, "down"},
	} {
		v := newDatabaseView(api.DatabaseStatus{Name: "db", Up: tc.up}, tc.evs, fixedNow)
		if got := classes(v); got != tc.want {
			t.Errorf("%s: strip %s, want %s", tc.name, got, tc.want)
		}
		end := 0.0
		for _, r := range v.Strip {
			end = max(end, r.X+r.W)
		}
		if end < stripW-1 || end > stripW+1 {
			t.Errorf("%s: the strip ends at %v of %v", tc.name, end, stripW)
		}
	}
}

func TestRolloutPhases(t *testing.T) {
	ms := []string{"a", "b", "c", "d", "e", "f"}
	for _, tc := range []struct {
		name  string
		ro    api.RolloutStatus
		state string
		phase string
	}{
		{"canary waiting", api.RolloutStatus{Merchants: ms, Canary: 1, MaxParallel: 2}, "in progress", "canary: 0 of 1 passed"},
		{"canary failed", api.RolloutStatus{Merchants: ms, Canary: 1, MaxParallel: 2, Failed: []string{"a"}, Halted: true, Reason: "gate"}, "halted", "canary: 0 of 1 passed"},
		{"first wave", api.RolloutStatus{Merchants: ms, Canary: 1, MaxParallel: 2, Succeeded: []string{"a"}}, "in progress", "wave 1 of 3 (2 at a time)"},
		{"second wave", api.RolloutStatus{Merchants: ms, Canary: 1, MaxParallel: 2, Succeeded: []string{"a", "b", "c"}}, "in progress", "wave 2 of 3 (2 at a time)"},
		{"last wave", api.RolloutStatus{Merchants: ms, Canary: 1, MaxParallel: 2, Succeeded: []string{"a", "b", "c", "d", "e"}}, "in progress", "wave 3 of 3 (2 at a time)"},
		{"complete", api.RolloutStatus{Merchants: ms, Canary: 1, MaxParallel: 2, Succeeded: ms}, "complete", ""},
		{"no detail", api.RolloutStatus{Succeeded: []string{"a"}}, "in progress", ""},
	} {
		v := newRolloutView(tc.ro)
		if v.State != tc.state || v.Phase != tc.phase {
			t.Errorf("%s: %q %q, want %q %q", tc.name, v.State, v.Phase, tc.state, tc.phase)
		}
		w := 0.0
		for _, r := range v.Bar {
			w += r.W
		}
		if len(v.Bar) > 0 && (w < barW-1 || w > barW+1) {
			t.Errorf("%s: progress bar %v wide", tc.name, w)
		}
	}
}

func TestPagesEscapeAndHideSecrets(t *testing.T) {
	f := newFleet(fixedNow)
	f.merchant("acme", func(m *api.MerchantStatus) {
		m.LastError = `<script>alert("x")</script>`
		m.LastEvent = &state.Event{Time: fixedNow, Action: "restart", Reason: `<img src=x onerror=alert(1)>`}
	})
	f.change(func(s *api.Status) {
		s.SpecError = "fleet.hcl:3:9: error: Unsupported argument\n  3 |   dns = \"postgres://app:hunter2@db/acme\"\n  Did you mean \"dsn\"?"
	})
	ts := newTestServer(t, f)
	for _, path := range []string{"/", "/merchants/acme"} {
		_, body := fetch(t, ts.URL+path)
		for _, bad := range []string{"<script>alert", "<img src=x", "hunter2", "Did you mean"} {
			if strings.Contains(body, bad) {
				t.Errorf("GET %s shows %q", path, bad)
			}
		}
		if !strings.Contains(body, "fleet.hcl:3:9: error: Unsupported argument") {
			t.Errorf("GET %s lost the spec error's first line", path)
		}
	}
}

func TestPageErrorsAndHeaders(t *testing.T) {
	f := newFleet(fixedNow)
	ts := newTestServer(t, f)
	for _, tc := range []struct {
		path string
		code int
		want string
	}{
		{"/merchants/ACME", 400, "Bad merchant id"},
		{"/merchants/a_b", 400, "Bad merchant id"},
		{"/merchants/nobody", 404, "No merchant nobody"},
		{"/nothing/here", 404, "Not found"},
		{"/assets/nothing.js", 404, ""},
		{"/assets/app.js", 200, "use strict"},
	} {
		resp, body := fetch(t, ts.URL+tc.path)
		if resp.StatusCode != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("GET %s: %d, want %d with %q", tc.path, resp.StatusCode, tc.code, tc.want)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "connect-src 'self'") {
			t.Errorf("GET %s: Content-Security-Policy %q", tc.path, csp)
		}
	}
	for _, c := range f.called() {
		if strings.Contains(c, "ACME") || strings.Contains(c, "a_b") {
			t.Errorf("a bad id reached the daemon: %s", c)
		}
	}
	ui := New(f)
	resp, _ := fetch(t, ts.URL+ui.assetURL("app.css"))
	if cc := resp.Header.Get("Cache-Control"); !strings.Contains(cc, "immutable") {
		t.Errorf("a versioned asset is served with Cache-Control %q", cc)
	}
	resp, _ = fetch(t, ts.URL+"/assets/app.css")
	if cc := resp.Header.Get("Cache-Control"); cc != "no-cache" {
		t.Errorf("an unversioned asset is served with Cache-Control %q", cc)
	}
}

// The dashboard loads nothing from the network: no URL in its files
// names another host.
func TestNothingFromTheNetwork(t *testing.T) {
	url := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	fs.WalkDir(files, ".", func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, _ := fs.ReadFile(files, p)
		for _, m := range url.FindAllString(string(b), -1) {
			if m != "http://www.w3.org" && m != "//www.w3.org" {
				t.Errorf("%s refers to %s", p, m)
			}
		}
		if strings.Contains(string(b), "@import") || strings.Contains(string(b), "@font-face") {
			t.Errorf("%s imports styles or fonts", p)
		}
		return nil
	})
}

func TestAgo(t *testing.T) {
	now := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		at   time.Duration // from now
		want string
	}{
		{900 * time.Millisecond, "in 1s"}, // a retry due within the second is not "in 0s"
		{time.Second, "in 1s"},
		{1500 * time.Millisecond, "in 2s"},
		{90 * time.Second, "in 1m"},
		{0, "just now"},
		{-4 * time.Second, "just now"},
		{-5 * time.Second, "5s ago"},
		{-61 * time.Minute, "1h ago"},
		{-72 * time.Hour, "3d ago"},
	} {
		if got := ago(now, now.Add(tc.at)); got != tc.want {
			t.Errorf("ago(%s from now) = %q, want %q", tc.at, got, tc.want)
		}
	}
}
