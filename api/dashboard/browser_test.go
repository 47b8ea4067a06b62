package dashboard

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"steward/api"
	"steward/internal/browsertest"
	"steward/state"
)

func stateEvent(merchant, action, reason string) state.Event {
	return state.Event{Time: time.Now(), Merchant: merchant, Action: action, Reason: reason, Result: "ok"}
}

const testToken = "s3cret-write-token"

// serveFleet serves the API and the dashboard over f on a loopback port.
func serveFleet(t *testing.T, f *fakeDaemon) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ui := New(f)
	ui.Now = func() time.Time { return f.now }
	s := &api.Server{Daemon: f, Token: testToken, UI: ui, Log: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

func browser(t *testing.T) context.Context { return browsertest.Start(t) }

func do(t *testing.T, ctx context.Context, what string, d time.Duration, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	browsertest.Do(t, ctx, what, d, steps...)
}

func eval[T any](t *testing.T, ctx context.Context, expr string, opts ...chromedp.EvaluateOption) T {
	t.Helper()
	return browsertest.Eval[T](t, ctx, expr, opts...)
}

func poll(expr string, d time.Duration) chromedp.Action[chromedp.Void] {
	return browsertest.Poll(expr, d)
}

func col(ctx context.Context, t *testing.T, label string) []string {
	t.Helper()
	return browsertest.Column(t, ctx, label)
}

func TestDashboardInChromium(t *testing.T) {
	start := time.Now()
	f := newFleet(time.Now())
	base := serveFleet(t, f)
	ctx := browser(t)

	// The fleet: every merchant, live.
	do(t, ctx, "loading the fleet page", 10*time.Second,
		chromedp.Navigate(base+"/"),
		poll(`document.querySelector('#live.on') !== null && document.querySelectorAll('#fleet-rows tr').length === 13`, 5*time.Second),
		chromedp.Evaluate[chromedp.Void](`window.stayed = true`),
	)
	ids := col(ctx, t, "Merchant")
	if len(ids) != 13 || !slices.Contains(ids, "acme") || !slices.Contains(ids, "cove") {
		t.Fatalf("fleet table shows %q", ids)
	}
	if states := col(ctx, t, "State"); !strings.HasPrefix(states[0], "failed") || !strings.HasPrefix(states[1], "crashloop") {
		t.Errorf("default order is not most urgent first: %q", states)
	}

	// A merchant stops and comes back: the page follows without a reload,
	// each time within a second.
	for _, step := range []struct {
		state string
		pid   int
	}{{"stopped", 0}, {"running", 51234}} {
		f.merchant("acme", func(m *api.MerchantStatus) { m.State, m.PID = step.state, step.pid })
		began := time.Now()
		do(t, ctx, "waiting for acme to show "+step.state, 2*time.Second, poll(fmt.Sprintf(
			`(r => r && r.querySelector('[data-label=State]').textContent.trim() === %q && r.querySelector('[data-label=PID]').textContent.trim() === %q)(document.querySelector('#fleet-rows tr[data-id=acme]'))`,
			step.state, map[bool]string{true: "—", false: fmt.Sprint(step.pid)}[step.pid == 0]), 2*time.Second))
		if took := time.Since(began); took > time.Second {
			t.Errorf("acme %s showed after %s; want within a second", step.state, took)
		}
	}
	if !eval[bool](t, ctx, `window.stayed === true`) {
		t.Error("the page reloaded to show the change")
	}

	// Filter by state (the count at the top), then by text.
	do(t, ctx, "filtering by state", 3*time.Second,
		chromedp.Click(chromedp.CSS(`#counts a[data-state="held"]`)),
		poll(`document.querySelectorAll('#fleet-rows tr').length === 1`, time.Second))
	if ids := col(ctx, t, "Merchant"); !slices.Equal(ids, []string{"dune"}) {
		t.Errorf("held merchants: %q", ids)
	}
	do(t, ctx, "filtering by text", 3*time.Second,
		chromedp.Click(chromedp.CSS(`#counts a[data-state=""]`)),
		chromedp.SendKeys(chromedp.CSS(`#f-q`), "db-west"),
		poll(`document.querySelectorAll('#fleet-rows tr').length === 2`, time.Second))
	if ids := col(ctx, t, "Merchant"); !slices.Equal(ids, []string{"dune", "ember"}) {
		t.Errorf("merchants on db-west: %q", ids)
	}
	if url := eval[string](t, ctx, `location.href`); !strings.HasSuffix(url, "/?q=db-west") {
		t.Errorf("the filter is not in the URL: %s", url)
	}
	do(t, ctx, "clearing the filter", 3*time.Second,
		chromedp.Evaluate[chromedp.Void](`(q => { q.value = ''; q.dispatchEvent(new Event('input')) })(document.querySelector('#f-q'))`),
		poll(`document.querySelectorAll('#fleet-rows tr').length === 13`, time.Second))

	// Sort by restarts, then the other way.
	for _, desc := range []bool{false, true} {
		do(t, ctx, "sorting by restarts", 3*time.Second,
			chromedp.Click(chromedp.CSS(`th[data-key=restarts] a`)),
			poll(fmt.Sprintf(`document.querySelector('th[data-key=restarts]').getAttribute('aria-sort') === %q`, map[bool]string{false: "ascending", true: "descending"}[desc]), time.Second))
		got := col(ctx, t, "Restarts")
		want := slices.Clone(got)
		slices.SortStableFunc(want, func(a, b string) int {
			var x, y int
			fmt.Sscan(a, &x)
			fmt.Sscan(b, &y)
			if desc {
				return y - x
			}
			return x - y
		})
		if !slices.Equal(got, want) || len(got) != 13 {
			t.Errorf("restarts sorted (desc %v): %q", desc, got)
		}
	}
	if ids := col(ctx, t, "Merchant"); ids[0] != "cove" {
		t.Errorf("most restarts first: %q", ids)
	}

	// A narrow screen: no sideways scrolling.
	do(t, ctx, "narrow screen", 5*time.Second, chromedp.EmulateViewport(390, 800),
		poll(`window.innerWidth === 390`, time.Second))
	overflow := eval[bool](t, ctx, `document.documentElement.scrollWidth > window.innerWidth + 1`)
	do(t, ctx, "wide screen", 5*time.Second, chromedp.EmulateViewport(1360, 900))
	if overflow {
		t.Error("the fleet page scrolls sideways on a 390px screen")
	}

	// The merchant page without the token: read-only, and the server
	// refuses the action.
	do(t, ctx, "merchant page without the token", 10*time.Second,
		chromedp.Navigate(base+"/merchants/acme"),
		poll(`document.querySelector('#access').textContent === 'read-only' && document.querySelector('#live.on') !== null`, 5*time.Second))
	readonly := eval[bool](t, ctx, `!document.querySelector('#readonly').hidden && getComputedStyle(document.querySelector('#readonly')).display !== 'none'`)
	restartDisabled := eval[bool](t, ctx, `document.querySelector('button[data-action=restart]').disabled`)
	refused := eval[int](t, ctx, `fetch('/v1/merchants/acme/restart', {method: 'POST'}).then(r => r.status)`, chromedp.EvalAwaitPromise)
	if !readonly || !restartDisabled {
		t.Errorf("without the token: read-only note shown %v, restart disabled %v", readonly, restartDisabled)
	}
	if refused != 401 {
		t.Errorf("a restart without the token answered %d, want 401", refused)
	}
	if calls := f.called(); len(calls) != 0 {
		t.Fatalf("the daemon was asked %q without the token", calls)
	}

	// With the token: restart (click, then confirm) reaches the daemon.
	do(t, ctx, "restart with the token", 10*time.Second,
		chromedp.SendKeys(chromedp.CSS(`#token-input`), testToken),
		chromedp.Click(chromedp.CSS(`#token-use`)),
		poll(`document.querySelector('#access').classList.contains('write') && !document.querySelector('button[data-action=restart]').disabled`, 3*time.Second),
		chromedp.Click(chromedp.CSS(`button[data-action=restart]`)),
		poll(`document.querySelector('button[data-action=restart]').textContent.startsWith('Confirm')`, time.Second),
		chromedp.Click(chromedp.CSS(`button[data-action=restart]`)),
		poll(`document.querySelector('#action-result').textContent.includes('restart done')`, 3*time.Second),
	)
	if calls := f.called(); !slices.Equal(calls, []string{"restart acme"}) {
		t.Errorf("daemon calls after the click: %q", calls)
	}
	// Suspend and resume are offered only where they change something,
	// and follow the merchant's state.
	if !eval[bool](t, ctx, `!document.querySelector('button[data-action=suspend]').disabled && document.querySelector('button[data-action=resume]').disabled`) {
		t.Error("a running merchant does not offer suspend alone")
	}
	f.merchant("acme", func(m *api.MerchantStatus) { m.State = "suspended" })
	do(t, ctx, "suspended acme offers resume", 3*time.Second,
		poll(`!document.querySelector('button[data-action=resume]').disabled && document.querySelector('button[data-action=suspend]').disabled`, 2*time.Second))
	f.merchant("acme", func(m *api.MerchantStatus) { m.State = "running" })
	// Roll back to a named version.
	do(t, ctx, "rollback with the token", 10*time.Second,
		chromedp.SendKeys(chromedp.CSS(`#rollback-to`), "1.4.1"),
		chromedp.Click(chromedp.CSS(`#rollback button[type=submit]`)),
		chromedp.Click(chromedp.CSS(`#rollback button[type=submit]`)),
		poll(`document.querySelector('#action-result').textContent.includes('rolled back to 1.4.1')`, 3*time.Second),
	)
	if calls := f.called(); !slices.Equal(calls, []string{"restart acme", "rollback acme 1.4.1"}) {
		t.Errorf("daemon calls after the rollback: %q", calls)
	}
	// The log tail shows with the token, and a new history event arrives.
	f.record(stateEvent("acme", "restart", "restart requested"))
	do(t, ctx, "log tail and history", 5*time.Second,
		poll(`document.querySelector('#logs').textContent.includes('POST /invoices 201')`, 3*time.Second),
		poll(`document.querySelector('#timeline li.fresh') !== null && document.querySelector('#timeline li').textContent.includes('restart requested')`, 2*time.Second),
	)

	// Without JavaScript the fleet table is there all the same.
	noJS, cancel := chromedp.NewContext(ctx)
	defer cancel()
	if _, err := chromedp.Call(noJS, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true}); err != nil {
		t.Fatalf("disabling JavaScript: %v", err)
	}
	do(t, noJS, "the fleet page without JavaScript", 10*time.Second, chromedp.Navigate(base+"/?state=crashloop"))
	rows := eval[[]string](t, noJS, `Array.from(document.querySelectorAll('#fleet-rows tr')).map(r => r.dataset.id)`)
	if eval[bool](t, noJS, `document.documentElement.classList.contains('js')`) {
		t.Error("the page's script ran with JavaScript disabled")
	}
	if !slices.Equal(rows, []string{"cove"}) {
		t.Errorf("without JavaScript, ?state=crashloop shows %q", rows)
	}
	t.Logf("browser test took %s", time.Since(start).Round(time.Millisecond))
}

