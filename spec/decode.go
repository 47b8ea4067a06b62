package spec

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/function"
)

// markSensitive is the cty mark carried by values that must not be printed.
const markSensitive = "sensitive"

// LookupEnv is how env() reads the environment; tests replace it.
var LookupEnv = os.LookupEnv

// evalContext is the context expressions in steward's files are evaluated in.
// env("NAME") returns the variable's value marked sensitive; env("NAME",
// "default") falls back to the default (also sensitive) when NAME is unset.
// record, when not nil, is given every value env() returns and every
// default it is given.
func evalContext(record func(string)) *hcl.EvalContext {
	return &hcl.EvalContext{Functions: map[string]function.Function{"env": envFunc(record, false)}}
}

// deferContext is evalContext for expressions evaluated when used
// (DeferredSecret): env() of an unset variable without a default is an
// unknown string there instead of an error.
func deferContext(record func(string)) *hcl.EvalContext {
	return &hcl.EvalContext{Functions: map[string]function.Function{"env": envFunc(record, true)}}
}

func envFunc(record func(string), unsetUnknown bool) function.Function {
	if record == nil {
		record = func(string) {}
	}
	return function.New(&function.Spec{
		Description: "Returns the value of an environment variable, marked sensitive.",
		Params:      []function.Parameter{{Name: "name", Type: cty.String}},
		VarParam:    &function.Parameter{Name: "default", Type: cty.String},
		Type:        function.StaticReturnType(cty.String),
		RefineResult: func(b *cty.RefinementBuilder) *cty.RefinementBuilder {
			return b.NotNull()
		},
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			if len(args) > 2 {
				return cty.NilVal, function.NewArgErrorf(2, "env takes a name and at most one default value")
			}
			name := args[0].AsString()
			if len(args) == 2 && !args[1].IsNull() {
				record(args[1].AsString())
			}
			if v, ok := LookupEnv(name); ok {
				record(v)
				return cty.StringVal(v).Mark(markSensitive), nil
			}
			if len(args) == 2 {
				return cty.StringVal(args[1].AsString()).Mark(markSensitive), nil
			}
			if unsetUnknown {
				return cty.UnknownVal(cty.String).Mark(markSensitive), nil
			}
			return cty.NilVal, fmt.Errorf("environment variable %s is not set; export it, or give a default: env(%q, \"...\")", name, name)
		},
	})
}

// decoder evaluates attributes and accumulates diagnostics, and remembers
// every secret value it meets.
type decoder struct {
	ctx   *hcl.EvalContext
	diags hcl.Diagnostics
	// secrets holds every value env() returned or was given as a default,
	// and every value of a sensitive attribute or env key.
	secrets map[string]struct{}
	// sensitive holds the attributes whose value came from env().
	sensitive map[*hcl.Attribute]bool
}

func newDecoder() *decoder {
	d := &decoder{secrets: map[string]struct{}{}, sensitive: map[*hcl.Attribute]bool{}}
	d.ctx = evalContext(d.secretValue)
	return d
}

// deferredSecret decodes a string attribute that is evaluated only when
// used: it is checked now (type, null, references) with env() of an unset
// variable taken as unknown, so that loading succeeds without the variable.
func (d *decoder) deferredSecret(attrs hcl.Attributes, name string, dst *DeferredSecret) *hcl.Attribute {
	a := attrs[name]
	if a == nil {
		return nil
	}
	v, diags := a.Expr.Value(deferContext(d.secretValue))
	d.diags = append(d.diags, diags...)
	if diags.HasErrors() {
		return a
	}
	v, _ = v.UnmarkDeep()
	if v.IsNull() {
		d.errorf(a.Expr.Range(), "Missing value", "%s must not be null.", a.Name)
		return a
	}
	sv, err := convert.Convert(v, cty.String)
	if err != nil {
		d.errorf(a.Expr.Range(), "Incorrect attribute value type", "%s must be a string: %s.", a.Name, err)
		return a
	}
	if sv.IsKnown() {
		d.secretValue(sv.AsString())
	}
	*dst = DeferredSecret{expr: a.Expr, rng: a.Expr.Range(), name: dst.name}
	return a
}

