package spec

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// Redacted is what a Secret prints as.
const Redacted = "(sensitive)"

// Secret is a string that redacts itself wherever it could be printed,
// logged or serialised. Reveal returns the real value.
type Secret struct{ v string }

// NewSecret wraps v.
func NewSecret(v string) Secret { return Secret{v: v} }

// Reveal returns the secret value. Call it only where the value is handed to
// the process or library that needs it.
func (s Secret) Reveal() string { return s.v }

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return s.v == "" }

func (s Secret) String() string                { return Redacted }
func (s Secret) GoString() string              { return Redacted }
func (s Secret) LogValue() slog.Value          { return slog.StringValue(Redacted) }
func (s Secret) MarshalJSON() ([]byte, error)  { return []byte(`"` + Redacted + `"`), nil }
func (s Secret) MarshalText() ([]byte, error)  { return []byte(Redacted), nil }
func (s Secret) Format(f fmt.State, verb rune) { f.Write([]byte(Redacted)) }

// FingerprintWith returns a keyed digest of the value (HMAC-SHA256, 128
// bits in hex), good for telling whether a secret changed without revealing
// it, also to whoever reads the fingerprints: without the key, guesses of
// the value cannot be tested against it. key must be random, at least 16
// bytes, and kept as secret as the state; the same key gives the same
// fingerprint.
func (s Secret) FingerprintWith(key []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(s.v))
	return "hmac:" + hex.EncodeToString(mac.Sum(nil)[:16])
}

// DeferredSecret is a secret attribute of the host config evaluated when it
// is used, not when the config is loaded: api.token and api.webhook_secret.
// Commands that do not need it (status, logs, validate, ...) then work while
// the environment variable it reads is unset. The zero value is an unset
// attribute, whose Value is the empty Secret.
type DeferredSecret struct {
	expr hcl.Expression
	rng  hcl.Range
	name string // the setting, for errors: "api.token"
}

// IsSet reports whether the attribute is in the config.
func (s DeferredSecret) IsSet() bool { return s.expr != nil }

// Range is where the attribute's value is in the config (zero when unset).
func (s DeferredSecret) Range() hcl.Range { return s.rng }

// Warning returns a warning diagnostic when the attribute is set but cannot
// be evaluated now, for commands that check the config without using it;
// nil otherwise.
func (s DeferredSecret) Warning() *hcl.Diagnostic {
	if _, err := s.Value(); err != nil {
		rng := s.rng
		return &hcl.Diagnostic{Severity: hcl.DiagWarning, Summary: s.name + " cannot be evaluated",
			Detail:  fmt.Sprintf("%s. Commands that only read work without it; steward run, and commands that go through a running daemon, need it.", err),
			Subject: &rng}
	}
	return nil
}

// Value evaluates the attribute now. The error names the file and line of
// the attribute, the setting and what is missing (the environment variable
// env() reads), for example:
//
//	steward.hcl:9:11: api.token: environment variable STEWARD_TOKEN is not set; ...
func (s DeferredSecret) Value() (Secret, error) {
	if s.expr == nil {
		return Secret{}, nil
	}
	v, diags := s.expr.Value(evalContext(nil))
	if diags.HasErrors() {
		msg := diags[0].Detail
		if _, after, ok := strings.Cut(msg, "failed: "); ok && strings.HasPrefix(diags[0].Summary, "Error in function call") {
			msg = after // "Call to function "env" failed: ..." says less than the cause
		}
		return Secret{}, fmt.Errorf("%s: %s: %s", rangeString(s.rng), s.name, strings.TrimSuffix(msg, "."))
	}
	v, _ = v.UnmarkDeep()
	sv, err := convert.Convert(v, cty.String)
	if err != nil || sv.IsNull() || !sv.IsKnown() {
		return Secret{}, fmt.Errorf("%s: %s must be a string", rangeString(s.rng), s.name)
	}
	return NewSecret(sv.AsString()), nil
}

// Reveal returns the value, evaluated now.
//
// Deprecated: use Value, which returns the error. Reveal panics when the
// value cannot be evaluated (an unset variable), so that no caller runs
// with an empty token by mistake.
func (s DeferredSecret) Reveal() string {
	v, err := s.Value()
	if err != nil {
		panic(err)
	}
	return v.Reveal()
}

func (s DeferredSecret) String() string                { return Redacted }
func (s DeferredSecret) GoString() string              { return Redacted }
func (s DeferredSecret) LogValue() slog.Value          { return slog.StringValue(Redacted) }
func (s DeferredSecret) MarshalJSON() ([]byte, error)  { return []byte(`"` + Redacted + `"`), nil }
func (s DeferredSecret) MarshalText() ([]byte, error)  { return []byte(Redacted), nil }
func (s DeferredSecret) Format(f fmt.State, verb rune) { f.Write([]byte(Redacted)) }
