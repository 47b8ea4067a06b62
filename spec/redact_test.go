package spec

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"regexp"
	"sort"
	"strings"
	"testing"

	"steward/internal/dsn"
)

func TestRedactor(t *testing.T) {
	r := NewRedactor("hunter2", "p@ss w\"rd", "abcdef", "cdefgh", "ab", "", "<tag>&")
	for _, tt := range []struct{ in, want string }{
		{"no secrets here", "no secrets here"},
		{"password hunter2 and hunter2", "password (sensitive) and (sensitive)"},
		{"xhunter2x", "x(sensitive)x"},
		// Overlapping values are replaced as one stretch: no part is left.
		{"abcdefgh", "(sensitive)"},
		{"zabcdefghz", "z(sensitive)z"},
		// The forms a value is printed in.
		{`quoted "p@ss w\"rd"`, `quoted "(sensitive)"`},
		{`url p%40ss%20w%22rd`, `url (sensitive)`},
		{`json "\u003ctag\u003e\u0026"`, `json "(sensitive)"`},
		// Short values only where they stand alone.
		{"ab", "(sensitive)"},
		{"x=ab, y", "x=(sensitive), y"},
		{"table cab abc", "table cab abc"},
	} {
		if got := r.Redact(tt.in); got != tt.want {
			t.Errorf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	var none *Redactor
	if none.Redact("hunter2") != "hunter2" || none.Len() != 0 {
		t.Error("a nil Redactor must redact nothing")
	}
	m := NewRedactor("first-secret").Merge(nil, NewRedactor("second-secret"))
	if got := m.Redact("first-secret second-secret"); got != "(sensitive) (sensitive)" {
		t.Errorf("merged: %q", got)
	}
}

func TestSecretParts(t *testing.T) {
	for dsn, want := range map[string][]string{
		"postgres://u:hunter2@h:5432/db?sslmode=disable": {"hunter2"},
		"postgres://u:p%40ss@h/db":                       {"p%40ss", "p@ss"},
		"postgres://u@h/db":                              nil,
		"postgres://h/db?password=qs-secret":             {"qs-secret"},
		"host=h user=u password=kv-secret dbname=x":      {"kv-secret"},
		"host=h password = 'with space\\'s' dbname=x":    {"with space's"},
		"host=h dbname=x":                                nil,
	} {
		got := secretParts(dsn)
		sort.Strings(got)
		got = dedup(got)
		sort.Strings(want)
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("secretParts(%q) = %q, want %q", dsn, got, want)
		}
	}
}

func dedup(s []string) []string {
	var out []string
	for i, v := range s {
		if i == 0 || s[i-1] != v {
			out = append(out, v)
		}
	}
	return out
}

func TestFingerprintWith(t *testing.T) {
	s := NewSecret("hunter2")
	k1, k2 := []byte("0123456789abcdef"), []byte("fedcba9876543210")
	a, b := s.FingerprintWith(k1), s.FingerprintWith(k2)
	if !regexp.MustCompile(`^hmac:[0-9a-f]{32}$`).MatchString(a) {
		t.Errorf("fingerprint %q is not 128 bits of hex", a)
	}
	if a == b {
		t.Error("the fingerprint does not depend on the key")
	}
	if a != s.FingerprintWith(k1) || a == NewSecret("hunter3").FingerprintWith(k1) {
		t.Error("the fingerprint is not a function of key and value")
	}
	if strings.Contains(a, "hunter2") {
		t.Error("the fingerprint reveals the value")
	}
	ev := EnvValue{Value: s, Sensitive: true}
	if ev.FingerprintWith(k1) != a || (EnvValue{Value: NewSecret("en_US")}).FingerprintWith(k1) != "en_US" {
		t.Error("EnvValue.FingerprintWith")
	}
}

// secretEnv sets an environment variable for env() for the test's length.
func secretEnv(t *testing.T, kv map[string]string) {
	t.Helper()
	for k, v := range kv {
		t.Setenv(k, v)
	}
}

// A value from env() stays secret whatever attribute it lands in: the
// field is marked, the fleet's Redactor knows it, and no diagnostic of Load
// shows it.
func TestEnvValuesStaySecretInEveryAttribute(t *testing.T) {
	secrets := map[string]string{
		"S_PACKAGE":  "pkg-s3cret-1",
		"S_CHANNEL":  "chan-s3cret-2",
		"S_VERSION":  "ver-s3cret-3!",
		"S_DATABASE": "db-s3cret-4",
		"S_DBNAME":   "DBNAME-S3CRET-5",
		"S_GRACE":    "grace-s3cret-6",
		"S_POLICY":   "policy-s3cret-7",
		"S_HTTP":     "http-s3cret-8",
		"S_PORT":     "port-s3cret-9",
		"S_STATUS":   "status-s3cret-10",
		"S_ENV":      "env-s3cret-11",
		"S_SOURCE":   "source-s3cret-12",
		"S_CHANVER":  "chanver-s3cret-13!",
		"S_DSN":      "postgres://u:dsn-s3cret-14@h/db",
	}
	secretEnv(t, secrets)
	src := `
database "db" { dsn = env("S_DSN") }
package "app" {
  source = env("S_SOURCE")
  channel "stable" { version = env("S_CHANVER") }
}
merchant "a" {
  package          = env("S_PACKAGE")
  channel          = env("S_CHANNEL")
  database         = env("S_DATABASE")
  db_name          = env("S_DBNAME")
  stop_grace       = env("S_GRACE")
  on_database_down = env("S_POLICY")
  port             = env("S_PORT")
  env              = { X = env("S_ENV") }
  health {
    http   = env("S_HTTP")
    status = env("S_STATUS")
  }
}
merchant "b" {
  package = "app"
  version = env("S_VERSION")
}
merchant "c" {
  package  = "app"
  channel  = "stable"
  database = "db"
}
`
	fl, _, diags := Load([]Source{{Name: "t.hcl", Dir: "/", Bytes: []byte(src)}}, Options{})
	if !diags.HasErrors() {
		t.Fatal("the fleet should be invalid")
	}
	all := diags.Error()
	for _, d := range diags {
		all += d.Summary + d.Detail
	}
	for k, v := range secrets {
		if strings.Contains(all, v) {
			t.Errorf("a diagnostic shows %s's value %q:\n%s", k, v, all)
		}
	}
	if !strings.Contains(all, Redacted) {
		t.Errorf("no value was redacted; the test no longer exercises redaction:\n%s", all)
	}
	red := fl.Redactor()
	for k, v := range secrets {
		if got := red.Redact("x " + v + " x"); got != "x "+Redacted+" x" {
			t.Errorf("the fleet's Redactor does not know %s: %q", k, got)
		}
	}
	if got := red.Redact("dsn-s3cret-14"); got != Redacted {
		t.Errorf("the DSN's password alone is not redacted: %q", got)
	}
	if got := red.Redact("postgres://u:dsn-s3cret-14@h/c"); strings.Contains(got, "s3cret") {
		t.Errorf("merchant c's DATABASE_URL is not redacted: %q", got)
	}
	a := fl.Merchants["a"]
	for _, f := range []string{"package", "channel", "database", "db_name", "stop_grace", "on_database_down", "port", "health.http", "health.status"} {
		if !a.SensitiveFields[f] {
			t.Errorf("field %s of a is not marked sensitive: %v", f, a.SensitiveFields)
		}
	}
	if !a.Env["X"].Sensitive {
		t.Error("env X from env() is not sensitive")
	}
	if !fl.Merchants["b"].SensitiveFields["version"] || fl.Merchants["b"].Shown("version", "x") != Redacted {
		t.Errorf("b's version: %v", fl.Merchants["b"].SensitiveFields)
	}
	c := fl.Merchants["c"]
	if !c.SensitiveFields["version"] || c.SensitiveFields["channel"] || c.SensitiveFields["package"] {
		t.Errorf("c follows a channel whose version came from env(): %v", c.SensitiveFields)
	}
	if p := fl.Packages["app"]; !p.SensitiveFields["source"] || !p.SensitiveFields["channel.stable"] {
		t.Errorf("package fields: %v", p.SensitiveFields)
	}
}

func TestSensitiveFieldsInherited(t *testing.T) {
	secretEnv(t, map[string]string{"S_CHANNEL": "stable", "S_GRACE": "7s"})
	fl, errs := load(t, base+`
defaults {
  package    = "app"
  channel    = env("S_CHANNEL")
  stop_grace = env("S_GRACE")
  health { http = env("S_UNSET_HTTP", "/h") }
}
merchant "inherits" {}
merchant "overrides" {
  stop_grace = "3s"
  version    = "1.0.0"
  health { http = "/plain" }
}
merchant "plain" { package = "app" }
`)
	if errs != "no diagnostics" {
		t.Fatal(errs)
	}
	in, ov := fl.Merchants["inherits"], fl.Merchants["overrides"]
	for _, f := range []string{"channel", "version", "stop_grace", "health.http"} {
		if !in.SensitiveFields[f] {
			t.Errorf("inherits: %s not marked: %v", f, in.SensitiveFields)
		}
	}
	if len(ov.SensitiveFields) != 0 {
		t.Errorf("overrides sets every marked field itself: %v", ov.SensitiveFields)
	}
	if fl.Merchants["plain"].SensitiveFields["package"] {
		t.Error("a literal package is marked")
	}
	if in.Shown("stop_grace", in.StopGrace.String()) != Redacted || ov.Shown("stop_grace", "3s") != "3s" {
		t.Error("Shown")
	}
}

// Literal secrets (a DSN, env keys listed in sensitive, the API token) are
// known to the Redactors too, with the DSN's password in both DSN forms.
func TestLiteralSecretsAreKnown(t *testing.T) {
	fl, errs := load(t, `
database "url" { dsn = "postgres://u:url-pw-1@h/postgres" }
database "kv"  { dsn = "host=h user=u password='kv pw 2' dbname=postgres" }
package "app" {
  source = "/x"
  channel "stable" { version = "1.0.0" }
}
defaults {
  env       = { SHARED = "shared-secret-3" }
  sensitive = ["SHARED"]
}
merchant "a" {
  package   = "app"
  channel   = "stable"
  database  = "kv"
  env       = { PASS = "pass-secret-4", PUBLIC = "public-5" }
  sensitive = ["PASS"]
}
`)
	if errs != "no diagnostics" {
		t.Fatal(errs)
	}
	red := fl.Redactor()
	for _, s := range []string{"url-pw-1", "kv pw 2", "shared-secret-3", "pass-secret-4", dsn.WithDatabase("host=h user=u password='kv pw 2' dbname=postgres", "a")} {
		if got := red.Redact("<" + s + ">"); got != "<"+Redacted+">" {
			t.Errorf("%q: %q", s, got)
		}
	}
	if got := red.Redact("public-5"); got != "public-5" {
		t.Errorf("a value not marked sensitive is redacted: %q", got)
	}

	h, _, diags := LoadHostBytes([]byte(`
state {
  postgres { dsn = "postgres://s:state-pw-6@h/steward" }
}
api {
  token          = "token-7"
  webhook_secret = env("S_HOOK", "hook-8")
}
source {
  git {
    url       = "https://user:git-pw-9@example.com/specs.git"
    token_env = "S_GIT_TOKEN"
  }
}
`), "/etc/steward.hcl")
	// state { postgres } is refused (no such backend yet), and its
	// refusal does not quote the DSN.
	if len(diags) != 1 || diags[0].Summary != "Unsupported state backend" || strings.Contains(diags.Error(), "state-pw-6") {
		t.Fatal(diags)
	}
	t.Setenv("S_GIT_TOKEN", "git-token-10")
	hr := h.Redactor()
	for _, s := range []string{"state-pw-6", "token-7", "hook-8", "git-pw-9", "git-token-10"} {
		if got := hr.Redact(s); got != Redacted {
			t.Errorf("host secret %q: %q", s, got)
		}
	}
}

// Diagnostics of the host config do not show the values of its secrets.
func TestHostDiagnosticsRedacted(t *testing.T) {
	t.Setenv("S_RESYNC", "resync-s3cret")
	_, _, diags := LoadHostBytes([]byte(`daemon { resync = env("S_RESYNC") }`), "/etc/steward.hcl")
	if !diags.HasErrors() || strings.Contains(diags.Error(), "resync-s3cret") || !strings.Contains(diags.Error(), Redacted) {
		t.Errorf("%v", diags)
	}
}

func TestSnippetLineSafe(t *testing.T) {
	sens := SensitiveNames([]byte(`defaults { sensitive = ["FOO", "BAR"] }`), []byte("sensitive = [\n  \"BAZ\",\n]"))
	if !sens["FOO"] || !sens["BAR"] || !sens["BAZ"] {
		t.Fatalf("SensitiveNames = %v", sens)
	}
	for line, safe := range map[string]bool{
		`  dsn = "postgres://u:pw@h/db"`:              false,
		`  dsn = "host=h password=pw"`:                false,
		`  dsn = "(sensitive)"`:                       true,
		`  dsn = env("DB_DSN")`:                       true,
		`  dsn = env("DB_DSN", "fallback")`:           false,
		`  dsn = env("DB_DSN", "(sensitive)")`:        true,
		`  version = env("V", "1.2.3")`:               false,
		`  version = env("V")`:                        true,
		`  env = { A = env("X"), B = "en" }`:          true,
		`  env = { A = env("X", "d"), B = "en" }`:     false,
		`  token = "abc"`:                             false,
		`  webhook_secret = "abc"`:                    false,
		`  env = { FOO = "x", LOCALE = "en" }`:        false,
		`  env = { LOCALE = "en", BAZ = "x" }`:        false,
		`  env = { LOCALE = "en", API_KEY = "x" }`:    false,
		`  env = { LOCALE = "en", FOO = env("X") }`:   true,
		`  env = { "FOO" = "x" }`:                     false,
		`  url = "https://u:p@example.com/x"`:         false,
		`  url = "https://u:(sensitive)@example.com"`: true,
		`  url = "https://example.com/x"`:             true,
		`  database = "db-nowhere"`:                   true,
		`  version  = "1.0.0" # token`:                true,
		`  x = "token = \"abc\""`:                     true,
		`merchant "acme" {`:                           true,
		`  sensitive = ["FOO"]`:                       true,
	} {
		if got := SnippetLineSafe(line, sens); got != safe {
			t.Errorf("SnippetLineSafe(%s) = %v, want %v", line, got, safe)
		}
	}
}

// The JSON forms of a value are redacted too (JSON escapes <, > and &).
func TestRedactorJSONForm(t *testing.T) {
	v := `a<b>&"c"`
	b, _ := json.Marshal(map[string]string{"detail": "value " + v})
	if got := NewRedactor(v).Redact(string(b)); strings.Contains(got, "a\\u003cb") || !strings.Contains(got, Redacted) {
		t.Errorf("%s", got)
	}
}

// api.token and api.webhook_secret are evaluated when used: the host config
// loads with their variables unset, and Value names the file, the line, the
// setting and the variable.
func TestDeferredAPISecrets(t *testing.T) {
	src := []byte(`api {
  listen         = "127.0.0.1:7070"
  token          = env("STEWARD_TEST_TOKEN")
  webhook_secret = env("STEWARD_TEST_HOOK", "hook-default")
}
`)
	h, _, diags := LoadHostBytes(src, "/etc/steward.hcl")
	if diags.HasErrors() {
		t.Fatalf("the host config must load with STEWARD_TEST_TOKEN unset: %v", diags)
	}
	_, err := h.API.Token.Value()
	if err == nil || !strings.HasPrefix(err.Error(), "/etc/steward.hcl:3:20: api.token: environment variable STEWARD_TEST_TOKEN is not set") {
		t.Errorf("Token.Value() error = %v", err)
	}
	if w := h.API.Token.Warning(); w == nil || w.Subject.Start.Line != 3 || !strings.Contains(w.Detail, "STEWARD_TEST_TOKEN") {
		t.Errorf("Warning = %v", w)
	}
	if v, err := h.API.WebhookSecret.Value(); err != nil || v.Reveal() != "hook-default" {
		t.Errorf("WebhookSecret = %v, %v", v, err)
	}
	func() {
		defer func() {
			if r := recover(); r == nil {
				t.Error("the deprecated Reveal returned instead of refusing to go on without the token")
			}
		}()
		h.API.Token.Reveal()
	}()
	t.Setenv("STEWARD_TEST_TOKEN", "t0ken")
	if v, err := h.API.Token.Value(); err != nil || v.Reveal() != "t0ken" || h.API.Token.Warning() != nil {
		t.Errorf("with the variable set: %v, %v", v, err)
	}
	if got := h.Redactor().Redact("Bearer t0ken"); got != "Bearer "+Redacted {
		t.Errorf("the host's Redactor does not know the token: %q", got)
	}
	if s := fmt.Sprintf("%v %s %+v", h.API.Token, h.API.Token, h.API); strings.Contains(s, "t0ken") {
		t.Errorf("printing reveals the token: %s", s)
	}

	h, _, _ = LoadHostBytes(nil, "/etc/steward.hcl")
	if v, err := h.API.Token.Value(); h.API.Token.IsSet() || err != nil || !v.IsZero() {
		t.Errorf("without a token: %v, %v", v, err)
	}
	// What can be checked without the variable still is.
	for src, want := range map[string]string{
		`api { token = ["x"] }`:        "token must be a string",
		`api { token = nosuch }`:       "Variables not allowed",
		`api { token = env(1, 2, 3) }`: "env takes a name and at most one default value",
	} {
		if _, _, diags := LoadHostBytes([]byte(src), "/etc/steward.hcl"); !diags.HasErrors() || !strings.Contains(diags.Error(), want) {
			t.Errorf("%s: %v, want %q", src, diags, want)
		}
	}
}

// A diagnostic that would quote a value in another form than it came from
// env() (a number or a duration formatted again, a domain in lower case)
// quotes Redacted instead: no Redactor knows that form.
func TestDerivedFormsOfSecretsNotQuoted(t *testing.T) {
	secretEnv(t, map[string]string{"S_PORT": "0099999", "S_DELAY": "0.001s", "S_DOMAIN": "Secret.Example", "S_RETRY": "1500ms", "S_SIZE": "0100"})
	_, _, diags := Load([]Source{{Name: "t.hcl", Dir: "/", Bytes: []byte(base + `
restart {
  initial_delay = env("S_DELAY")
}
merchant "m" {
  package = "app"
  channel = "stable"
  port    = env("S_PORT")
  domains = [env("S_DOMAIN")]
}
`)}}, Options{})
	_, _, hdiags := LoadHostBytes([]byte(`router {
  nginx {
    listen      = "127.0.0.1:8080"
    retry_after = env("S_RETRY")
  }
}
limits { package_size = env("S_SIZE") }
`), "/etc/steward.hcl")
	var all string
	for _, d := range append(diags, hdiags...) {
		all += d.Summary + ": " + d.Detail + "\n"
	}
	for _, derived := range []string{"99999", "1ms", "secret.example", "1.5s", "100 B"} {
		if strings.Contains(all, derived) {
			t.Errorf("a diagnostic quotes %q:\n%s", derived, all)
		}
	}
	for _, want := range []string{"Invalid port", "Invalid initial_delay", "Invalid domain", "Invalid retry_after", "Invalid package_size"} {
		if !strings.Contains(all, want) {
			t.Errorf("no %q diagnostic; the test checks nothing there:\n%s", want, all)
		}
	}
}

// BenchmarkRedact: a fleet of 10,000 merchants whose secrets share long
// prefixes (DATABASE_URLs of one server, tokens of one kind), and a text of
// about 1 MiB that mentions them often.
func BenchmarkRedact(b *testing.B) {
	var vals []string
	for i := range 10_000 {
		vals = append(vals, fmt.Sprintf("postgres://u:pw@db.example:5432/merchant_%05d", i), fmt.Sprintf("sk_live_%032d", i))
	}
	var text strings.Builder
	for i := 0; text.Len() < 1<<20; i++ {
		fmt.Fprintf(&text, "merchant m%05d postgres://u:pw@db.example:5432/other sk_live_ and more text\n", i)
	}
	s := text.String()
	b.Run("build", func(b *testing.B) {
		for b.Loop() {
			NewRedactor(vals...)
		}
	})
	r := NewRedactor(vals...)
	b.Run("redact", func(b *testing.B) {
		for b.Loop() {
			r.Redact(s)
		}
	})
}

// Redact agrees with a plain reference on random values and texts over a
// small alphabet, where values overlap, nest and share long prefixes.
func TestRedactMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	word := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = "ab-"[rng.IntN(3)]
		}
		return string(b)
	}
	for range 3000 {
		var vals []string
		for range 1 + rng.IntN(6) {
			vals = append(vals, word(1+rng.IntN(9)))
		}
		text := word(rng.IntN(40))
		if got, want := NewRedactor(vals...).Redact(text), referenceRedact(vals, text); got != want {
			t.Fatalf("Redact(%q) with %q = %q, want %q", text, vals, got, want)
		}
	}
}

