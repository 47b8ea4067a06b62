package spec

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
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

// Fingerprint returns a short, salted digest of the value, good for telling
// whether a secret changed without revealing it.
func (s Secret) Fingerprint() string {
	sum := sha256.Sum256([]byte("steward-secret\x00" + s.v))
	return "sha256:" + hex.EncodeToString(sum[:8])
}

// FingerprintWith returns a keyed digest (HMAC-SHA256, 128 bits) of the
// value: it tells whether a secret changed without revealing it, and
// cannot be checked against guesses without the key.
func (s Secret) FingerprintWith(key []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(s.v))
	return "hmac:" + hex.EncodeToString(m.Sum(nil)[:16])
}

// FingerprintWith identifies the value; a sensitive one by a keyed digest.
func (v EnvValue) FingerprintWith(key []byte) string {
	if v.Sensitive {
		return v.Value.FingerprintWith(key)
	}
	return v.Value.Reveal()
}
