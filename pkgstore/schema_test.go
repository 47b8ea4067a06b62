package pkgstore

import (
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

const schemaManifest = `command = ["bin/app", "--port=${port}"]
migrate = ["bin/app", "migrate"]
schema {
  version = 2
  migrate = ["bin/app", "migrate", "up"]
  down    = ["bin/app", "migrate", "down", "${to}"]
  timeout = "90s"
}
`

func TestParseSchema(t *testing.T) {
	tests := []struct {
		name, src string
		want      Schema
		migrate   []string // Manifest.SchemaMigrate
		down      []string // DownArgv(1), nil without down
	}{
		{
			name:    "full",
			src:     schemaManifest,
			want:    Schema{Version: 2, Migrate: []string{"bin/app", "migrate", "up"}, Query: DefaultSchemaQuery, Timeout: 90 * time.Second},
			migrate: []string{"bin/app", "migrate", "up"},
			down:    []string{"bin/app", "migrate", "down", "1"},
		},
		{
			name:    "defaults, top-level migrate",
			src:     "command = [\"bin/app\"]\nmigrate = [\"bin/app\", \"migrate\"]\nschema {\n  version = 3\n}\n",
			want:    Schema{Version: 3, Query: DefaultSchemaQuery, Timeout: DefaultSchemaTimeout},
			migrate: []string{"bin/app", "migrate"},
		},
		{
			name: "version 0 needs no migrate",
			src:  "command = [\"bin/app\"]\nschema { version = 0 }\n",
			want: Schema{Version: 0, Query: DefaultSchemaQuery, Timeout: DefaultSchemaTimeout},
		},
		{
			name:    "query",
			src:     "command = [\"bin/app\"]\nmigrate = [\"bin/app\"]\nschema {\n  version = 1\n  query = \"SELECT v FROM meta\"\n}\n",
			want:    Schema{Version: 1, Query: "SELECT v FROM meta", Timeout: DefaultSchemaTimeout},
			migrate: []string{"bin/app"},
		},
		{
			name:    "command",
			src:     "command = [\"bin/app\"]\nschema {\n  version = 1\n  migrate = [\"bin/m\", \"up\"]\n  command = [\"bin/m\", \"version\"]\n}\n",
			want:    Schema{Version: 1, Migrate: []string{"bin/m", "up"}, Command: []string{"bin/m", "version"}, Timeout: DefaultSchemaTimeout},
			migrate: []string{"bin/m", "up"},
		},
		{
			name:    "to inside a string",
			src:     "command = [\"bin/app\"]\nmigrate = [\"bin/app\"]\nschema {\n  version = 5\n  down = [\"bin/app\", \"--to=${to}\", \"--from=5\"]\n}\n",
			want:    Schema{Version: 5, Query: DefaultSchemaQuery, Timeout: DefaultSchemaTimeout},
			migrate: []string{"bin/app"},
			down:    []string{"bin/app", "--to=1", "--from=5"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, diags := ParseManifest([]byte(tt.src), "package.hcl")
			if diags.HasErrors() {
				t.Fatal(diags)
			}
			s := m.Schema
			if s == nil {
				t.Fatal("Schema is nil")
			}
			if s.Version != tt.want.Version || !slices.Equal(s.Migrate, tt.want.Migrate) || s.Query != tt.want.Query ||
				!slices.Equal(s.Command, tt.want.Command) || s.Timeout != tt.want.Timeout {
				t.Errorf("Schema = %+v\n     want %+v", *s, tt.want)
			}
			if got := m.SchemaMigrate(); !slices.Equal(got, tt.migrate) {
				t.Errorf("SchemaMigrate = %q, want %q", got, tt.migrate)
			}
			if s.HasDown() != (tt.down != nil) {
				t.Errorf("HasDown = %v", s.HasDown())
			}
			got, err := s.DownArgv(1)
			if err != nil || !slices.Equal(got, tt.down) {
				t.Errorf("DownArgv(1) = %q, %v; want %q", got, err, tt.down)
			}
		})
	}

	m, diags := ParseManifest([]byte(goodManifest), "package.hcl")
	if diags.HasErrors() || m.Schema != nil || m.SchemaMigrate() != nil {
		t.Errorf("without a schema block: %+v, %v", m, diags)
	}
	var none *Schema
	if none.HasDown() {
		t.Error("nil Schema has down")
	}
	if argv, err := none.DownArgv(1); argv != nil || err != nil {
		t.Errorf("nil Schema DownArgv = %q, %v", argv, err)
	}
}

func TestDownArgv(t *testing.T) {
	m, diags := ParseManifest([]byte(schemaManifest), "package.hcl")
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	for to, want := range map[int64]string{0: "0", 1: "1", 12345678901: "12345678901"} {
		argv, err := m.Schema.DownArgv(to)
		if err != nil || !slices.Equal(argv, []string{"bin/app", "migrate", "down", want}) {
			t.Errorf("DownArgv(%d) = %q, %v", to, argv, err)
		}
	}
	if _, err := m.Schema.DownArgv(-1); err == nil {
		t.Error("DownArgv(-1) succeeded")
	}
}

func TestReleaseSchemaCommands(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "app", "1.0.0")
	release := func(src string) *Release {
		t.Helper()
		m, diags := ParseManifest([]byte(src), "package.hcl")
		if diags.HasErrors() {
			t.Fatal(diags)
		}
		return &Release{Name: "app", Version: "1.0.0", Dir: dir, Manifest: m}
	}
	abs := func(p string) string { return filepath.Join(dir, p) }

	r := release(schemaManifest)
	if got, want := r.SchemaMigrateCommand(), []string{abs("bin/app"), "migrate", "up"}; !slices.Equal(got, want) {
		t.Errorf("SchemaMigrateCommand = %q, want %q", got, want)
	}
	got, err := r.SchemaDownCommand(1)
	if want := []string{abs("bin/app"), "migrate", "down", "1"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("SchemaDownCommand(1) = %q, %v; want %q", got, err, want)
	}
	if _, err := r.SchemaDownCommand(-1); err == nil || !strings.HasPrefix(err.Error(), "app 1.0.0: ") {
		t.Errorf("SchemaDownCommand(-1) error = %v", err)
	}
	if got := r.SchemaVersionCommand(); got != nil {
		t.Errorf("SchemaVersionCommand with the default query = %q", got)
	}
	// The manifest keeps relative paths.
	if r.Manifest.Schema.Migrate[0] != "bin/app" || r.MigrateCommand()[0] != abs("bin/app") {
		t.Errorf("Migrate = %q, MigrateCommand = %q", r.Manifest.Schema.Migrate, r.MigrateCommand())
	}

	r = release("command = [\"bin/app\"]\nmigrate = [\"bin/app\", \"migrate\"]\nschema {\n  version = 1\n  command = [\"bin/v\", \"-q\"]\n}\n")
	if got, want := r.SchemaMigrateCommand(), []string{abs("bin/app"), "migrate"}; !slices.Equal(got, want) {
		t.Errorf("SchemaMigrateCommand falling back = %q, want %q", got, want)
	}
	if got, err := r.SchemaDownCommand(0); got != nil || err != nil {
		t.Errorf("SchemaDownCommand without down = %q, %v", got, err)
	}
	if got, want := r.SchemaVersionCommand(), []string{abs("bin/v"), "-q"}; !slices.Equal(got, want) {
		t.Errorf("SchemaVersionCommand = %q, want %q", got, want)
	}

	r = release(goodManifest)
	if r.SchemaMigrateCommand() != nil || r.SchemaVersionCommand() != nil {
		t.Error("schema commands without a schema block")
	}
	if got, err := r.SchemaDownCommand(0); got != nil || err != nil {
		t.Errorf("SchemaDownCommand without a schema block = %q, %v", got, err)
	}
}

