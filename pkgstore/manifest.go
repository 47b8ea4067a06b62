package pkgstore

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"

	"steward/spec"
)

// ManifestFile is the name of the manifest at the root of every package.
const ManifestFile = "package.hcl"

// Manifest is a parsed package.hcl.
type Manifest struct {
	// Health says how a running process of this release is probed. Exactly
	// one of HTTP and TCP is set; a manifest without a health block gets TCP.
	Health Health

	// Migrate is the optional migration command, run before an upgrade
	// starts. When set it is non-empty and Migrate[0] is a path relative to
	// the release directory.
	Migrate []string

	// Schema is the database schema the release needs, from the optional
	// schema block; nil without one.
	Schema *Schema

	// command holds the elements of the command list as expressions, so
	// that ${port} and ${merchant} are bound per merchant by Argv. It is
	// non-empty, and its first element is a literal relative path.
	command []hcl.Expression
}

// program returns the literal first element of the command.
func (m *Manifest) program() string { return literal(m.command[0]) }

// Health is how a process is probed: an HTTP GET of a path expecting a 2xx
// answer, or a plain TCP connect to its port.
type Health struct {
	HTTP string // path starting with "/", or empty when TCP is set
	TCP  bool
}

var manifestSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "command", Required: true},
		{Name: "migrate"},
	},
	Blocks: []hcl.BlockHeaderSchema{{Type: "health"}, {Type: "schema"}},
}

var healthSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "http"}, {Name: "tcp"}},
}

// validateCtx binds the command variables to unknown values of the right
// types, so that parsing catches references to anything else and type
// errors without knowing a merchant.
var validateCtx = &hcl.EvalContext{Variables: map[string]cty.Value{
	"port":     cty.UnknownVal(cty.Number),
	"merchant": cty.UnknownVal(cty.String),
}}

// ParseManifest parses a package manifest within spec.DefaultLimits; see
// ParseManifestLimits.
func ParseManifest(src []byte, filename string) (*Manifest, hcl.Diagnostics) {
	return ParseManifestLimits(src, filename, spec.DefaultLimits)
}

// ParseManifestLimits parses a package manifest. filename is used in the
// ranges of the diagnostics only. A manifest larger than lim.FileSize or
// nested deeper than lim.Depth is refused before it is parsed (zero fields
// take spec.DefaultLimits). Unknown attributes and blocks are errors;
// command is required. The manifest is nil when the diagnostics hold an
// error.
func ParseManifestLimits(src []byte, filename string, lim spec.Limits) (*Manifest, hcl.Diagnostics) {
	if diags := spec.CheckSource(filename, src, lim); diags.HasErrors() {
		return nil, diags
	}
	file, diags := hclsyntax.ParseConfig(src, filename, hcl.InitialPos)
	if diags.HasErrors() {
		return nil, diags
	}
	content, d := file.Body.Content(manifestSchema)
	diags = append(diags, d...)

	m := &Manifest{Health: Health{TCP: true}}
	if attr, ok := content.Attributes["command"]; ok {
		var d hcl.Diagnostics
		m.command, d = parseCommand(attr)
		diags = append(diags, d...)
	}
	if attr, ok := content.Attributes["migrate"]; ok {
		var d hcl.Diagnostics
		m.Migrate, d = parseMigrate(attr)
		diags = append(diags, d...)
	}
	seen := map[string]*hcl.Block{}
	for _, b := range content.Blocks {
		if prev := seen[b.Type]; prev != nil {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  fmt.Sprintf("Duplicate %s block", b.Type),
				Detail:   fmt.Sprintf("A %s block was already defined at %s.", b.Type, prev.DefRange),
				Subject:  b.DefRange.Ptr(),
			})
			continue
		}
		seen[b.Type] = b
		var d hcl.Diagnostics
		switch b.Type {
		case "health":
			m.Health, d = parseHealth(b)
		case "schema":
			_, topMigrate := content.Attributes["migrate"]
			m.Schema, d = parseSchema(b, topMigrate)
		}
		diags = append(diags, d...)
	}
	if diags.HasErrors() {
		return nil, diags
	}
	return m, diags
}

