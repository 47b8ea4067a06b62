package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files with the current output")

// steward runs the CLI in-process with the given environment.
func steward(t *testing.T, vars map[string]string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: func(k string) string { return vars[k] }}
	code = e.dispatch(context.Background(), args)
	return out.String(), errb.String(), code
}

// golden compares got with testdata/NAME, rewriting it under -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (run go test -update after checking):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func TestValidateBrokenSpecs(t *testing.T) {
	cases, err := filepath.Glob("testdata/validate/*.hcl")
	if err != nil {
		t.Fatal(err)
	}
	cases = append(cases, "testdata/validate/dup-across-files")
	if len(cases) < 10 {
		t.Fatalf("only %d broken spec cases", len(cases))
	}
	// For the cases about the size of a merchant's environment.
	t.Setenv("STEWARD_TEST_100K", strings.Repeat("x", 100_000))
	for _, c := range cases {
		name := strings.TrimSuffix(filepath.Base(c), ".hcl")
		t.Run(name, func(t *testing.T) {
			stdout, stderr, code := steward(t, nil, "validate", c)
			if code != exitError {
				t.Fatalf("exit %d, want 1\n%s%s", code, stdout, stderr)
			}
			if !strings.Contains(stderr, c) || !strings.Contains(stderr, ": error: ") {
				t.Errorf("diagnostics do not name the file and position:\n%s", stderr)
			}
			golden(t, "validate/"+name+".golden", stdout+stderr)
		})
	}
}

func TestValidateJSON(t *testing.T) {
	stdout, _, code := steward(t, nil, "validate", "-o", "json", "testdata/validate/unknown-database.hcl")
	if code != exitError {
		t.Fatalf("exit %d", code)
	}
	golden(t, "validate-json.golden", stdout)
}

