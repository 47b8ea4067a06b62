package main

import (
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"steward/internal/pgtest"
)

// TestSecretsNeverLeaveARunningFleet runs a merchant whose package prints
// every secret it is given (the database password in DATABASE_URL, an
// env() value, a sensitive literal) from its process and from its
// migrations, one of which fails; then greps every output steward has for
// them: the CLI's plan, apply, status, history and logs (text and JSON),
// the daemon's API (with and without the token), its metrics, dashboard,
// event stream and log, and every file of the state.
func TestSecretsNeverLeaveARunningFleet(t *testing.T) {
	const (
		pgPassword = "pg-pw-s3cret"
		envKey     = "env-key-s3cret"
		litPass    = "lit-pass-s3cret"
		apiToken   = "api-tok-s3cret"
	)
	secrets := []string{pgPassword, envKey, litPass, apiToken}
	dsn := strings.Replace(pgtest.DSN(), "postgres://postgres@", "postgres://postgres:"+pgPassword+"@", 1)
	if dsn == pgtest.DSN() {
		t.Fatalf("cannot put a password into %s", pgtest.DSN())
	}
	t.Setenv("S_DSN", dsn)
	t.Setenv("S_KEY", envKey)

	// The leaky package: the example app behind scripts that print what
	// they are given.
	app := extract(t, filepath.Join(examplePackages(t), "invoicing-1.1.0.tar.gz"), "bin/invoicing")
	pkgs := t.TempDir()
	os.Chmod(pkgs, 0o755)
	start := "#!/bin/sh\necho \"app sees $DATABASE_URL key=$KEY pass=$PASS\"\necho \"stderr too: $DATABASE_URL $KEY $PASS\" >&2\nexec \"$(dirname \"$0\")/invoicing\" --port=\"$1\"\n"
	writeTarball(t, pkgs, "leaky", "1.0.0", map[string]string{
		"package.hcl":   "command = [\"bin/start\", \"${port}\"]\nhealth { http = \"/health\" }\nschema {\n  version = 2\n  migrate = [\"bin/migrate\", \"up\"]\n}\n",
		"bin/invoicing": app,
		"bin/start":     start,
		"bin/migrate":   "#!/bin/sh\necho \"migrating $DATABASE_URL with $KEY and $PASS\"\nexec \"$(dirname \"$0\")/invoicing\" migrate \"$@\"\n",
	})
	writeTarball(t, pkgs, "leaky", "1.1.0", map[string]string{
		"package.hcl":   "command = [\"bin/start\", \"${port}\"]\nhealth { http = \"/health\" }\nschema {\n  version = 3\n  migrate = [\"bin/migrate\"]\n}\n",
		"bin/invoicing": app,
		"bin/start":     start,
		"bin/migrate":   "#!/bin/sh\necho \"cannot migrate $DATABASE_URL key $KEY pass $PASS\"\necho \"FATAL: $DATABASE_URL\" >&2\nexit 1\n",
	})

	f := newFleet(t, 10)
	b, _ := os.ReadFile(f.config)
	os.WriteFile(f.config, []byte(strings.Replace(string(b), "api {\n", fmt.Sprintf("api {\n  token = %q\n", apiToken), 1)), 0o644)
	specs := func(version string) string {
		return fmt.Sprintf(`database "db" { dsn = env("S_DSN") }
package "leaky" {
  source = %q
  channel "stable" { version = %q }
}
defaults {
  package  = "leaky"
  channel  = "stable"
  database = "db"
}
merchant "alpha" {
  env       = { KEY = env("S_KEY"), PASS = %q }
  sensitive = ["PASS"]
}
`, pkgs, version, litPass)
	}

	var outputs []string // "what: text"
	keep := func(what, text string) { outputs = append(outputs, what+": "+text) }
	cli := func(args ...string) string {
		t.Helper()
		out, errs, _ := f.steward(args...)
		keep("steward "+strings.Join(args, " "), out+errs)
		return out + errs
	}

	f.write("fleet.hcl", specs("1.0.0"))
	cli("validate")
	cli("plan")
	cli("plan", "-o", "json")
	if out, errs, code := f.steward("apply", "-auto-approve"); code != 0 {
		t.Fatalf("apply 1.0.0: %s%s", out, errs)
	}
	f.write("fleet.hcl", specs("1.1.0"))
	cli("plan")
	if out := cli("apply", "-auto-approve"); !strings.Contains(out, "failed") {
		t.Fatalf("the failing migration did not fail the apply:\n%s", out)
	}
	cli("status")
	cli("status", "-o", "json")
	history := cli("history", "alpha", "-n", "0")
	cli("history", "alpha", "-o", "json")
	logs := cli("logs", "alpha", "-n", "200")
	cli("logs", "alpha", "-n", "200", "-grep", "sees")
	// grep sees the lines as shown: it cannot probe a redacted value.
	if probe := cli("logs", "alpha", "-n", "200", "-grep", "key=env-key"); strings.Contains(probe, "app sees") {
		t.Errorf("a grep for the secret's beginning finds its line:\n%s", probe)
	}
	if shown := cli("logs", "alpha", "-n", "200", "-grep", `key=\(sensitive\)`); !strings.Contains(shown, "app sees") {
		t.Errorf("a grep for the line as shown does not find it:\n%s", shown)
	}

	// The checks must see what they protect: the migration's output and
	// the app's lines are there, redacted.
	if !strings.Contains(history, "cannot migrate") || !strings.Contains(history, "(sensitive)") {
		t.Errorf("history does not keep the failed migration's output, redacted:\n%s", history)
	}
	if !strings.Contains(logs, "app sees") || !strings.Contains(logs, "key=(sensitive) pass=(sensitive)") {
		t.Errorf("logs do not show the app's lines, redacted:\n%s", logs)
	}

	// The daemon: its API without and with the token, its pages, its
	// metrics, its event stream and its own log.
	d := f.startDaemon()
	f.waitAPI()
	f.waitRunning(60*time.Second, "alpha")
	base := fmt.Sprintf("http://127.0.0.1:%d", f.apiPort)
	fetch := func(path, token string, limit int64) string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, limit))
		keep("GET "+path, string(b))
		return string(b)
	}
	for _, p := range []string{"/v1/status", "/v1/plan", "/v1/merchants/alpha/history?n=1000", "/metrics", "/", "/merchants/alpha"} {
		fetch(p, "", 10<<20)
		fetch(p, apiToken, 10<<20)
	}
	if l := fetch("/v1/merchants/alpha/logs?n=200", apiToken, 10<<20); !strings.Contains(l, "app sees") {
		t.Errorf("the API's log tail lacks the app's lines:\n%s", l)
	}
	// The event stream's first document (it never ends by itself).
	fetchStream := func() {
		req, _ := http.NewRequest(http.MethodGet, base+"/v1/events", nil)
		resp, err := (&http.Client{Timeout: 3 * time.Second}).Do(req)
		if err != nil {
			t.Fatalf("GET /v1/events: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10)) // ends with the client's timeout
		keep("GET /v1/events", string(b))
	}
	fetchStream()
	d.stop(t, syscall.SIGTERM)
	keep("the daemon's log", f.daemonLog())

	// Every file of the state.
	filepath.WalkDir(filepath.Join(f.dir, "state"), func(p string, de fs.DirEntry, err error) error {
		if err == nil && de.Type().IsRegular() {
			b, _ := os.ReadFile(p)
			keep("state file "+p, string(b))
		}
		return nil
	})

	for _, o := range outputs {
		for _, s := range secrets {
			if strings.Contains(o, s) {
				what, _, _ := strings.Cut(o, ": ")
				t.Errorf("%s shows the secret %q:\n%s", what, s, o)
			}
		}
	}
}