func parseCommand(attr *hcl.Attribute) ([]hcl.Expression, hcl.Diagnostics) {
	elems, diags := staticList(attr, attr.Name, `["bin/app", "--port=${port}"]`)
	if diags.HasErrors() {
		return nil, diags
	}
	_, diags = checkArgv(attr.Name, elems, validateCtx, false)
	return elems, diags
}

// parseMigrate parses the top-level migrate: literal strings only.
func parseMigrate(attr *hcl.Attribute) ([]string, hcl.Diagnostics) {
	return literalArgv(attr, attr.Name, false)
}

// literalArgv parses a list of literal strings whose first element is a
// program inside the release, naming it what in diagnostics. With
// refuseTo, an element that uses ${to} gets a message of its own (only
// schema down has it).
func literalArgv(attr *hcl.Attribute, what string, refuseTo bool) ([]string, hcl.Diagnostics) {
	elems, diags := staticList(attr, what, `["bin/app", "migrate"]`)
	if diags.HasErrors() {
		return nil, diags
	}
	vals, diags := checkArgv(what, elems, nil, refuseTo)
	argv := make([]string, 0, len(vals))
	for _, v := range vals {
		if v != cty.NilVal {
			argv = append(argv, v.AsString())
		}
	}
	return argv, diags
}

// checkArgv checks the elements of a command list: each must evaluate in
// ctx (nil allows literals only) to a string, and the first must name a
// program inside the release, literally. With refuseTo, an element that
// refers to ${to} is refused first, with its own message. It returns each
// element's string value (unknown where it uses a variable of ctx, and
// cty.NilVal where it was refused).
func checkArgv(what string, elems []hcl.Expression, ctx *hcl.EvalContext, refuseTo bool) ([]cty.Value, hcl.Diagnostics) {
	vals := make([]cty.Value, len(elems))
	var diags hcl.Diagnostics
	for i, e := range elems {
		if refuseTo && refersTo(e, "to") {
			diags = append(diags, elemDiag(what, i, e, "${to} is only available in schema down"))
			continue
		}
		v, d := e.Value(ctx)
		diags = append(diags, d...)
		if d.HasErrors() {
			continue
		}
		s, err := toString(v)
		if err != nil {
			diags = append(diags, elemDiag(what, i, e, err.Error()))
			continue
		}
		vals[i] = s
		if i > 0 {
			continue
		}
		if !s.IsKnown() {
			diags = append(diags, elemDiag(what, i, e, "the program must be a literal path, without ${...}"))
		} else if msg := checkProgram(s.AsString()); msg != "" {
			diags = append(diags, elemDiag(what, i, e, msg))
		}
	}
	return vals, diags
}

// staticList returns the elements of a list written out in the file, naming
// it what in diagnostics, which show example as its form; an empty list is
// an error.
func staticList(attr *hcl.Attribute, what, example string) ([]hcl.Expression, hcl.Diagnostics) {
	elems, d := hcl.ExprList(attr.Expr)
	if d.HasErrors() {
		return nil, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  fmt.Sprintf("Invalid %s", what),
			Detail:   fmt.Sprintf("%s must be a list of strings, like %s.", what, example),
			Subject:  attr.Expr.Range().Ptr(),
		}}
	}
	if len(elems) == 0 {
		return nil, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  fmt.Sprintf("Empty %s", what),
			Detail:   fmt.Sprintf("%s needs at least the program to run.", what),
			Subject:  attr.Expr.Range().Ptr(),
		}}
	}
	return elems, nil
}

