package spec

import (
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

// loadWith loads base plus src with opts and returns the diagnostics as
// text.
func loadWith(t *testing.T, src string, opts Options) string {
	t.Helper()
	_, _, diags := Load([]Source{{Name: "t.hcl", Dir: "/specs", Bytes: []byte(base + src)}}, opts)
	return diags.Error()
}

// Problems that validate must catch because the merchant would otherwise be
// stopped and then fail to start (or take another service down).
func TestValidationGaps(t *testing.T) {
	t.Setenv("S_BIG", strings.Repeat("x", 100_000))
	ports := PortRange{Low: 8100, High: 8199}
	merchant := func(body string) string {
		return "merchant \"m\" {\n  package = \"app\"\n  channel = \"stable\"\n  database = \"db\"\n" + body + "\n}\n"
	}
	// exactly is an env value whose "NAME=value\0" is n bytes.
	exactly := func(n int) string { return strings.Repeat("v", n-len("K=")-1) }
	many := func(n int) string {
		var b strings.Builder
		b.WriteString("env = {\n")
		for i := range n {
			b.WriteString("  K" + string(rune('A'+i)) + " = env(\"S_BIG\")\n")
		}
		return b.String() + "}"
	}
	for _, tt := range []struct {
		name, src string
		opts      Options
		want      string // "" for valid
	}{
		{"NUL in an env value", merchant(`env = { K = "a\u0000b" }`), Options{}, "env.K holds a NUL byte"},
		{"NUL in a defaults env value", `defaults {
  env = { K = "a\u0000b" }
}
` + merchant(""), Options{}, "env.K holds a NUL byte"},
		{"env string at the kernel's limit", merchant(`env = { K = "` + exactly(MaxEnvString) + `" }`), Options{}, ""},
		{"env string over the kernel's limit", merchant(`env = { K = "` + exactly(MaxEnvString+1) + `" }`), Options{}, "env.K is 128.0 KiB with its name; the kernel refuses an environment string over 128 KiB (MAX_ARG_STRLEN)"},
		{"environment within the bound", merchant(many(10)), Options{}, ""},
		{"environment over the bound", merchant(many(11)), Options{}, `Merchant "m"'s environment (env with PORT, MERCHANT and DATABASE_URL) takes 1.0 MiB; steward refuses more than 1 MiB`},
		{"db_name postgres by default", `merchant "postgres" {
  package = "app"
  channel = "stable"
}
`, Options{}, `Merchant "postgres" would use the database "postgres", one of PostgreSQL's own`},
		{"db_name template0", merchant(`db_name = "template0"`), Options{}, `would use the database "template0"`},
		{"db_name template1", merchant(`db_name = "template1"`), Options{}, `would use the database "template1"`},
		{"db_name postgres_x", merchant(`db_name = "postgres_x"`), Options{}, ""},
		{"port steward listens on", merchant(`port = 8150`), Options{Ports: ports, ReservedPorts: map[int]string{8150: "api.listen"}}, `Merchant "m" asks for port 8150, which steward itself listens on (api.listen in the host config)`},
		{"another port", merchant(`port = 8151`), Options{Ports: ports, ReservedPorts: map[int]string{8150: "api.listen"}}, ""},
		{"reserved ports are not free for assignment", merchant("") + `merchant "n" {
  package = "app"
  channel = "stable"
}
`, Options{Ports: PortRange{Low: 8100, High: 8101}, ReservedPorts: map[int]string{8100: "api.listen"}}, "2 merchants need an assigned port but the runtime range 8100-8101 has only 1 free"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := loadWith(t, tt.src, tt.opts)
			switch {
			case tt.want == "" && got != "no diagnostics":
				t.Errorf("want no diagnostics, got %s", got)
			case tt.want != "" && !strings.Contains(got, tt.want):
				t.Errorf("want %q in\n%s", tt.want, got)
			}
		})
	}
}

func TestValidMerchantID(t *testing.T) {
	for id, ok := range map[string]bool{"acme": true, "a-1": true, "9lives": true, strings.Repeat("a", 63): true,
		"": false, "../x": false, "Acme": false, "-a": false, "a_b": false, "a/b": false, strings.Repeat("a", 64): false, "a\x00": false} {
		err := ValidMerchantID(id)
		if (err == nil) != ok {
			t.Errorf("ValidMerchantID(%q) = %v", id, err)
		}
		if err != nil && !strings.Contains(err.Error(), "lowercase letters, digits and '-'") {
			t.Errorf("error %q does not say what is valid", err)
		}
	}
}