// The diagnostics of bad schema blocks, file:line,col-col first.
func TestParseSchemaErrors(t *testing.T) {
	const file = "invoicing-1.2.0.tar.gz/package.hcl"
	const head = "command = [\"bin/app\"]\nmigrate = [\"bin/app\"]\n"
	tests := []badManifest{
		{head + "schema {}\n", `:3,8-8: Missing required argument; The argument "version" is required, but no definition was found.`},
		{head + "schema {\n  version = 1\n  foo = 2\n}\n", `:5,3-6: Unsupported argument; An argument named "foo" is not expected here.`},
		{head + "schema {\n  version = 1\n  bar {}\n}\n", `:5,3-6: Unsupported block type; Blocks of type "bar" are not expected here.`},
		{head + "schema \"x\" {\n  version = 1\n}\n", `:3,8-11: Extraneous label for schema; No labels are expected for schema blocks.`},
		{head + "schema { version = 1 }\nschema { version = 2 }\n", `:4,1-7: Duplicate schema block; A schema block was already defined at ` + file + `:3,1-7.`},
		{head + "schema { version = -1 }\n", `:3,20-22: Invalid schema version; version must be a whole number >= 0, the schema version the release needs.`},
		{head + "schema { version = 1.5 }\n", `:3,20-23: Invalid schema version;`},
		{head + "schema { version = \"two\" }\n", `:3,20-25: Invalid schema version;`},
		{head + "schema { version = null }\n", `:3,20-24: Invalid schema version;`},
		{head + "schema { version = 1e30 }\n", `:3,20-24: Invalid schema version;`},
		{head + "schema {\n  version = 1\n  query = \"SELECT 1\"\n  command = [\"bin/app\"]\n}\n", `:6,3-24: Conflicting schema version checks; Set either query or command, not both.`},
		{head + "schema {\n  version = 1\n  query = \" \"\n}\n", `:5,11-14: Invalid schema query; query must be an SQL statement returning the version`},
		{head + "schema {\n  version = 1\n  query = [1]\n}\n", `:5,11-14: Invalid schema query; query must be a string, not tuple.`},
		{head + "schema {\n  version = 1\n  migrate = [\"bin/app\", \"${to}\"]\n}\n", `:5,25-32: Invalid schema migrate element; schema migrate[1]: ${to} is only available in schema down.`},
		{head + "schema {\n  version = 1\n  command = [\"bin/app\", \"${to}\"]\n}\n", `:5,25-32: Invalid schema command element; schema command[1]: ${to} is only available in schema down.`},
		{"command = [\"bin/app\", \"${to}\"]\n", `:1,26-28: Unknown variable; There is no variable named "to".`},
		{"command = [\"bin/app\"]\nmigrate = [\"bin/app\", \"${to}\"]\n", `:2,26-28: Variables not allowed;`},
		{head + "schema {\n  version = 1\n  migrate = [\"bin/app\", \"${port}\"]\n}\n", `:5,28-32: Variables not allowed;`},
		{head + "schema {\n  version = 1\n  migrate = [\"../app\"]\n}\n", `:5,14-22: Invalid schema migrate element; schema migrate[0]: the program "../app" must be a path inside the release, like "bin/app".`},
		{head + "schema {\n  version = 1\n  command = [\"/bin/psql\"]\n}\n", `:5,14-25: Invalid schema command element; schema command[0]: the program "/bin/psql" must be a path inside the release`},
		{head + "schema {\n  version = 1\n  migrate = []\n}\n", `:5,13-15: Empty schema migrate; schema migrate needs at least the program to run.`},
		{head + "schema {\n  version = 1\n  command = \"bin/v\"\n}\n", `:5,13-20: Invalid schema command; schema command must be a list of strings, like ["bin/app", "migrate"].`},
		{head + "schema {\n  version = 1\n  down = [\"${to}\"]\n}\n", `:5,11-18: Invalid schema down element; schema down[0]: the program must be a literal path, without ${...}.`},
		{head + "schema {\n  version = 1\n  down = [\"/x\", \"${to}\"]\n}\n", `:5,11-15: Invalid schema down element; schema down[0]: the program "/x" must be a path inside the release`},
		{head + "schema {\n  version = 1\n  down = [\"bin/app\", \"down\"]\n}\n", `:5,10-29: Invalid schema down; down must pass the version to migrate down to, like ["bin/app", "migrate", "down", "${to}"].`},
		{head + "schema {\n  version = 1\n  down = [\"bin/app\", \"${port}\"]\n}\n", `:5,25-29: Unknown variable; There is no variable named "port".`},
		{head + "schema {\n  version = 1\n  down = [\"bin/app\", \"${to + \"x\"}\"]\n}\n", `:5,30-33: Invalid operand;`},
		{head + "schema {\n  version = 1\n  down = [\"bin/app\", [\"${to}\"]]\n}\n", `:5,22-31: Invalid schema down element; schema down[1]: must be a string, not tuple.`},
		{head + "schema {\n  version = 1\n  timeout = \"soon\"\n}\n", `:5,13-19: Invalid schema timeout; timeout must be a positive duration, like "5m" or "90s".`},
		{head + "schema {\n  version = 1\n  timeout = \"0s\"\n}\n", `:5,13-17: Invalid schema timeout;`},
		{head + "schema {\n  version = 1\n  timeout = \"-1m\"\n}\n", `:5,13-18: Invalid schema timeout;`},
		{"command = [\"bin/app\"]\nschema {\n  version = 1\n}\n", `:2,1-7: No schema migrate command; A release that needs schema version 1 or later needs a command to migrate there: set migrate in the schema block or at the top level.`},
	}
	checkRefused(t, file, tests)
}