func parseHealth(b *hcl.Block) (Health, hcl.Diagnostics) {
	content, diags := b.Body.Content(healthSchema)
	if diags.HasErrors() {
		return Health{}, diags
	}
	var h Health
	httpAttr, hasHTTP := content.Attributes["http"]
	if hasHTTP {
		v, d := httpAttr.Expr.Value(nil)
		diags = append(diags, d...)
		if !d.HasErrors() {
			s, err := toString(v)
			switch {
			case err != nil:
				diags = append(diags, attrDiag(httpAttr, "Invalid health http", err.Error()))
			case !strings.HasPrefix(s.AsString(), "/"):
				diags = append(diags, attrDiag(httpAttr, "Invalid health http", `http must be a path starting with "/", like "/health".`))
			default:
				h.HTTP = s.AsString()
			}
		}
	}
	tcpAttr, hasTCP := content.Attributes["tcp"]
	if hasTCP {
		v, d := tcpAttr.Expr.Value(nil)
		diags = append(diags, d...)
		if !d.HasErrors() {
			bv, err := convert.Convert(v, cty.Bool)
			if err != nil || bv.IsNull() {
				diags = append(diags, attrDiag(tcpAttr, "Invalid health tcp", "tcp must be true or false."))
			} else {
				h.TCP = bv.True()
			}
		}
	}
	if diags.HasErrors() {
		return Health{}, diags
	}
	switch {
	case h.HTTP != "" && h.TCP:
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Conflicting health checks",
			Detail:   "Set either http or tcp = true, not both.",
			Subject:  tcpAttr.Range.Ptr(),
		})
	case h.HTTP == "" && !h.TCP:
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "No health check",
			Detail:   `A health block needs http = "/path" or tcp = true; leave the block out for tcp.`,
			Subject:  b.DefRange.Ptr(),
		})
	}
	return h, diags
}

// toString converts v to a non-null string; the result may be unknown.
func toString(v cty.Value) (cty.Value, error) {
	if v.IsNull() {
		return v, errors.New("must not be null")
	}
	s, err := convert.Convert(v, cty.String)
	if err != nil {
		return v, fmt.Errorf("must be a string, not %s", v.Type().FriendlyName())
	}
	return s, nil
}

// checkProgram returns why p cannot be the program of a command, or "".
func checkProgram(p string) string {
	switch {
	case p == "":
		return "the program must not be empty"
	case !filepath.IsLocal(p):
		return fmt.Sprintf("the program %q must be a path inside the release, like \"bin/app\"", p)
	}
	return ""
}

func elemDiag(attr string, i int, e hcl.Expression, msg string) *hcl.Diagnostic {
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  fmt.Sprintf("Invalid %s element", attr),
		Detail:   fmt.Sprintf("%s[%d]: %s.", attr, i, msg),
		Subject:  e.Range().Ptr(),
	}
}

func attrDiag(a *hcl.Attribute, summary, detail string) *hcl.Diagnostic {
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  summary,
		Detail:   detail,
		Subject:  a.Expr.Range().Ptr(),
	}
}

// Argv returns the command with ${port} and ${merchant} bound. Argv[0] is
// still relative to the release directory; Release.Command resolves it.
func (m *Manifest) Argv(port int, merchant string) ([]string, error) {
	if port <= 0 || port > 65535 {
		return nil, fmt.Errorf("port %d out of range 1-65535", port)
	}
	return evalArgv(m.command, "command", map[string]cty.Value{
		"port":     cty.NumberIntVal(int64(port)),
		"merchant": cty.StringVal(merchant),
	})
}

// evalArgv evaluates a command's elements with vars bound; what names the
// command in errors.
func evalArgv(exprs []hcl.Expression, what string, vars map[string]cty.Value) ([]string, error) {
	ctx := &hcl.EvalContext{Variables: vars}
	argv := make([]string, 0, len(exprs))
	for i, e := range exprs {
		v, diags := e.Value(ctx)
		if diags.HasErrors() {
			return nil, diags
		}
		s, err := toString(v)
		if err == nil && !s.IsWhollyKnown() {
			err = errors.New("is not known")
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %s[%d] %v", e.Range(), what, i, err)
		}
		argv = append(argv, s.AsString())
	}
	return argv, nil
}
