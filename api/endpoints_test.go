package api

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"steward/state"
)

const specError = `fleet.hcl:12:9: error: Unsupported argument: An argument named "dns" is not expected here.
  12 |   dns = "postgres://app:hunter2@db-east/acme"
     |   ^^^
  Did you mean "dsn"?`

func get(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestReadsWithoutTheTokenCarryNoSpecSnippets(t *testing.T) {
	ts, d := newServer(t, "t0ken", "")
	d.change(func(s *Status) { s.SpecError = specError })
	_, public := get(t, ts.URL+"/v1/status", "")
	if strings.Contains(public, "hunter2") || strings.Contains(public, "Did you mean") {
		t.Errorf("status without the token shows the spec snippet:\n%s", public)
	}
	if !strings.Contains(public, `fleet.hcl:12:9: error: Unsupported argument: An argument named \"dns\" is not expected here."`) {
		t.Errorf("status without the token lost the error's first line:\n%s", public)
	}
	if _, full := get(t, ts.URL+"/v1/status", "t0ken"); !strings.Contains(full, "Did you mean") {
		t.Errorf("status with the token lost the diagnostics:\n%s", full)
	}
	// Without a token configured, every reader is trusted.
	ts2, d2 := newServer(t, "", "")
	d2.change(func(s *Status) { s.SpecError = specError })
	if _, full := get(t, ts2.URL+"/v1/status", ""); !strings.Contains(full, "Did you mean") {
		t.Errorf("status without a configured token lost the diagnostics:\n%s", full)
	}
	// The event stream follows the same rule.
	for _, tc := range []struct {
		token string
		full  bool
	}{{"", false}, {"t0ken", true}} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var got *Status
		NewClient(ts.URL, tc.token).Watch(ctx, "", func(u Update) error {
			got = u.Status
			return errors.New("enough")
		})
		cancel()
		if got == nil {
			t.Fatalf("event stream with token %q: no status", tc.token)
		}
		if strings.Contains(got.SpecError, "hunter2") != tc.full || !strings.HasPrefix(got.SpecError, "fleet.hcl:12:9:") {
			t.Errorf("event stream with token %q: spec_error %q", tc.token, got.SpecError)
		}
	}
}

func TestLogsNeedTheTokenAndHistoryIsOpen(t *testing.T) {
	ts, d := newServer(t, "t0ken", "")
	d.addEvent(state.Event{Time: time.Unix(100, 0), Merchant: "acme", Action: "start", Result: "ok", Version: "1.0.0"})
	d.addEvent(state.Event{Time: time.Unix(200, 0), Merchant: "bolt", Action: "start", Result: "ok"})
	d.addEvent(state.Event{Time: time.Unix(300, 0), Merchant: "acme", Action: "exited", Reason: "process 100 was killed by SIGKILL", Result: "observed"})
	if code, body := get(t, ts.URL+"/v1/merchants/acme/logs", ""); code != http.StatusUnauthorized {
		t.Errorf("logs without the token: %d %s", code, body)
	}
	code, body := get(t, ts.URL+"/v1/merchants/acme/logs?n=2&grep=^(GET|POST)", "t0ken")
	if code != http.StatusOK || body != "GET /health 200\nPOST /invoices 201\n" {
		t.Errorf("logs with the token: %d %q", code, body)
	}
	c := NewClient(ts.URL, "")
	evs, err := c.History(context.Background(), "acme", 10)
	if err != nil || len(evs) != 2 || evs[1].Action != "exited" {
		t.Errorf("history without the token: %v %+v", err, evs)
	}
	evs, err = c.History(context.Background(), "nobody", 10)
	if err != nil || evs == nil || len(evs) != 0 {
		t.Errorf("history of an unknown merchant: %v %#v", err, evs)
	}
	var sb strings.Builder
	err = NewClient(ts.URL, "t0ken").Logs(context.Background(), LogQuery{Merchant: "acme", N: 1}, &sb)
	if err != nil || sb.String() != "POST /invoices 201\n" {
		t.Errorf("client logs: %v %q", err, sb.String())
	}
	if err := NewClient(ts.URL, "t0ken").Logs(context.Background(), LogQuery{Merchant: "nobody", N: 1}, io.Discard); !errors.Is(err, ErrNotFound) {
		t.Errorf("logs of an unknown merchant: %v", err)
	}
	a, err := NewClient(ts.URL, "").Access(context.Background())
	if err != nil || !a.TokenRequired || a.Write {
		t.Errorf("access without the token: %+v %v", a, err)
	}
	a, err = NewClient(ts.URL, "t0ken").Access(context.Background())
	if err != nil || !a.Write {
		t.Errorf("access with the token: %+v %v", a, err)
	}
}