func TestValidateExampleFleet(t *testing.T) {
	stdout, stderr, code := steward(t, nil, "validate", "-config", "../../examples/steward.hcl")
	if code != exitOK {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	if !strings.HasPrefix(stdout, "Valid: 6 merchants, 2 databases, 1 package") {
		t.Errorf("stdout = %q", stdout)
	}
	// STEWARD_CONFIG works like -config.
	if _, _, code := steward(t, map[string]string{"STEWARD_CONFIG": "../../examples/steward.hcl"}, "validate"); code != exitOK {
		t.Errorf("STEWARD_CONFIG not honoured: exit %d", code)
	}
}

func TestHelpAndUnknownCommand(t *testing.T) {
	for _, c := range []string{"validate", "plan", "apply", "run", "status", "history", "logs", "restart", "suspend", "resume", "rollback", "fmt", "version"} {
		_, stderr, code := steward(t, nil, c, "-help")
		if code != exitOK || !strings.Contains(stderr, "Usage: steward "+c) {
			t.Errorf("%s -help: exit %d, %q", c, code, stderr)
		}
	}
	_, stderr, code := steward(t, nil, "deploy")
	if code != exitError || !strings.Contains(stderr, `unknown command "deploy"`) {
		t.Errorf("unknown command: exit %d, %q", code, stderr)
	}
}

// fmt refuses files over the limits before parsing them, and leaves them
// as they are.
func TestFmtLimits(t *testing.T) {
	dir := t.TempDir()
	deep := filepath.Join(dir, "deep.hcl")
	deepSrc := "a = " + strings.Repeat("(", 40_000) + "1" + strings.Repeat(")", 40_000) + "\n"
	big := filepath.Join(dir, "big.hcl")
	bigSrc := strings.Repeat("a    = 1\n", 120_000)
	for p, src := range map[string]string{deep: deepSrc, big: bigSrc} {
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	stdout, stderr, code := steward(t, nil, "fmt", deep, big)
	if code != exitError {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	if !strings.Contains(stderr, deep+":1:") || !strings.Contains(stderr, "Nesting too deep") || !strings.Contains(stderr, "limits.spec_depth") {
		t.Errorf("deep file: %s", stderr)
	}
	if !strings.Contains(stderr, big) || !strings.Contains(stderr, "more than the limit of 1 MiB") {
		t.Errorf("large file: %s", stderr)
	}
	for p, src := range map[string]string{deep: deepSrc, big: bigSrc} {
		if b, _ := os.ReadFile(p); string(b) != src {
			t.Errorf("%s was changed", p)
		}
	}
}

func TestFmtCheckCountsFiles(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"a.hcl", "b.hcl"} {
		os.WriteFile(filepath.Join(dir, n), []byte("x    = 1\n"), 0o644)
	}
	_, stderr, code := steward(t, nil, "fmt", "-check", dir)
	if code != exitError || !strings.Contains(stderr, "2 files are not formatted;") {
		t.Errorf("exit %d, %q", code, stderr)
	}
	_, stderr, _ = steward(t, nil, "fmt", "-check", filepath.Join(dir, "a.hcl"))
	if !strings.Contains(stderr, "1 file is not formatted;") {
		t.Errorf("%q", stderr)
	}
}

// No output of validate or fmt shows a secret: values from env() in every
// kind of attribute, literal DSNs and sensitive env values (in files that
// parsed and in files that did not), the API token, and the password of a
// DSN on its own.
func TestSecretsNeverShown(t *testing.T) {
	envSecrets := map[string]string{
		"S_PACKAGE":  "env-pkg-s3cret",
		"S_CHANNEL":  "env-chan-s3cret",
		"S_VERSION":  "env-ver-s3cret!",
		"S_DATABASE": "env-db-s3cret",
		"S_DBNAME":   "ENV-DBNAME-S3CRET",
		"S_GRACE":    "env-grace-s3cret",
		"S_POLICY":   "env-policy-s3cret",
		"S_HTTP":     "env-http-s3cret",
		"S_PORT":     "env-port-s3cret",
		"S_ENVVAL":   "env-envval-s3cret",
		"S_DSN":      "postgres://u:env-dsn-s3cret@h/db",
		"S_DOMAIN":   "Env-Domain-S3cret",
		"S_PREFIX":   "env-prefix-s3cret",
		"S_RESTART":  "env-restart-s3cret",
	}
	for k, v := range envSecrets {
		t.Setenv(k, v)
	}
	secrets := []string{"env default s3cret", "lit-dsn-s3cret", "lit-env-s3cret", "lit-token-s3cret", "unparsed-dsn-s3cret", "unparsed-env-s3cret", "lit-kv-s3cret", "unparsed-default-s3cret"}
	for _, v := range envSecrets {
		secrets = append(secrets, v)
	}
	// Forms of them a message could derive: the password alone, the domain
	// in lower case.
	secrets = append(secrets, "env-dsn-s3cret", "env-domain-s3cret")

	dir := t.TempDir()
	specs := filepath.Join(dir, "specs")
	files := map[string]string{
		"steward.hcl": `source { path = "specs" }
api { token = "lit-token-s3cret" }
`,
		"bad-host.hcl": `source { path = "specs" }
api {
  token = ["lit-token-s3cret"]
}
`,
		"specs/fleet.hcl": `database "env" { dsn = env("S_DSN") }
database "lit" { dsn = "postgres://u:lit-dsn-s3cret@h/db" }
database "lit" { dsn = "postgres://u:lit-dsn-s3cret@h/db" }
database "kv" {
  dsn = "host=h password=lit-kv-s3cret bogus"
  down_after = 0
}
package "app" {
  source = "/x"
  channel "stable" { version = "1.0.0" }
}
merchant "a" {
  package          = env("S_PACKAGE")
  channel          = env("S_CHANNEL")
  database         = env("S_DATABASE")
  db_name          = env("S_DBNAME")
  stop_grace       = env("S_GRACE")
  on_database_down = env("S_POLICY")
  port             = env("S_PORT")
  env              = { X = env("S_ENVVAL"), "bad name" = "1" }
  health { http = env("S_HTTP") }
  domains          = [env("S_DOMAIN")]
  path_prefix      = env("S_PREFIX")
}
restart { max_delay = env("S_RESTART") }
merchant "b" {
  package = "app"
  version = env("S_UNSET_VERSION", "env default s3cret")
  env = { PASS = "lit-env-s3cret", SHARED_PASS = "shared", "bad name" = "1" }
  sensitive = ["PASS", "SHARED_PASS"]
}
`,
		"specs/broken.hcl": `database "broken" { dsn = "postgres://u:unparsed-dsn-s3cret@h/db" }}
merchant "c" {
  env = { SHARED_PASS = "unparsed-env-s3cret" } @
  version = env("S_UNSET", "unparsed-default-s3cret") @
}
`,
	}
	for name, src := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	config, badHost := filepath.Join(dir, "steward.hcl"), filepath.Join(dir, "bad-host.hcl")
	for _, args := range [][]string{
		{"validate", "-config", config},
		{"validate", "-o", "json", "-config", config},
		{"validate", "-config", config, filepath.Join(specs, "fleet.hcl")},
		{"validate", "-o", "json", "-config", config, filepath.Join(specs, "fleet.hcl"), filepath.Join(specs, "broken.hcl")},
		{"validate", "-config", config, specs},
		{"validate", "-config", badHost},
		{"validate", "-o", "json", "-config", badHost},
		{"fmt", "-check", "-config", config},
		{"fmt", "-check", specs},
		{"fmt", "-check", "-config", badHost},
	} {
		stdout, stderr, code := steward(t, nil, args...)
		out := stdout + stderr
		if code != exitError {
			t.Errorf("%v: exit %d, want 1 (the specs are invalid)\n%s", args, code, out)
		}
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("%v shows the secret %q:\n%s", args, s, out)
			}
		}
		if !strings.Contains(out, "error") {
			t.Errorf("%v: no diagnostics, so the test checks nothing:\n%s", args, out)
		}
	}
	// The checks above must see the lines they protect: snippets are shown,
	// redacted or left out, and values are replaced.
	_, stderr, _ := steward(t, nil, "validate", "-config", config)
	// fleet.hcl alone parses, so its references are checked too (with the
	// broken file beside it they are not: its blocks are unknown).
	aloneDir := filepath.Join(dir, "alone")
	os.MkdirAll(aloneDir, 0o755)
	os.WriteFile(filepath.Join(aloneDir, "fleet.hcl"), []byte(files["specs/fleet.hcl"]), 0o644)
	_, alone, _ := steward(t, nil, "validate", "-config", config, filepath.Join(aloneDir, "fleet.hcl"))
	stderr += alone
	for _, want := range []string{
		`"(sensitive)" is not a version`,
		`database "lit" { dsn = "(sensitive)" }`,
		`env = { PASS = "(sensitive)", SHARED_PASS = "(sensitive)", "bad name" = "1" }`,
		"(line not shown: it may hold a secret)",
		`Unknown package`,
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("validate output lacks %q:\n%s", want, stderr)
		}
	}
}