// TestScreenshots writes docs/dashboard-fleet.png and
// docs/dashboard-merchant.png from the made-up fleet; it runs with
// STEWARD_SCREENSHOTS=1.
func TestScreenshots(t *testing.T) {
	if os.Getenv("STEWARD_SCREENSHOTS") != "1" {
		t.Skip("set STEWARD_SCREENSHOTS=1 to write the screenshots under docs/")
	}
	f := newFleet(time.Now())
	base := serveFleet(t, f)
	ctx := browser(t)
	dir := filepath.Join("..", "..", "docs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	shot := func() []byte {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		b, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		return b
	}
	do(t, ctx, "fleet page", 20*time.Second,
		chromedp.EmulateViewport(1360, 900),
		chromedp.Navigate(base+"/"),
		poll(`document.querySelector('#live.on') !== null`, 5*time.Second),
		chromedp.Evaluate[chromedp.Void](`sessionStorage.setItem('steward.token', `+fmt.Sprintf("%q", testToken)+`)`),
		chromedp.Reload(),
		poll(`document.querySelector('#live.on') !== null && document.querySelector('#access').classList.contains('write')`, 5*time.Second))
	fleet := shot()
	do(t, ctx, "merchant page", 20*time.Second,
		chromedp.Navigate(base+"/merchants/cove"),
		poll(`document.querySelector('#live.on') !== null && document.querySelector('#logs').textContent.includes('goroutine 1')`, 5*time.Second))
	merchant := shot()
	for name, b := range map[string][]byte{"dashboard-fleet.png": fleet, "dashboard-merchant.png": merchant} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