func TestLogFollowStreams(t *testing.T) {
	ts, _ := newServer(t, "", "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- NewClient(ts.URL, "").Logs(ctx, LogQuery{Merchant: "acme", N: 2, Grep: regexp.MustCompile("health|invoices"), Follow: true}, pw)
		pw.Close()
	}()
	br := bufio.NewReader(pr)
	for _, want := range []string{"GET /health 200\n", "POST /invoices 201\n"} {
		if line, err := br.ReadString('\n'); line != want {
			t.Fatalf("followed line %q (%v), want %q", line, err, want)
		}
	}
	cancel()
	go io.Copy(io.Discard, br)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("follow ended with %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("follow did not end with its context")
	}
}

func TestMerchantIDsAreCheckedBeforeAnyLookup(t *testing.T) {
	ts, d := newServer(t, "", "")
	for _, path := range []string{
		"/v1/merchants/ACME/history",
		"/v1/merchants/a_b/logs",
		"/v1/merchants/-acme/history",
		"/v1/merchants/" + strings.Repeat("a", 64) + "/history",
		"/v1/merchants/..%2f..%2fetc/logs",
		"/v1/merchants/acme%00/history",
		"/v1/events?merchant=Acme",
	} {
		if code, body := get(t, ts.URL+path, ""); code != http.StatusBadRequest || !strings.Contains(body, "merchant id is 1 to 63") {
			t.Errorf("GET %s: %d %s", path, code, body)
		}
	}
	for _, verb := range []string{"restart", "suspend", "resume", "rollback"} {
		if code := post(t, ts.URL+"/v1/merchants/Acme/"+verb, nil, nil); code != http.StatusBadRequest {
			t.Errorf("POST %s of a bad id: %d", verb, code)
		}
	}
	if calls := d.calls(); len(calls) != 0 {
		t.Errorf("the daemon was asked %q for bad ids", calls)
	}
	for _, tc := range []struct {
		id string
		ok bool
	}{{"acme", true}, {"a", true}, {"a-1", true}, {"9lives", true}, {strings.Repeat("z", 63), true},
		{"", false}, {"-a", false}, {"A", false}, {"a.b", false}, {"a/b", false}, {"ä", false}, {strings.Repeat("z", 64), false}} {
		if ValidMerchantID(tc.id) != tc.ok {
			t.Errorf("ValidMerchantID(%q) = %v", tc.id, !tc.ok)
		}
	}
}

func TestRollbackThroughTheAPI(t *testing.T) {
	ts, d := newServer(t, "t0ken", "")
	c := NewClient(ts.URL, "t0ken")
	if v, err := c.Rollback(context.Background(), "acme", RollbackRequest{}); err != nil || v != "0.9.0" {
		t.Errorf("rollback to the previous good version: %q %v", v, err)
	}
	if v, err := c.Rollback(context.Background(), "acme", RollbackRequest{To: "0.8.0"}); err != nil || v != "0.8.0" {
		t.Errorf("rollback -to 0.8.0: %q %v", v, err)
	}
	if _, err := c.Rollback(context.Background(), "acme", RollbackRequest{To: "9.9.9"}); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "never run 9.9.9") {
		t.Errorf("refused rollback: %v", err)
	}
	if _, err := c.Rollback(context.Background(), "nobody", RollbackRequest{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("rollback of an unknown merchant: %v", err)
	}
	if _, err := NewClient(ts.URL, "").Rollback(context.Background(), "acme", RollbackRequest{}); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("rollback without the token: %v", err)
	}
	if got := strings.Join(d.calls(), ","); got != "rollback acme ,rollback acme 0.8.0" {
		t.Errorf("daemon calls %q", got)
	}
}

