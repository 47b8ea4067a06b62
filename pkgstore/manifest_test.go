package pkgstore

import (
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"

	"steward/spec"
)

func TestParseManifest(t *testing.T) {
	m, diags := ParseManifest([]byte(goodManifest), "package.hcl")
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if m.Health != (Health{HTTP: "/health"}) {
		t.Errorf("Health = %+v", m.Health)
	}
	if !slices.Equal(m.Migrate, []string{"bin/app", "migrate"}) {
		t.Errorf("Migrate = %q", m.Migrate)
	}

	m, diags = ParseManifest([]byte(`command = ["bin/app"]`), "package.hcl")
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if m.Health != (Health{TCP: true}) || m.Migrate != nil {
		t.Errorf("defaults: Health = %+v, Migrate = %q", m.Health, m.Migrate)
	}

	m, diags = ParseManifest([]byte("command = [\"bin/app\"]\nhealth {\n  tcp = true\n}\n"), "package.hcl")
	if diags.HasErrors() || m.Health != (Health{TCP: true}) {
		t.Errorf("tcp = true: %+v, %v", m, diags)
	}
}

// The diagnostics of bad manifests, file:line,col-col first.
func TestParseManifestErrors(t *testing.T) {
	const file = "invoicing-1.2.0.tar.gz/package.hcl"
	tests := []badManifest{
		{``, `:1,1-1: Missing required argument; The argument "command" is required, but no definition was found.`},
		{`command = []`, `:1,11-13: Empty command; command needs at least the program to run.`},
		{`command = "bin/app"`, `:1,11-20: Invalid command; command must be a list of strings, like ["bin/app", "--port=${port}"].`},
		{"command = [\"bin/app\"]\nfoo = 1\n", `:2,1-4: Unsupported argument; An argument named "foo" is not expected here.`},
		{"command = [\"bin/app\"]\nblock \"x\" {}\n", `:2,1-6: Unsupported block type; Blocks of type "block" are not expected here.`},
		{"command = [\"bin/app\"]\nhealth {\n  http = \"health\"\n}\n", `:3,10-18: Invalid health http; http must be a path starting with "/", like "/health".`},
		{"command = [\"bin/app\"]\nhealth {\n  http = \"/h\"\n  tcp = true\n}\n", `:4,3-13: Conflicting health checks; Set either http or tcp = true, not both.`},
		{"command = [\"bin/app\"]\nhealth {}\n", `:2,1-7: No health check; A health block needs http = "/path" or tcp = true; leave the block out for tcp.`},
		{"command = [\"bin/app\"]\nhealth {\n  tcp = false\n}\n", `:2,1-7: No health check;`},
		{"command = [\"bin/app\"]\nhealth {\n  tcp = \"maybe\"\n}\n", `:3,9-16: Invalid health tcp; tcp must be true or false.`},
		{"command = [\"bin/app\"]\nhealth { tcp = true }\nhealth { tcp = true }\n", `:3,1-7: Duplicate health block; A health block was already defined at ` + file + `:2,1-7.`},
		{`command = ["bin/app", "${prot}"]`, `:1,26-30: Unknown variable; There is no variable named "prot". Did you mean "port"?`},
		{`command = ["${port}"]`, `:1,12-21: Invalid command element; command[0]: the program must be a literal path, without ${...}.`},
		{`command = ["../x"]`, `:1,12-18: Invalid command element; command[0]: the program "../x" must be a path inside the release, like "bin/app".`},
		{`command = ["/bin/sh"]`, `:1,12-21: Invalid command element; command[0]: the program "/bin/sh" must be a path inside the release`},
		{`command = ["bin/app", [1]]`, `:1,23-26: Invalid command element; command[1]: must be a string, not tuple.`},
		{`command = ["bin/app", null]`, `:1,23-27: Invalid command element; command[1]: must not be null.`},
		{`command = ["bin/app", upper("x")]`, `:1,23-33: Function calls not allowed;`},
		{"command = [\"bin/app\"]\nmigrate = [\"bin/app\", \"${merchant}\"]\n", `:2,26-34: Variables not allowed;`},
		{"command = [\"bin/app\"]\nmigrate = []\n", `:2,11-13: Empty migrate;`},
		{"command = [\"bin/app\"\n", `:1,11-12: Unterminated tuple constructor expression;`},
	}
	checkRefused(t, file, tests)
}