// shown returns v, a value derived from attribute a's (converted, or
// formatted again), as a diagnostic may quote it: Redacted when a's value
// came from env(). A derived form is not known to the Redactor.
func (d *decoder) shown(a *hcl.Attribute, v string) string {
	if a != nil && d.sensitive[a] {
		return Redacted
	}
	return v
}

// secretValue records v as a secret.
func (d *decoder) secretValue(v string) {
	if v != "" {
		d.secrets[v] = struct{}{}
	}
}

// secretList returns the recorded secrets, sorted.
func (d *decoder) secretList() []string { return sortedKeys(d.secrets) }

// fields records in dst, under prefix+name, whether each attribute's value
// came from env(); a field set without env() loses an inherited mark.
func (d *decoder) fields(dst map[string]bool, prefix string, attrs hcl.Attributes) {
	for name, a := range attrs {
		if d.sensitive[a] {
			dst[prefix+name] = true
		} else {
			delete(dst, prefix+name)
		}
	}
}

func (d *decoder) errorf(rng hcl.Range, summary, detail string, args ...any) {
	r := rng
	d.diags = append(d.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: fmt.Sprintf(detail, args...), Subject: &r})
}

// value evaluates attr and converts it to ty. It returns false on error.
func (d *decoder) value(attr *hcl.Attribute, ty cty.Type, what string) (cty.Value, bool, bool) {
	v, diags := attr.Expr.Value(d.ctx)
	d.diags = append(d.diags, diags...)
	if diags.HasErrors() {
		return cty.NilVal, false, false
	}
	v, marks := v.UnmarkDeep()
	sensitive := false
	if _, ok := marks[markSensitive]; ok {
		sensitive = true
		d.sensitive[attr] = true
	}
	if v.IsNull() {
		d.errorf(attr.Expr.Range(), "Missing value", "%s must not be null.", attr.Name)
		return cty.NilVal, false, false
	}
	cv, err := convert.Convert(v, ty)
	if err != nil {
		d.errorf(attr.Expr.Range(), "Incorrect attribute value type", "%s must be %s: %s.", attr.Name, what, err)
		return cty.NilVal, false, false
	}
	return cv, sensitive, true
}

func (d *decoder) str(attrs hcl.Attributes, name string, dst *string) *hcl.Attribute {
	a := attrs[name]
	if a == nil {
		return nil
	}
	v, _, ok := d.value(a, cty.String, "a string")
	if ok {
		*dst = v.AsString()
	}
	return a
}

// secret decodes a string attribute as a Secret; it returns the attribute
// only when it is present and decoded without error.
func (d *decoder) secret(attrs hcl.Attributes, name string, dst *Secret) *hcl.Attribute {
	a := attrs[name]
	if a == nil {
		return nil
	}
	v, _, ok := d.value(a, cty.String, "a string")
	if !ok {
		return nil
	}
	d.secretValue(v.AsString())
	*dst = NewSecret(v.AsString())
	return a
}

func (d *decoder) boolean(attrs hcl.Attributes, name string, dst *bool) *hcl.Attribute {
	a := attrs[name]
	if a == nil {
		return nil
	}
	v, _, ok := d.value(a, cty.Bool, "true or false")
	if ok {
		*dst = v.True()
	}
	return a
}

func (d *decoder) integer(attrs hcl.Attributes, name string, min, max int, dst *int) *hcl.Attribute {
	a := attrs[name]
	if a == nil {
		return nil
	}
	v, _, ok := d.value(a, cty.Number, "a whole number")
	if !ok {
		return a
	}
	bf := v.AsBigFloat()
	i, acc := bf.Int64()
	if !bf.IsInt() || acc != 0 || i < int64(min) || i > int64(max) {
		d.errorf(a.Expr.Range(), "Invalid "+name, "%s must be a whole number from %d to %d; got %s.", name, min, max, d.shown(a, bf.Text('g', 10)))
		return a
	}
	*dst = int(i)
	return a
}

func (d *decoder) duration(attrs hcl.Attributes, name string, dst *time.Duration) *hcl.Attribute {
	a := attrs[name]
	if a == nil {
		return nil
	}
	v, _, ok := d.value(a, cty.String, `a duration string such as "10s"`)
	if !ok {
		return a
	}
	dur, err := time.ParseDuration(v.AsString())
	if err != nil || dur < 0 {
		d.errorf(a.Expr.Range(), "Invalid duration", "%s = %q is not a duration; write a number with a unit, for example \"500ms\", \"10s\" or \"5m\".", name, v.AsString())
		return a
	}
	*dst = dur
	return a
}