func TestCrossOriginWritesAreRefused(t *testing.T) {
	ts, d := newServer(t, "", "")
	code := post(t, ts.URL+"/v1/merchants/acme/restart", nil, map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"})
	if code != http.StatusForbidden {
		t.Errorf("cross-origin restart: %d", code)
	}
	if code := post(t, ts.URL+"/v1/merchants/acme/restart", nil, map[string]string{"Sec-Fetch-Site": "same-origin"}); code != http.StatusOK {
		t.Errorf("same-origin restart: %d", code)
	}
	if got := d.calls(); len(got) != 1 {
		t.Errorf("daemon calls %q", got)
	}
}

// watch collects the updates of one event stream.
func watch(t *testing.T, base, token, merchant string) <-chan Update {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan Update, 256)
	done := make(chan struct{})
	go func() {
		defer close(done)
		NewClient(base, token).Watch(ctx, merchant, func(u Update) error { ch <- u; return nil })
	}()
	t.Cleanup(func() { cancel(); <-done })
	return ch
}

func TestEventStream(t *testing.T) {
	ts, d := newServer(t, "", "")
	all := watch(t, ts.URL, "", "")
	bolt := watch(t, ts.URL, "", "bolt")
	if u := next(t, all, 2*time.Second); u.Status == nil || u.Status.Merchants[0].State != "running" {
		t.Fatalf("first update: %+v", u)
	}
	if u := next(t, bolt, 2*time.Second); u.Status == nil {
		t.Fatalf("first update of the filtered stream: %+v", u)
	}
	start := time.Now()
	d.change(func(s *Status) { s.Merchants[0].State = "stopped"; s.Merchants[0].PID = 0 })
	u := next(t, all, time.Second)
	if u.Status == nil || u.Status.Merchants[0].State != "stopped" {
		t.Fatalf("after the change: %+v", u)
	}
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Errorf("the change took %s to reach the stream", took)
	}
	d.addEvent(state.Event{Merchant: "acme", Action: "exited", Reason: "process 100 was killed by SIGKILL", Result: "observed"})
	d.addEvent(state.Event{Merchant: "bolt", Action: "restart", Reason: "restart requested", Result: "ok"})
	var acmeSeen, boltSeen bool
	for !acmeSeen || !boltSeen {
		u := next(t, all, time.Second)
		if u.Event != nil {
			acmeSeen = acmeSeen || u.Event.Merchant == "acme" && u.Event.Action == "exited"
			boltSeen = boltSeen || u.Event.Merchant == "bolt"
		}
	}
	for {
		u := next(t, bolt, time.Second)
		if u.Event == nil {
			continue
		}
		if u.Event.Merchant != "bolt" {
			t.Fatalf("the stream for bolt got an event of %s", u.Event.Merchant)
		}
		break
	}

	// A burst of changes is folded: at most one document per 250ms.
	drain := func(ch <-chan Update) {
		for {
			select {
			case <-ch:
			case <-time.After(400 * time.Millisecond):
				return
			}
		}
	}
	drain(all)
	start = time.Now()
	for i := 1; i <= 50; i++ {
		d.change(func(s *Status) { s.Merchants[0].Restarts = i })
		time.Sleep(5 * time.Millisecond)
	}
	var docs []int
	for {
		u := next(t, all, 2*time.Second)
		if u.Status == nil {
			continue
		}
		docs = append(docs, u.Status.Merchants[0].Restarts)
		if u.Status.Merchants[0].Restarts == 50 {
			break
		}
	}
	took := time.Since(start)
	if max := int(took/(250*time.Millisecond)) + 2; len(docs) > max {
		t.Errorf("%d status documents in %s (%v); at most %d", len(docs), took, docs, max)
	}
}

