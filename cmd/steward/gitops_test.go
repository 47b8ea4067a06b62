package main

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"steward/api"
	"steward/internal/gittest"
)

// useGit points the fleet's host config at a git source.
func (f *fleet) useGit(url, poll, extra string) {
	f.t.Helper()
	b, err := os.ReadFile(f.config)
	if err != nil {
		f.t.Fatal(err)
	}
	s := strings.Replace(string(b), `source { path = "specs" }`, fmt.Sprintf(`source {
  git {
    url  = %q
    ref  = "main"
    dir  = "merchants"
    poll = %q
  }
}`, url, poll), 1)
	if err := os.WriteFile(f.config, []byte(s+extra), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

// apiStatus reads the daemon's GET /v1/status.
func (f *fleet) apiStatus() statusDoc {
	f.t.Helper()
	var doc statusDoc
	c := api.NewClient(fmt.Sprintf("127.0.0.1:%d", f.apiPort), "")
	if err := c.Status(context.Background(), &doc); err != nil {
		f.t.Fatalf("GET /v1/status: %v", err)
	}
	return doc
}

func (f *fleet) waitAPI() {
	f.t.Helper()
	waitFor(f.t, 30*time.Second, "the daemon's API", func() bool {
		var doc statusDoc
		return api.NewClient(fmt.Sprintf("127.0.0.1:%d", f.apiPort), "").Status(context.Background(), &doc) == nil
	})
}

func TestGitPushDrivesTheDaemon(t *testing.T) {
	pkgs := examplePackages(t)
	repo := gittest.New(t)
	f := newFleet(t, 10)
	spec := func(ms ...string) map[string]string {
		return map[string]string{"merchants/fleet.hcl": f.privateDBs(fleetSpec(pkgs, ms...))}
	}
	repo.Commit("alpha", spec(merchantBlock("alpha")))
	f.useGit(repo.Path, "5s", "")
	f.startDaemon()
	f.waitRunning(60*time.Second, "alpha")

	pushed := time.Now()
	sha := repo.Commit("add bravo", spec(merchantBlock("alpha"), merchantBlock("bravo")))
	doc := f.waitRunning(60*time.Second, "alpha", "bravo")
	t.Logf("push to bravo answering with a 5s poll: %s", time.Since(pushed).Round(time.Millisecond))
	if doc := f.apiStatus(); doc.Revision != sha {
		t.Errorf("status revision %q, want the commit %s", doc.Revision, sha)
	}
	hist, _, _ := f.steward("history", "bravo", "-o", "json")
	if !strings.Contains(hist, sha) {
		t.Errorf("bravo's history does not carry the commit %s:\n%s", sha, hist)
	}

	// A broken commit changes nothing and is reported.
	bad := repo.Commit("oops", map[string]string{"merchants/fleet.hcl": f.privateDBs(fleetSpec(pkgs, merchantBlock("alpha"))) + "\nmerchant \"bravo\" {"})
	waitFor(t, 30*time.Second, "the source error in status", func() bool { return f.apiStatus().SpecError != "" })
	st := f.apiStatus()
	if st.Revision != sha || !strings.Contains(st.SpecError, "fleet.hcl:") {
		t.Errorf("status after a broken commit %s: revision %q, error %q", bad[:8], st.Revision, st.SpecError)
	}
	for _, id := range []string{"alpha", "bravo"} {
		if f.merchant(st, id).PID != f.merchant(doc, id).PID {
			t.Errorf("%s changed after a broken commit", id)
		}
	}
	metricsText := get(f.apiPort, "/metrics")
	if !strings.Contains(metricsText, "steward_source_errors_total") || strings.Contains(metricsText, "steward_source_errors_total 0") {
		t.Errorf("metrics do not count the source error")
	}
	if !strings.Contains(metricsText, `steward_merchants{state="running"} 2`) {
		t.Errorf("metrics do not count the 2 running merchants:\n%s", grepLines(metricsText, "steward_merchants"))
	}

	// The fix converges; removing a merchant stops it.
	fix := repo.Commit("fix: drop bravo, add charlie", spec(merchantBlock("alpha"), merchantBlock("charlie")))
	f.waitRunning(60*time.Second, "alpha", "charlie")
	waitFor(t, 30*time.Second, "bravo gone", func() bool {
		for _, m := range f.apiStatus().Merchants {
			if m.ID == "bravo" {
				return false
			}
		}
		return true
	})
	if pid := f.merchant(doc, "bravo").PID; syscall.Kill(pid, 0) == nil && !isZombie(pid) {
		t.Errorf("bravo's process %d still runs", pid)
	}
	if st := f.apiStatus(); st.SpecError != "" || st.Revision != fix {
		t.Errorf("after the fix: revision %q (want %s), error %q", st.Revision, fix, st.SpecError)
	}
}

func TestSyncWebhookConvergesBeforeThePoll(t *testing.T) {
	pkgs := examplePackages(t)
	repo := gittest.New(t)
	f := newFleet(t, 10)
	repo.Commit("alpha", map[string]string{"merchants/fleet.hcl": f.privateDBs(fleetSpec(pkgs, merchantBlock("alpha")))})
	f.useGit(repo.Path, "1h", "")
	b, _ := os.ReadFile(f.config)
	os.WriteFile(f.config, []byte(strings.Replace(string(b), "api {", "api {\n  webhook_secret = \"hook-secret\"\n ", 1)), 0o644)
	f.startDaemon()
	f.waitRunning(60*time.Second, "alpha")
	repo.Commit("add bravo", map[string]string{"merchants/fleet.hcl": f.privateDBs(fleetSpec(pkgs, merchantBlock("alpha"), merchantBlock("bravo")))})
	url := fmt.Sprintf("http://127.0.0.1:%d/v1/sync", f.apiPort)
	body := []byte(`{"ref":"refs/heads/main"}`)
	send := func(sig string) int {
		req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		req.Header.Set("X-Hub-Signature-256", sig)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := send(api.Sign("wrong-secret", body)); code != http.StatusForbidden {
		t.Fatalf("badly signed webhook: HTTP %d", code)
	}
	pushed := time.Now()
	if code := send(api.Sign("hook-secret", body)); code != http.StatusOK {
		t.Fatalf("signed webhook: HTTP %d", code)
	}
	f.waitRunning(30*time.Second, "alpha", "bravo")
	t.Logf("push to bravo answering with the webhook (poll 1h): %s", time.Since(pushed).Round(time.Millisecond))
}

func TestDirectoryWatchConverges(t *testing.T) {
	pkgs := examplePackages(t)
	f := newFleet(t, 10)
	b, _ := os.ReadFile(f.config)
	os.WriteFile(f.config, []byte(strings.Replace(string(b), `resync = "2s"`, `resync = "1h"`, 1)), 0o644)
	f.write("fleet.hcl", fleetSpec(pkgs))
	f.write("alpha.hcl", merchantBlock("alpha", `  env = { LOCALE = "en_US" }`))
	f.startDaemon()
	first := f.waitRunning(60*time.Second, "alpha")

	// Create: a new file with a new merchant.
	f.write("bravo.hcl", merchantBlock("bravo"))
	f.waitRunning(30*time.Second, "alpha", "bravo")
	// Modify: alpha's env changes, so it restarts.
	f.write("alpha.hcl", merchantBlock("alpha", `  env = { LOCALE = "de_DE" }`))
	waitFor(t, 30*time.Second, "alpha restarted with its new env", func() bool {
		m := f.merchant(f.status(), "alpha")
		return m.State == "running" && m.PID != f.merchant(first, "alpha").PID
	})
	// Delete: bravo's file goes, so bravo stops.
	os.Remove(filepath.Join(f.specs, "bravo.hcl"))
	waitFor(t, 30*time.Second, "bravo removed", func() bool { return len(f.status().Merchants) == 1 })

	// A burst of 100 writes is debounced into a few reloads.
	loadsBefore := strings.Count(f.daemonLog(), `"msg":"specs changed"`)
	for i := range 100 {
		f.write("alpha.hcl", merchantBlock("alpha", fmt.Sprintf("  env = { LOCALE = \"de_DE\", N = \"%d\" }", i)))
	}
	waitFor(t, 30*time.Second, "alpha on the last write", func() bool {
		pid := f.merchant(f.status(), "alpha").PID
		env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		return strings.Contains(string(env), "N=99\x00")
	})
	reloads := strings.Count(f.daemonLog(), `"msg":"specs changed"`) - loadsBefore
	restarts := strings.Count(f.daemonLog()[0:], `"action":"restart"`)
	t.Logf("100 writes: %d reloads, %d restarts of alpha in all", reloads, restarts)
	if reloads > 10 {
		t.Errorf("100 writes caused %d reloads; the watcher does not debounce", reloads)
	}
}

func TestOverlappingAppliesNeverBothAct(t *testing.T) {
	pkgs := examplePackages(t)
	f := newFleet(t, 10)
	f.write("fleet.hcl", fleetSpec(pkgs, merchantBlock("alpha"), merchantBlock("bravo"), merchantBlock("charlie")))
	type result struct {
		out  string
		code int
	}
	results := make([]result, 2)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range results {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			cmd := exec.Command(os.Args[0], "apply", "-config", f.config, "-auto-approve")
			cmd.Env = append(os.Environ(), "STEWARD_TEST_MAIN=1")
			<-start
			out, err := cmd.CombinedOutput()
			code := 0
			if err != nil {
				code = cmd.ProcessState.ExitCode()
			}
			results[i] = result{string(out), code}
		}(i)
	}
	close(start)
	wg.Wait()
	var ok, locked int
	for _, r := range results {
		switch {
		case r.code == 0 && strings.Contains(r.out, "3 created"):
			ok++
		case r.code == 0 && strings.Contains(r.out, "No changes"):
			ok++ // ran after the other one finished
		case r.code == 1 && strings.Contains(r.out, "state is locked by pid") && strings.Contains(r.out, "steward apply"):
			locked++
		default:
			t.Errorf("unexpected apply result (exit %d):\n%s", r.code, r.out)
		}
	}
	events, _, _ := f.steward("history", "alpha", "-o", "json")
	if n := strings.Count(events, `"action": "create"`); n != 1 {
		t.Errorf("alpha was created %d times:\n%s", n, events)
	}
	for id, pids := range f.merchantPIDs() {
		if len(pids) != 1 {
			t.Errorf("merchant %s has %d processes", id, len(pids))
		}
	}
	t.Logf("overlapping applies: %d applied, %d refused by the lock", ok, locked)

	// With -lock-timeout the second run waits for the first instead.
	f.write("fleet.hcl", fleetSpec(pkgs, merchantBlock("alpha"), merchantBlock("bravo"), merchantBlock("charlie"), merchantBlock("delta")))
	var outs [2]string
	var codes [2]int
	for i := range 2 {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			cmd := exec.Command(os.Args[0], "apply", "-config", f.config, "-auto-approve", "-lock-timeout", "60s")
			cmd.Env = append(os.Environ(), "STEWARD_TEST_MAIN=1")
			out, err := cmd.CombinedOutput()
			outs[i] = string(out)
			if err != nil {
				codes[i] = cmd.ProcessState.ExitCode()
			}
		}(i)
	}
	wg.Wait()
	if codes[0] != 0 || codes[1] != 0 || strings.Count(outs[0]+outs[1], "1 created") != 1 || !strings.Contains(outs[0]+outs[1], "No changes") {
		t.Errorf("applies with -lock-timeout: %v\n%s\n---\n%s", codes, outs[0], outs[1])
	}
}

func TestSuspendedMerchantIsLeftAlone(t *testing.T) {
	pkgs := examplePackages(t)
	f := newFleet(t, 10)
	f.write("fleet.hcl", fleetSpec(pkgs, merchantBlock("alpha"), merchantBlock("bravo")))
	f.startDaemon()
	doc := f.waitRunning(60*time.Second, "alpha", "bravo")
	f.waitAPI()
	if out, errs, code := f.steward("suspend", "alpha"); code != 0 || !strings.Contains(out, "alpha suspended") {
		t.Fatalf("suspend through the daemon: exit %d %s%s", code, out, errs)
	}
	alpha := f.merchant(doc, "alpha")
	syscall.Kill(alpha.PID, syscall.SIGKILL)
	// Give the daemon two resync periods (2s each) to misbehave.
	logBefore := len(f.daemonLog())
	waitFor(t, 30*time.Second, "two resyncs", func() bool {
		return strings.Count(f.daemonLog()[logBefore:], `"msg":"resync"`) >= 2
	})
	if m := f.merchant(f.apiStatus(), "alpha"); m.State != "suspended" || m.PID != 0 {
		t.Errorf("suspended alpha: %+v", m)
	}
	if out, _, code := f.steward("resume", "alpha"); code != 0 || !strings.Contains(out, "alpha resumed") {
		t.Fatalf("resume: %d %s", code, out)
	}
	f.waitRunning(30*time.Second, "alpha")
	// restart through the daemon
	before := f.merchant(f.status(), "bravo").PID
	if out, errs, code := f.steward("restart", "bravo"); code != 0 || !strings.Contains(out, "restarted by the daemon") {
		t.Fatalf("restart through the daemon: %d %s%s", code, out, errs)
	}
	if after := f.merchant(f.status(), "bravo"); after.PID == before || after.State != "running" {
		t.Errorf("bravo after restart: %+v", after)
	}
}

// grepLines returns the lines of text that contain sub.
func grepLines(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestCraftedCommitsWriteNothingOutside pushes commits crafted the way a
// hostile pusher would (with git hash-object --literally) and checks that
// neither validate nor the daemon writes anything outside the checkout,
// that the bad commits change nothing, and that the error is shown.
func TestCraftedCommitsWriteNothingOutside(t *testing.T) {
	pkgs := examplePackages(t)
	repo := gittest.New(t)
	f := newFleet(t, 10)
	outside := t.TempDir()
	good := repo.Commit("alpha", map[string]string{"merchants/fleet.hcl": f.privateDBs(fleetSpec(pkgs, merchantBlock("alpha")))})
	merchants := gittest.RawEntry{Mode: "40000", Name: "merchants", Hash: repo.TreeOf(good, "merchants")}
	blob := repo.Blob("* * * * * root touch /tmp/pwned\n")
	link := gittest.RawEntry{Mode: "120000", Name: "evil", Hash: repo.Blob(outside)}
	crafted := map[string]string{
		"slash":     repo.RawTree(merchants, link, gittest.RawEntry{Mode: "100644", Name: "evil/pwned", Hash: blob}),
		"duplicate": repo.RawTree(merchants, link, gittest.RawEntry{Mode: "40000", Name: "evil", Hash: repo.RawTree(gittest.RawEntry{Mode: "100644", Name: "pwned", Hash: blob})}),
		"dotdot":    repo.RawTree(merchants, gittest.RawEntry{Mode: "40000", Name: "..", Hash: repo.RawTree(gittest.RawEntry{Mode: "100644", Name: "pwned", Hash: blob})}),
		"dotgit":    repo.RawTree(merchants, gittest.RawEntry{Mode: "40000", Name: ".git", Hash: repo.RawTree(gittest.RawEntry{Mode: "100644", Name: "config", Hash: blob})}),
	}
	nothingOutside := func(when string) {
		t.Helper()
		if ents, _ := os.ReadDir(outside); len(ents) != 0 {
			t.Errorf("%s: %d entries written outside the checkout", when, len(ents))
		}
		filepath.WalkDir(f.dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Name() == "pwned" {
				t.Errorf("%s: crafted file written at %s", when, p)
			}
			return nil
		})
	}
	f.useGit(repo.Path, "1h", "")
	for name, tree := range crafted {
		repo.CommitTree(tree, name)
		_, stderr, code := f.steward("validate")
		if code != 1 || !strings.Contains(stderr, "refused") {
			t.Errorf("validate of the %s commit: exit %d, stderr:\n%s", name, code, stderr)
		}
		nothingOutside("validate of the " + name + " commit")
	}

	repo.ResetMain(good)
	f.startDaemon()
	before := f.waitRunning(60*time.Second, "alpha")
	for name, tree := range crafted {
		sha := repo.CommitTree(tree, name)
		resp, err := http.Post(fmt.Sprintf("http://127.0.0.1:%d/v1/sync", f.apiPort), "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		waitFor(t, 30*time.Second, "the refused "+name+" commit in status", func() bool {
			return strings.Contains(f.apiStatus().SpecError, sha[:12])
		})
		st := f.apiStatus()
		if st.Revision != good || f.merchant(st, "alpha").PID != f.merchant(before, "alpha").PID {
			t.Errorf("the %s commit changed something: revision %s, alpha pid %d", name, st.Revision, f.merchant(st, "alpha").PID)
		}
		nothingOutside("the daemon's poll of the " + name + " commit")
	}
}