// referenceRedact marks every occurrence of every value (short ones only
// where they stand alone) and replaces each stretch of marked bytes.
func referenceRedact(vals []string, s string) string {
	marked := make([]bool, len(s))
	for _, v := range vals {
		for i := 0; i+len(v) <= len(s); i++ {
			if s[i:i+len(v)] != v {
				continue
			}
			if len(v) < MinRedactLen && (i > 0 && isWordByte(s[i-1]) || i+len(v) < len(s) && isWordByte(s[i+len(v)])) {
				continue
			}
			for k := i; k < i+len(v); k++ {
				marked[k] = true
			}
		}
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		if !marked[i] {
			b.WriteByte(s[i])
			i++
			continue
		}
		for i < len(s) && marked[i] {
			i++
		}
		b.WriteString(Redacted)
	}
	return b.String()
}

func TestRedactCut(t *testing.T) {
	red := NewRedactor("p4ss-w0rd-QQ")
	for in, want := range map[string]string{
		"aaa p4ss-w0rd-QQ bbb": "aaa " + Redacted + " bbb",
		"aaa p4ss-w0":          "aaa " + Redacted,
		"aaa p4s":              "aaa p4s", // shorter than MinRedactLen
		"aaa p4ss":             "aaa " + Redacted,
		"nothing here":         "nothing here",
	} {
		if got := red.RedactCut(in); got != want {
			t.Errorf("RedactCut(%q) = %q, want %q", in, got, want)
		}
	}
}