// A manifest over the size or depth limit is refused before it is parsed,
// with a diagnostic that names the file and the limit.
func TestParseManifestLimits(t *testing.T) {
	const file = "invoicing-1.2.0.tar.gz/package.hcl"
	deep := "command = [\"bin/app\", " + strings.Repeat("(", 40_000) + "\"x\"" + strings.Repeat(")", 40_000) + "]\n"
	m, diags := ParseManifest([]byte(deep), file)
	if m != nil || !diags.HasErrors() || diags[0].Summary != "Nesting too deep" || diags[0].Subject.Filename != file ||
		!strings.Contains(diags[0].Detail, "more than 64 levels") || !strings.Contains(diags[0].Detail, "limits.spec_depth") {
		t.Errorf("deep manifest: %v", diags)
	}
	shallow := "command = [\"bin/app\", " + strings.Repeat("(", 20) + "\"x\"" + strings.Repeat(")", 20) + "]\n"
	if _, diags := ParseManifestLimits([]byte(shallow), file, spec.Limits{Depth: 16}); !diags.HasErrors() || !strings.Contains(diags[0].Detail, "more than 16 levels") {
		t.Errorf("Depth 16: %v", diags)
	}
	if _, diags := ParseManifestLimits([]byte(shallow), file, spec.Limits{Depth: 32}); diags.HasErrors() {
		t.Errorf("Depth 32: %v", diags)
	}
	big := goodManifest + "# " + strings.Repeat("x", 2000) + "\n"
	if _, diags := ParseManifestLimits([]byte(big), file, spec.Limits{FileSize: 1024}); !diags.HasErrors() || diags[0].Summary != "File too large" || !strings.Contains(diags[0].Detail, "limit of 1 KiB") {
		t.Errorf("FileSize 1024: %v", diags)
	}
}

// Every problem is reported, not just the first.
func TestParseManifestReportsAll(t *testing.T) {
	src := "command = [\"/abs\", null]\nfoo = 1\nhealth {}\n"
	lines, diags := diagLines(src)
	if !slices.Equal(lines, []int{1, 1, 2, 3}) {
		t.Errorf("diagnostics on lines %v, want [1 1 2 3]: %v", lines, diags)
	}
}

func TestArgv(t *testing.T) {
	src := `command = ["bin/app", "--port=${port}", "${port}", "--name=${merchant}", "${merchant}-${port + 1}", "--plain"]`
	m, diags := ParseManifest([]byte(src), "package.hcl")
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	got, err := m.Argv(8101, "acme")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"bin/app", "--port=8101", "8101", "--name=acme", "acme-8102", "--plain"}
	if !slices.Equal(got, want) {
		t.Errorf("Argv = %q, want %q", got, want)
	}
	// Argv is bound per call, never remembered.
	got, _ = m.Argv(9000, "globex")
	if got[1] != "--port=9000" || got[3] != "--name=globex" {
		t.Errorf("second Argv = %q", got)
	}
	for _, port := range []int{0, -1, 65536} {
		if _, err := m.Argv(port, "acme"); err == nil {
			t.Errorf("Argv(%d) succeeded", port)
		}
	}
}

// badManifest is a manifest that must be refused, and the start of its
// diagnostics after the file name.
type badManifest struct{ src, want string }

// checkRefused parses each manifest as file and checks that it is refused
// with diagnostics that start with file+want.
func checkRefused(t *testing.T, file string, tests []badManifest) {
	t.Helper()
	for _, tt := range tests {
		m, diags := ParseManifest([]byte(tt.src), file)
		if m != nil || !diags.HasErrors() {
			t.Errorf("%q: manifest %v, diagnostics %v; want an error", tt.src, m, diags)
			continue
		}
		if got := diags.Error(); !strings.HasPrefix(got, file+tt.want) {
			t.Errorf("%q:\n got %s\nwant %s%s", tt.src, got, file, tt.want)
		}
	}
}

// diagLines parses src and returns the lines its diagnostics point at,
// sorted, and the diagnostics.
func diagLines(src string) ([]int, hcl.Diagnostics) {
	_, diags := ParseManifest([]byte(src), "package.hcl")
	var lines []int
	for _, d := range diags {
		lines = append(lines, d.Subject.Start.Line)
	}
	slices.Sort(lines)
	return lines, diags
}
