package pkgstore

import (
	"fmt"
	"math"
	"math/big"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// DefaultSchemaQuery reads the current schema version of a database when a
// schema block sets neither query nor command.
const DefaultSchemaQuery = "SELECT coalesce(max(version), 0) FROM schema_migrations"

// DefaultSchemaTimeout bounds a migration when a schema block sets no
// timeout.
const DefaultSchemaTimeout = 5 * time.Minute

// Schema is the database schema a release needs, from the manifest's
// optional schema block:
//
//	schema {
//	  version = 2                                              # required, an integer >= 0
//	  migrate = ["bin/invoicing", "migrate", "up"]             # optional; default: the top-level migrate
//	  down    = ["bin/invoicing", "migrate", "down", "${to}"]  # optional
//	  query   = "SELECT ..."                                   # or command = [...], not both
//	  timeout = "5m"
//	}
//
// Programs are literal paths inside the release, as in command. ${to} (a
// number) is the only variable, and only down may use it (and must).
type Schema struct {
	// Version is the schema version the release needs, >= 0.
	Version int64

	// Migrate is the schema block's own command migrating forward to
	// Version, Migrate[0] relative to the release directory; nil when the
	// block has none and the top-level migrate is to be used (see
	// Manifest.SchemaMigrate and Release.SchemaMigrateCommand).
	Migrate []string

	// Query is the SQL statement reading the current version (a single
	// integer). It is DefaultSchemaQuery unless query or command is set;
	// it is empty exactly when Command is set.
	Query string

	// Command is a program printing the current version instead, run with
	// the merchant's environment; Command[0] is relative to the release
	// directory. Nil unless command is set.
	Command []string

	// Timeout bounds one migration (up or down); DefaultSchemaTimeout
	// unless timeout is set. Always > 0.
	Timeout time.Duration

	// down holds the elements of down as expressions, so that ${to} is
	// bound by DownArgv; nil without down. Its first element is a
	// literal relative path, and some element refers to to.
	down []hcl.Expression
}

// HasDown reports whether the release can migrate its schema down.
func (s *Schema) HasDown() bool { return s != nil && len(s.down) > 0 }

// DownArgv returns the down command with ${to} bound to to, argv[0]
// relative to the release directory; nil and no error when there is no
// down command. to must be >= 0.
func (s *Schema) DownArgv(to int64) ([]string, error) {
	if !s.HasDown() {
		return nil, nil
	}
	if to < 0 {
		return nil, fmt.Errorf("schema version %d to migrate down to is negative", to)
	}
	return evalArgv(s.down, "schema down", map[string]cty.Value{"to": cty.NumberIntVal(to)})
}

// SchemaMigrate returns the command migrating the schema forward, argv[0]
// relative to the release directory: the schema block's migrate, else the
// top-level migrate; nil without either, and without a schema block.
func (m *Manifest) SchemaMigrate() []string {
	if m.Schema == nil {
		return nil
	}
	if len(m.Schema.Migrate) > 0 {
		return m.Schema.Migrate
	}
	return m.Migrate
}

// SchemaMigrateCommand returns the command migrating the merchant's
// database forward to the release's schema version (see
// Manifest.SchemaMigrate) with argv[0] an absolute path inside r.Dir, or
// nil when the manifest has no schema block.
func (r *Release) SchemaMigrateCommand() []string {
	return r.abs(r.Manifest.SchemaMigrate())
}

// SchemaDownCommand returns the command migrating the merchant's database
// down to schema version to, argv[0] an absolute path inside r.Dir; nil and
// no error when the release has no down command.
func (r *Release) SchemaDownCommand(to int64) ([]string, error) {
	argv, err := r.Manifest.Schema.DownArgv(to)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", r.Name, r.Version, err)
	}
	return r.abs(argv), nil
}

// SchemaVersionCommand returns the command printing the current schema
// version, argv[0] an absolute path inside r.Dir; nil when the version is
// read with Schema.Query or there is no schema block.
func (r *Release) SchemaVersionCommand() []string {
	if r.Manifest.Schema == nil {
		return nil
	}
	return r.abs(r.Manifest.Schema.Command)
}

// abs returns a copy of argv with argv[0] joined to r.Dir, or nil.
func (r *Release) abs(argv []string) []string {
	if len(argv) == 0 {
		return nil
	}
	argv = slices.Clone(argv)
	argv[0] = filepath.Join(r.Dir, argv[0])
	return argv
}

// programs returns the programs of the manifest (paths relative to the
// release) with what names them in errors, for checking that they exist.
func (m *Manifest) programs() []struct{ what, path string } {
	progs := []struct{ what, path string }{
		{"command", m.program()},
		{"migrate", firstOr(m.Migrate)},
	}
	if s := m.Schema; s != nil {
		progs = append(progs,
			struct{ what, path string }{"schema migrate", firstOr(s.Migrate)},
			struct{ what, path string }{"schema command", firstOr(s.Command)},
		)
		if s.HasDown() {
			progs = append(progs, struct{ what, path string }{"schema down", literal(s.down[0])})
		}
	}
	return progs
}

// literal returns the value of a literal string expression, or "".
func literal(e hcl.Expression) string {
	v, diags := e.Value(nil)
	if diags.HasErrors() || v.IsNull() || !v.IsKnown() {
		return ""
	}
	s, err := convert.Convert(v, cty.String)
	if err != nil {
		return ""
	}
	return s.AsString()
}

var schemaBlockSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "version", Required: true},
		{Name: "migrate"},
		{Name: "down"},
		{Name: "query"},
		{Name: "command"},
		{Name: "timeout"},
	},
}

// downCtx binds to to an unknown number, for checking down without a
// version.
var downCtx = &hcl.EvalContext{Variables: map[string]cty.Value{"to": cty.UnknownVal(cty.Number)}}

// parseSchema parses a schema block. topMigrate is the top-level migrate,
// the fallback for the block's own.
func parseSchema(b *hcl.Block, topMigrate bool) (*Schema, hcl.Diagnostics) {
	content, diags := b.Body.Content(schemaBlockSchema)
	s := &Schema{Query: DefaultSchemaQuery, Timeout: DefaultSchemaTimeout}

	if attr, ok := content.Attributes["version"]; ok {
		v, d := attr.Expr.Value(nil)
		diags = append(diags, d...)
		if !d.HasErrors() {
			n, msg := schemaVersion(v)
			if msg != "" {
				diags = append(diags, attrDiag(attr, "Invalid schema version", msg))
			}
			s.Version = n
		}
	}
	migrate, hasMigrate := content.Attributes["migrate"]
	if hasMigrate {
		var d hcl.Diagnostics
		s.Migrate, d = literalArgv(migrate, "schema migrate", true)
		diags = append(diags, d...)
	}
	if attr, ok := content.Attributes["down"]; ok {
		var d hcl.Diagnostics
		s.down, d = parseDown(attr)
		diags = append(diags, d...)
	}
	query, hasQuery := content.Attributes["query"]
	command, hasCommand := content.Attributes["command"]
	switch {
	case hasQuery && hasCommand:
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Conflicting schema version checks",
			Detail:   "Set either query or command, not both.",
			Subject:  command.Range.Ptr(),
		})
	case hasQuery:
		v, d := query.Expr.Value(nil)
		diags = append(diags, d...)
		if !d.HasErrors() {
			str, err := toString(v)
			switch {
			case err != nil:
				diags = append(diags, attrDiag(query, "Invalid schema query", "query "+err.Error()+"."))
			case strings.TrimSpace(str.AsString()) == "":
				diags = append(diags, attrDiag(query, "Invalid schema query", "query must be an SQL statement returning the version, like \""+DefaultSchemaQuery+"\"."))
			default:
				s.Query = str.AsString()
			}
		}
	case hasCommand:
		var d hcl.Diagnostics
		s.Command, d = literalArgv(command, "schema command", true)
		diags = append(diags, d...)
		s.Query = ""
	}
	if attr, ok := content.Attributes["timeout"]; ok {
		v, d := attr.Expr.Value(nil)
		diags = append(diags, d...)
		if !d.HasErrors() {
			str, err := toString(v)
			var dur time.Duration
			if err == nil {
				dur, err = time.ParseDuration(str.AsString())
			}
			if err != nil || dur <= 0 {
				diags = append(diags, attrDiag(attr, "Invalid schema timeout", `timeout must be a positive duration, like "5m" or "90s".`))
			} else {
				s.Timeout = dur
			}
		}
	}
	if !diags.HasErrors() && !hasMigrate && !topMigrate && s.Version > 0 {
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "No schema migrate command",
			Detail:   "A release that needs schema version 1 or later needs a command to migrate there: set migrate in the schema block or at the top level.",
			Subject:  b.DefRange.Ptr(),
		})
	}
	return s, diags
}

// schemaVersion converts a version value, or says why it cannot.
func schemaVersion(v cty.Value) (int64, string) {
	const msg = "version must be a whole number >= 0, the schema version the release needs."
	if v.IsNull() || !v.IsKnown() {
		return 0, msg
	}
	n, err := convert.Convert(v, cty.Number)
	if err != nil {
		return 0, msg
	}
	bf := n.AsBigFloat()
	if !bf.IsInt() || bf.Sign() < 0 || bf.Cmp(new(big.Float).SetInt64(math.MaxInt64)) > 0 {
		return 0, msg
	}
	i, _ := bf.Int64()
	return i, ""
}

// parseDown checks the down command: a literal program, then strings that
// may use ${to}, which at least one must.
func parseDown(attr *hcl.Attribute) ([]hcl.Expression, hcl.Diagnostics) {
	const what = "schema down"
	elems, diags := staticList(attr, what, `["bin/app", "migrate", "down", "${to}"]`)
	if diags.HasErrors() {
		return nil, diags
	}
	_, diags = checkArgv(what, elems, downCtx, false)
	usesTo := false
	for _, e := range elems[1:] {
		usesTo = usesTo || refersTo(e, "to")
	}
	if !diags.HasErrors() && !usesTo {
		diags = append(diags, attrDiag(attr, "Invalid schema down", `down must pass the version to migrate down to, like ["bin/app", "migrate", "down", "${to}"].`))
	}
	return elems, diags
}

// refersTo reports whether e refers to the variable name.
func refersTo(e hcl.Expression, name string) bool {
	for _, t := range e.Variables() {
		if t.RootName() == name {
			return true
		}
	}
	return false
}
