package main

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"steward/internal/browsertest"
)

// TestDashboardOnARealDaemon drives the dashboard of a real `steward run`
// with headless chromium: the fleet is listed, a merchant the test
// SIGKILLs turns non-running and back to running on the open page without
// a reload, the merchant page refuses actions without the write token, and
// a restart clicked with the token gives the merchant a new process.
func TestDashboardOnARealDaemon(t *testing.T) {
	browsertest.Chromium(t) // skip (or, under CI, fail) before any set-up
	pkgs := examplePackages(t)
	f := newFleet(t, 10)
	const token = "dashboard-test-write-token"
	b, err := os.ReadFile(f.config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.config, []byte(strings.Replace(string(b), "api {\n", fmt.Sprintf("api {\n  token = %q\n", token), 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	f.write("fleet.hcl", fleetSpec(pkgs, merchantBlock("alpha"), merchantBlock("beta")))
	d := f.startDaemon()
	f.waitAPI()
	f.waitRunning(60*time.Second, "alpha", "beta")
	base := fmt.Sprintf("http://127.0.0.1:%d", f.apiPort)
	ctx := browsertest.Start(t)
	do := func(what string, dur time.Duration, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		browsertest.Do(t, ctx, what, dur, steps...)
	}
	row := func(id, label string) string {
		return fmt.Sprintf(`((r) => r ? r.querySelector('[data-label=%q]').textContent.trim() : '')(document.querySelector('#fleet-rows tr[data-id=%q]'))`, label, id)
	}

	// The fleet page lists the fleet, live.
	do("loading the fleet page", 15*time.Second,
		chromedp.Navigate(base+"/"),
		browsertest.Poll(`document.querySelector('#live.on') !== null && document.querySelectorAll('#fleet-rows tr[data-id]').length === 2`, 10*time.Second),
		// Every state alpha's row shows from now on, and a mark that
		// a reload would wipe.
		chromedp.Evaluate[chromedp.Void](`window.stayed = true; window.alphaStates = [];
			new MutationObserver(() => { const s = `+row("alpha", "State")+`; if (window.alphaStates[window.alphaStates.length-1] !== s) window.alphaStates.push(s) })
				.observe(document.querySelector('#fleet-rows'), {subtree: true, childList: true, characterData: true})`),
	)
	if ids := browsertest.Column(t, ctx, "Merchant"); !slices.Equal(sorted(ids), []string{"alpha", "beta"}) {
		t.Fatalf("the fleet table lists %q", ids)
	}
	alpha := f.merchant(f.apiStatus(), "alpha")
	if got := browsertest.Eval[string](t, ctx, row("alpha", "PID")); got != fmt.Sprint(alpha.PID) {
		t.Errorf("alpha's pid on the page is %q, status says %d", got, alpha.PID)
	}

	// SIGKILL: the daemon starts alpha again at once, and the page shows
	// the new pid. Killed again at once, alpha waits out its restart
	// backoff (1s): the page shows it down, then running under a third
	// pid, all without a reload.
	runningUnder := func(not ...int) chromedp.Action[chromedp.Void] {
		cond := fmt.Sprintf(`%s === 'running' && !['', '—'].includes(%s)`, row("alpha", "State"), row("alpha", "PID"))
		for _, pid := range not {
			cond += fmt.Sprintf(` && %s !== '%d'`, row("alpha", "PID"), pid)
		}
		return browsertest.Poll(cond, 30*time.Second)
	}
	if err := syscall.Kill(alpha.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	do("waiting for the page to show alpha's new process", 30*time.Second, runningUnder(alpha.PID))
	second := f.merchant(f.apiStatus(), "alpha")
	if second.PID == alpha.PID || second.Restarts < 1 {
		t.Fatalf("after the SIGKILL the daemon reports alpha %+v", second)
	}
	if err := syscall.Kill(second.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	do("waiting for the page to show alpha down", 10*time.Second,
		browsertest.Poll(fmt.Sprintf(`!['', 'running'].includes(%s)`, row("alpha", "State")), 5*time.Second))
	down := browsertest.Eval[string](t, ctx, row("alpha", "State"))
	do("waiting for the page to show alpha running again", 30*time.Second, runningUnder(alpha.PID, second.PID))
	if !browsertest.Eval[bool](t, ctx, `window.stayed === true`) {
		t.Error("the page reloaded to show the change")
	}
	t.Logf("states shown for alpha: %q (down as %q)", browsertest.Eval[[]string](t, ctx, `window.alphaStates`), down)
	alpha = f.merchant(f.apiStatus(), "alpha")
	if got := browsertest.Eval[string](t, ctx, row("alpha", "PID")); got != fmt.Sprint(alpha.PID) {
		t.Errorf("after the restart the page shows pid %q, status says %d", got, alpha.PID)
	}

	// The merchant page without the token: read-only, and the daemon
	// refuses a restart sent all the same.
	do("the merchant page without the token", 15*time.Second,
		chromedp.Navigate(base+"/merchants/alpha"),
		browsertest.Poll(`document.querySelector('#access').textContent === 'read-only' && document.querySelector('#live.on') !== null`, 10*time.Second))
	if !browsertest.Eval[bool](t, ctx, `document.querySelector('button[data-action=restart]').disabled`) {
		t.Error("restart is offered without the token")
	}
	if code := browsertest.Eval[int](t, ctx, `fetch('/v1/merchants/alpha/restart', {method: 'POST'}).then(r => r.status)`, chromedp.EvalAwaitPromise); code != 401 {
		t.Errorf("a restart without the token answered %d, want 401", code)
	}
	if code := browsertest.Eval[int](t, ctx, `fetch('/v1/merchants/alpha/restart', {method: 'POST', headers: {Authorization: 'Bearer wrong'}}).then(r => r.status)`, chromedp.EvalAwaitPromise); code != 401 {
		t.Errorf("a restart with a wrong token answered %d, want 401", code)
	}
	if m := f.merchant(f.apiStatus(), "alpha"); m.PID != alpha.PID {
		t.Fatalf("alpha's process changed without the token: %d, was %d", m.PID, alpha.PID)
	}

	// With the token: restart (click, confirm) gives alpha a new process,
	// and the page shows it.
	do("restart with the token", 60*time.Second,
		chromedp.SendKeys(chromedp.CSS(`#token-input`), token),
		chromedp.Click(chromedp.CSS(`#token-use`)),
		browsertest.Poll(`document.querySelector('#access').classList.contains('write') && !document.querySelector('button[data-action=restart]').disabled`, 5*time.Second),
		chromedp.Click(chromedp.CSS(`button[data-action=restart]`)),
		browsertest.Poll(`document.querySelector('button[data-action=restart]').textContent.startsWith('Confirm')`, 2*time.Second),
		chromedp.Click(chromedp.CSS(`button[data-action=restart]`)),
		browsertest.Poll(`document.querySelector('#action-result').textContent.includes('restart done')`, 45*time.Second),
	)
	after := f.merchant(f.apiStatus(), "alpha")
	if after.PID == alpha.PID || after.PID == 0 || after.State != "running" {
		t.Fatalf("after the restart click alpha is %s with pid %d (was %d)", after.State, after.PID, alpha.PID)
	}
	do("the merchant page shows the new pid", 5*time.Second,
		browsertest.Poll(fmt.Sprintf(`document.querySelector('[data-field=pid]').textContent.trim() === '%d'`, after.PID), 3*time.Second))
	if beta := f.merchant(f.apiStatus(), "beta"); beta.State != "running" {
		t.Errorf("beta is %s after alpha's restart", beta.State)
	}
	d.stop(t, syscall.SIGTERM)
}

func sorted(s []string) []string { s = slices.Clone(s); slices.Sort(s); return s }