func TestEventStreamKeepAliveAndCap(t *testing.T) {
	d := newFake()
	s := &Server{Daemon: d, Limits: Limits{KeepAlive: 50 * time.Millisecond, MaxStreams: 1}}
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	resp, err := http.Get(ts.URL + "/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	seen := map[string]bool{}
	deadline := time.AfterFunc(3*time.Second, func() { resp.Body.Close() })
	defer deadline.Stop()
	for sc.Scan() && !(seen["event: status"] && seen[": keep-alive"]) {
		seen[sc.Text()] = true
	}
	if !seen["event: status"] || !seen[": keep-alive"] {
		t.Errorf("stream lines seen: %v", seen)
	}
	if code, body := get(t, ts.URL+"/v1/events", ""); code != http.StatusServiceUnavailable || !strings.Contains(body, "too many streams") {
		t.Errorf("a stream over the cap: %d %s", code, body)
	}
}

func TestUnknownAPIPathsAnswerJSON(t *testing.T) {
	ui := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "dashboard") })
	s := &Server{Daemon: newFake(), UI: ui}
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	if code, body := get(t, ts.URL+"/v1/nothing", ""); code != http.StatusNotFound || !strings.Contains(body, `"error"`) {
		t.Errorf("unknown API path: %d %s", code, body)
	}
	if code, body := get(t, ts.URL+"/merchants/acme", ""); code != http.StatusOK || body != "dashboard" {
		t.Errorf("dashboard path: %d %s", code, body)
	}
}

func TestReadEvents(t *testing.T) {
	in := "retry: 2000\n\n: keep-alive\n\nevent: status\ndata: {\"a\":1}\n\ndata: line1\ndata: line2\n\nevent: x\ndata:\n\n"
	var got []string
	readEvents(strings.NewReader(in), func(ev string, data []byte) error {
		got = append(got, ev+"="+string(data))
		return nil
	})
	if want := `status={"a":1}|message=line1` + "\n" + `line2|x=`; strings.Join(got, "|") != want {
		t.Errorf("events %q, want %q", strings.Join(got, "|"), want)
	}
}

// Readers without the token share half of the stream slots: however many
// streams they open, the token's holders still get theirs, and a refused
// stream's connection is closed.
func TestStreamsWithoutTheTokenLeaveSlots(t *testing.T) {
	d := newFake()
	s := &Server{Daemon: d, Token: "t0k", Limits: Limits{KeepAlive: time.Hour, MaxStreams: 4}}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close) // after the streams' bodies are closed (cleanups run last first)
	open := func(token string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, ts.URL+"/v1/events", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	for i := range 2 {
		if r := open(""); r.StatusCode != 200 {
			t.Fatalf("public stream %d: %d", i, r.StatusCode)
		}
	}
	if r := open(""); r.StatusCode != http.StatusServiceUnavailable || !r.Close {
		t.Errorf("a third public stream: %d, connection closed %v", r.StatusCode, r.Close)
	}
	for i := range 2 {
		if r := open("t0k"); r.StatusCode != 200 {
			t.Errorf("stream %d with the token: %d", i, r.StatusCode)
		}
	}
	if r := open("t0k"); r.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a fifth stream: %d", r.StatusCode)
	}
}

// A command's output kept in the history (a migration's) is, like a log,
// for readers with the token: without it history, status and the event
// stream carry the event without its detail.
func TestEventDetailsNeedTheToken(t *testing.T) {
	ts, d := newServer(t, "t0ken", "")
	ev := state.Event{Time: time.Now(), Merchant: "acme", Action: "migrate", Result: "error", Detail: "generated admin password: Zq9-output"}
	d.addEvent(ev)
	d.change(func(s *Status) {
		for i := range s.Merchants {
			if s.Merchants[i].ID == "acme" {
				s.Merchants[i].LastEvent = &ev
			}
		}
	})
	for _, path := range []string{"/v1/merchants/acme/history", "/v1/status"} {
		if _, public := get(t, ts.URL+path, ""); strings.Contains(public, "Zq9-output") || !strings.Contains(public, DetailWithheld) {
			t.Errorf("%s without the token:\n%s", path, public)
		}
		if _, full := get(t, ts.URL+path, "t0ken"); !strings.Contains(full, "Zq9-output") {
			t.Errorf("%s with the token lost the detail:\n%s", path, full)
		}
	}
}