// Commands that do not serve or call the API work while the variable
// api.token reads is unset; validate warns about it, naming the file, the
// line and the variable.
func TestReadOnlyCommandsWithoutToken(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "specs"), 0o755)
	b, err := os.ReadFile("testdata/validate/unknown-database.hcl")
	if err != nil {
		t.Fatal(err)
	}
	fleet := strings.Replace(string(b), `database = "db-nowhere"`, `database = "db-east"`, 1)
	os.WriteFile(filepath.Join(dir, "specs", "fleet.hcl"), []byte(fleet), 0o644)
	config := filepath.Join(dir, "steward.hcl")
	os.WriteFile(config, []byte(`source { path = "specs" }
state { path = "state" }
runtime {
  root  = "run"
  ports = "41100-41199"
}
api {
  listen = "127.0.0.1:41070"
  token  = env("STEWARD_TEST_UNSET_TOKEN")
}
`), 0o644)
	if _, ok := os.LookupEnv("STEWARD_TEST_UNSET_TOKEN"); ok {
		t.Fatal("STEWARD_TEST_UNSET_TOKEN is set")
	}
	for _, args := range [][]string{
		{"validate", "-config", config},
		{"validate", "-o", "json", "-config", config},
		{"fmt", "-check", "-config", config},
		{"status", "-config", config},
		{"status", "-o", "json", "-config", config},
		{"history", "acme", "-config", config},
	} {
		stdout, stderr, code := steward(t, nil, args...)
		if code != exitOK {
			t.Errorf("%v: exit %d\n%s%s", args, code, stdout, stderr)
		}
	}
	_, stderr, _ := steward(t, nil, "validate", "-config", config)
	if !strings.Contains(stderr, config+":9:12: warning: api.token cannot be evaluated") || !strings.Contains(stderr, "environment variable STEWARD_TEST_UNSET_TOKEN is not set") {
		t.Errorf("validate does not warn about the token:\n%s", stderr)
	}
}