// Every problem of a schema block is reported, not just the first.
func TestParseSchemaReportsAll(t *testing.T) {
	src := "command = [\"bin/app\"]\nschema {\n  version = -1\n  migrate = [\"/m\"]\n  query = \"q\"\n  command = [\"bin/v\"]\n  timeout = \"x\"\n  foo = 1\n}\n"
	lines, diags := diagLines(src)
	if !slices.Equal(lines, []int{3, 4, 6, 7, 8}) {
		t.Errorf("diagnostics on lines %v, want [3 4 6 7 8]: %v", lines, diags)
	}
}

// Installing checks the schema programs like the others, and the installed
// release gives absolute schema commands.
func TestInstallSchema(t *testing.T) {
	ctx := testContext(t)
	src := t.TempDir()
	writePackage(t, src, "app", "1.0.0", appEntries(schemaManifest))
	writePackage(t, src, "app", "2.0.0", appEntries(strings.Replace(schemaManifest, `down    = ["bin/app"`, `down    = ["bin/down"`, 1)))
	writePackage(t, src, "app", "3.0.0", appEntries("command = [\"bin/app\"]\nschema {\n  version = 0\n  command = [\"share/readme.txt\"]\n}\n"))
	s := openStore(t)

	r, err := s.Install(ctx, src, "app", "1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	if got := r.SchemaMigrateCommand(); len(got) != 3 || got[0] != filepath.Join(r.Dir, "bin/app") {
		t.Errorf("SchemaMigrateCommand = %q", got)
	}
	if r, err = s.Get("app", "1.0.0"); err != nil || r.Manifest.Schema == nil || r.Manifest.Schema.Version != 2 || !r.Manifest.Schema.HasDown() {
		t.Errorf("Get: %+v, %v", r, err)
	}

	_, err = s.Install(ctx, src, "app", "2.0.0")
	if err == nil || !errors.Is(err, ErrBadPackage) || !strings.Contains(err.Error(), "schema down program bin/down is not in the package") {
		t.Errorf("Install with a missing down program: %v", err)
	}
	_, err = s.Install(ctx, src, "app", "3.0.0")
	if err == nil || !errors.Is(err, ErrBadPackage) || !strings.Contains(err.Error(), "schema command program share/readme.txt is not an executable file") {
		t.Errorf("Install with a schema command that is not executable: %v", err)
	}
}