func (d *decoder) strList(attrs hcl.Attributes, name string, dst *[]string) *hcl.Attribute {
	a := attrs[name]
	if a == nil {
		return nil
	}
	v, _, ok := d.value(a, cty.List(cty.String), "a list of strings")
	if !ok {
		return a
	}
	var out []string
	for it := v.ElementIterator(); it.Next(); {
		_, ev := it.Element()
		ev, _ = ev.Unmark()
		if ev.IsNull() {
			d.errorf(a.Expr.Range(), "Invalid list element", "%s must not contain null.", name)
			continue
		}
		out = append(out, ev.AsString())
	}
	*dst = out
	return a
}

// envMap decodes a map of strings whose elements may individually be
// sensitive (produced by env()).
func (d *decoder) envMap(attrs hcl.Attributes, name string) (map[string]EnvValue, *hcl.Attribute) {
	a := attrs[name]
	if a == nil {
		return nil, nil
	}
	v, diags := a.Expr.Value(d.ctx)
	d.diags = append(d.diags, diags...)
	if diags.HasErrors() {
		return nil, a
	}
	v, marks := v.Unmark()
	_, allSensitive := marks[markSensitive]
	if v.IsNull() || !(v.Type().IsObjectType() || v.Type().IsMapType()) {
		d.errorf(a.Expr.Range(), "Incorrect attribute value type", `%s must be a map of strings, for example { LOCALE = "en_US" }.`, name)
		return nil, a
	}
	out := map[string]EnvValue{}
	for it := v.ElementIterator(); it.Next(); {
		k, ev := it.Element()
		ev, em := ev.Unmark()
		_, sens := em[markSensitive]
		sv, err := convert.Convert(ev, cty.String)
		if err != nil || sv.IsNull() {
			d.errorf(a.Expr.Range(), "Incorrect attribute value type", "%s.%s must be a string.", name, k.AsString())
			continue
		}
		key, val := k.AsString(), sv.AsString()
		if strings.IndexByte(val, 0) >= 0 {
			d.errorf(a.Expr.Range(), "Invalid env value", "%s.%s holds a NUL byte, which no process environment can carry; remove it.", name, key)
		}
		if n := len(key) + 1 + len(val) + 1; n > MaxEnvString {
			d.errorf(a.Expr.Range(), "Env value too long", "%s.%s is %s with its name; the kernel refuses an environment string over %s (MAX_ARG_STRLEN), so the merchant could not be started. Pass large data in a file instead.",
				name, key, FormatSize(int64(n)), FormatSize(MaxEnvString))
		}
		out[key] = EnvValue{Value: NewSecret(val), Sensitive: sens || allSensitive}
	}
	return out, a
}

// content decodes body against schema, adding its diagnostics.
func (d *decoder) content(body hcl.Body, schema *hcl.BodySchema) *hcl.BodyContent {
	c, diags := body.Content(schema)
	d.diags = append(d.diags, diags...)
	return c
}

func attrNames(names ...string) []hcl.AttributeSchema {
	out := make([]hcl.AttributeSchema, len(names))
	for i, n := range names {
		out[i] = hcl.AttributeSchema{Name: n}
	}
	return out
}

// oneBlock returns the only block of typ, reporting duplicates.
func (d *decoder) oneBlock(blocks hcl.Blocks, typ string) *hcl.Block {
	var first *hcl.Block
	for _, b := range blocks {
		if b.Type != typ {
			continue
		}
		if first != nil {
			d.errorf(b.DefRange, "Duplicate "+typ+" block", "Only one %s block is allowed here; the first one is at %s.", typ, rangeString(first.DefRange))
			continue
		}
		first = b
	}
	return first
}

func rangeString(r hcl.Range) string {
	return fmt.Sprintf("%s:%d:%d", r.Filename, r.Start.Line, r.Start.Column)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func oneOf(v string, allowed ...string) bool {
	for _, a := range allowed {
		if v == a {
			return true
		}
	}
	return false
}

func quoteList(items []string) string {
	if len(items) == 0 {
		return "none"
	}
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}