// validate FILE checks a file of a fleet split over several files against
// the whole fleet, and reports only the problems of the files it names
// (and those between them and the others): a pre-commit hook on changed
// files.
func TestValidateSomeFilesOfAFleet(t *testing.T) {
	dir := t.TempDir()
	specs := filepath.Join(dir, "specs")
	write := func(name, src string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	config := write("steward.hcl", "source { path = \"specs\" }\nruntime { ports = \"41100-41199\" }\napi { listen = \"127.0.0.1:41070\" }\n")
	write("specs/common.hcl", `database "db-east" {
  dsn = "postgres://postgres@127.0.0.1/postgres"
}

package "invoicing" {
  source = "file://../packages"

  channel "stable" {
    version = "1.0.0"
  }
}
`)
	east := write("specs/east.hcl", `merchant "acme" {
  package  = "invoicing"
  channel  = "stable"
  database = "db-east"
}
`)
	west := write("specs/west.hcl", `merchant "bravo" {
  package  = "invoicing"
  channel  = "nightly"
  database = "db-east"
}
`)

	// The named file is fine; west.hcl's error is counted, not reported.
	stdout, stderr, code := steward(t, nil, "validate", "-config", config, east)
	if code != exitOK {
		t.Fatalf("exit %d, want 0\n%s%s", code, stdout, stderr)
	}
	if !strings.HasPrefix(stdout, "Valid: 1 file checked in the fleet in "+specs) || strings.Contains(stderr, "nightly") ||
		!strings.Contains(stderr, "Note: 1 error in 1 other file of the fleet not named here is not shown; steward validate "+specs+" shows them.") {
		t.Errorf("stdout %q\nstderr %q", stdout, stderr)
	}
	stdout, _, code = steward(t, nil, "validate", "-o", "json", "-config", config, east)
	if code != exitOK || !strings.Contains(stdout, `"valid": true`) || !strings.Contains(stdout, `"other_errors": 1`) {
		t.Errorf("json: exit %d\n%s", code, stdout)
	}

	// The named file with the error.
	stdout, stderr, code = steward(t, nil, "validate", "-config", config, west)
	if code != exitError || !strings.Contains(stderr, west+":3:14: error: Unknown channel") || strings.Contains(stderr, "Note:") {
		t.Errorf("west.hcl: exit %d\n%s%s", code, stdout, stderr)
	}

	// -fleet names the fleet without a host config.
	stdout, stderr, code = steward(t, nil, "validate", "-fleet", specs, east)
	if code != exitOK || !strings.HasPrefix(stdout, "Valid: 1 file checked in the fleet in "+specs) {
		t.Errorf("-fleet: exit %d\n%s%s", code, stdout, stderr)
	}
	// Without either, only the named file is loaded, as before.
	_, stderr, code = steward(t, nil, "validate", east)
	if code != exitError || !strings.Contains(stderr, "Declared databases: none") {
		t.Errorf("without a fleet: exit %d\n%s", code, stderr)
	}

	// A problem between the named file and another one is reported, on
	// whichever file it is found.
	write("specs/west.hcl", `merchant "bravo" {
  package  = "invoicing"
  channel  = "nightly"
  database = "db-east"
}

merchant "acme" {
  package = "invoicing"
  channel = "stable"
}
`)
	stdout, stderr, code = steward(t, nil, "validate", "-config", config, east)
	if code != exitError || !strings.Contains(stderr, `Duplicate merchant "acme"`) || !strings.Contains(stderr, "already declared at "+east+":1:1") ||
		strings.Contains(stderr, "nightly") || !strings.Contains(stderr, "Note: 1 error in 1 other file") {
		t.Errorf("duplicate across files: exit %d\n%s%s", code, stdout, stderr)
	}

	// Another file that does not parse is said so: references into it could
	// not be checked.
	write("specs/west.hcl", "merchant \"bravo\" {\n")
	_, stderr, _ = steward(t, nil, "validate", "-config", config, east)
	if !strings.Contains(stderr, "Note: 1 other file did not parse; references into it could not be checked.") {
		t.Errorf("unparsed other file:\n%s", stderr)
	}
}

func TestValidateFleetFlagAlone(t *testing.T) {
	stdout, stderr, code := steward(t, nil, "validate", "-fleet", "testdata/validate/dup-across-files")
	if code != exitError || !strings.Contains(stderr, `Duplicate merchant "acme"`) {
		t.Errorf("exit %d\n%s%s", code, stdout, stderr)
	}
}

// Host configs that validate refuses, as golden files.
func TestValidateBrokenHostConfigs(t *testing.T) {
	cases, err := filepath.Glob("testdata/validate/host/*.hcl")
	if err != nil || len(cases) == 0 {
		t.Fatalf("no host config cases: %v", err)
	}
	for _, c := range cases {
		name := strings.TrimSuffix(filepath.Base(c), ".hcl")
		t.Run(name, func(t *testing.T) {
			stdout, stderr, code := steward(t, nil, "validate", "-config", c)
			if code != exitError || !strings.Contains(stderr, c+":") {
				t.Fatalf("exit %d, want 1 with diagnostics naming %s\n%s%s", code, c, stdout, stderr)
			}
			golden(t, "validate/host/"+name+".golden", stdout+stderr)
		})
	}
}