func TestHostReservedPorts(t *testing.T) {
	h, _, diags := LoadHostBytes([]byte(`api { listen = "127.0.0.1:9999" }`), "/etc/steward.hcl")
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if got := h.ReservedPorts(); len(got) != 1 || got[9999] != "api.listen" {
		t.Errorf("ReservedPorts = %v", got)
	}
	h, _, _ = LoadHostBytes(nil, "/etc/steward.hcl")
	if got := h.ReservedPorts(); got[7070] != "api.listen" {
		t.Errorf("default ReservedPorts = %v", got)
	}
	h, _, _ = LoadHostBytes([]byte(`api { listen = "127.0.0.1:0" }`), "/etc/steward.hcl")
	if got := h.ReservedPorts(); len(got) != 0 {
		t.Errorf("port 0 reserves nothing: %v", got)
	}
	for _, bad := range []string{"7070", "localhost:http", "127.0.0.1:70000"} {
		_, _, diags := LoadHostBytes([]byte(`api { listen = "`+bad+`" }`), "/etc/steward.hcl")
		if !diags.HasErrors() || !strings.Contains(diags.Error(), "Invalid listen address") {
			t.Errorf("listen %q: %v", bad, diags)
		}
	}
}

// One unclosed quote in the file that declares the packages and databases
// gives a few diagnostics, not one per later line plus "unknown package"
// and "unknown database" for every merchant of the other files.
func TestAParseErrorDoesNotCascade(t *testing.T) {
	fleet := "database \"db\" {\n  dsn = \"postgres://h/x\"\n}\npackage \"app\" {\n  source = \"/p\"\n  channel \"stable\" {\n    version = \"1.0.0\n  }\n}\ndefaults {\n  package = \"app\"\n  channel = \"stable\"\n  database = \"db\"\n}\n" + strings.Repeat("# more\n", 30)
	var merchants strings.Builder
	for i := range 10 {
		fmt.Fprintf(&merchants, "merchant \"m%d\" {\n  database = \"db\"\n}\n", i)
	}
	_, _, diags := Load([]Source{{Name: "fleet.hcl", Bytes: []byte(fleet)}, {Name: "merchants.hcl", Bytes: []byte(merchants.String())}}, Options{})
	if !diags.HasErrors() || len(diags) > 5 {
		t.Fatalf("%d diagnostics, want the parse error and at most a few more:\n%v", len(diags), diags)
	}
	for _, d := range diags {
		switch d.Summary {
		case "Unknown database", "Unknown package", "Missing package", "No version":
			t.Errorf("a consequence of the parse error is reported: %s", d.Error())
		}
	}
	folded := false
	for _, d := range diags {
		folded = folded || strings.Contains(d.Detail, "more diagnostics like this one")
	}
	if !folded {
		t.Errorf("the folded repeats are not counted:\n%v", diags)
	}
}

// Merchants may share a database on one server (through two database
// blocks for the same server, or a db_name equal to another's id) only
// while they ask for the same release; the same name on another server is
// another database.
func TestSharedDatabaseNeedsOneVersion(t *testing.T) {
	src := `database "a" { dsn = "postgres://u@h1:5432/x" }
database "a2" { dsn = "host=h1 user=v" }
database "b" { dsn = "postgres://u@h2/x" }
package "p" {
  source = "/p"
  channel "s" { version = "1.0.0" }
  channel "t" { version = "1.1.0" }
}
defaults {
  package = "p"
  channel = "s"
}
merchant "one" { database = "a" }
merchant "same" {
  database = "a2"
  db_name  = "one"
}
merchant "newer" {
  database = "a"
  db_name  = "one"
  channel  = "t"
}
merchant "elsewhere" {
  database = "b"
  db_name  = "one"
  channel  = "t"
}
`
	_, _, diags := Load([]Source{{Name: "f.hcl", Bytes: []byte(src)}}, Options{})
	var shared []string
	for _, d := range diags {
		if d.Summary == "Database shared by different versions" {
			shared = append(shared, d.Detail)
		} else if d.Severity == hcl.DiagError {
			t.Errorf("unexpected: %s", d.Error())
		}
	}
	if len(shared) != 1 || !strings.Contains(shared[0], `"newer" and "one"`) || !strings.Contains(shared[0], "p 1.1.0 and p 1.0.0") {
		t.Errorf("shared database diagnostics: %q", shared)
	}
}
