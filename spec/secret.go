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
