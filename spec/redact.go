package spec

import (
	"encoding/json"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"

	"steward/internal/dsn"
)

// Redactor replaces every secret value it knows with Redacted wherever the
// value occurs in a text. Build one with NewRedactor, (*Fleet).Redactor or
// (*Host).Redactor, and combine them with Merge. A nil *Redactor redacts
// nothing. A Redactor is immutable and safe for concurrent use.
//
// Each value is also looked for in the forms steward or its encoders may
// print it in: quoted as Go and HCL quote it, escaped as JSON escapes it,
// and percent-encoded as in a URL. Where occurrences of several values
// overlap, the whole overlapping stretch is replaced once, so that no part
// of any value is left.
//
// Very short values: a value of fewer than MinRedactLen bytes is replaced
// only where it stands alone, not inside a longer word of letters and
// digits ("a1" in "-a1-" but not in "data1"), because replacing every
// letter pair would make output unreadable and would protect nothing: a
// value that short is guessed in a few thousand tries wherever it is
// printed. Over-redaction is otherwise accepted: any occurrence of a
// secret's text is replaced, even where it is not the secret.
type Redactor struct {
	long  map[string][]string // values of MinRedactLen bytes or more by their first MinRedactLen bytes, sorted
	short []string            // shorter values
	n     int                 // distinct values, all forms included
}

// MinRedactLen is the length from which a value is redacted wherever it
// occurs; shorter ones only where they stand alone.
const MinRedactLen = 4

// NewRedactor returns a Redactor for values and the forms they may be
// printed in. Empty values are ignored.
func NewRedactor(values ...string) *Redactor {
	r := &Redactor{long: map[string][]string{}}
	r.add(values)
	return r
}

func (r *Redactor) add(values []string) {
	seen := map[string]bool{}
	for _, vs := range r.long {
		for _, v := range vs {
			seen[v] = true
		}
	}
	for _, v := range r.short {
		seen[v] = true
	}
	for _, v := range values {
		for _, f := range forms(v) {
			if f == "" || seen[f] {
				continue
			}
			seen[f] = true
			r.n++
			if len(f) < MinRedactLen {
				r.short = append(r.short, f)
				continue
			}
			k := f[:MinRedactLen]
			r.long[k] = append(r.long[k], f)
		}
	}
	for _, vs := range r.long {
		sort.Strings(vs)
	}
}

// longestPrefix returns the length of the longest of vals (sorted) that is
// a prefix of t, or 0. The values of a bucket often share long prefixes (the
// DATABASE_URLs of one server), so it searches instead of trying each: the
// largest value not above t is the longest prefix of t when it is one at
// all; otherwise any prefix of t in vals is a prefix of what that value and
// t have in common, which is searched next.
func longestPrefix(vals []string, t string) int {
	hi := len(vals)
	for {
		j := sort.Search(hi, func(k int) bool { return vals[k] > t }) - 1
		if j < 0 {
			return 0
		}
		v := vals[j]
		if strings.HasPrefix(t, v) {
			return len(v)
		}
		l := 0
		for l < len(v) && l < len(t) && v[l] == t[l] {
			l++
		}
		if l < MinRedactLen {
			return 0
		}
		t, hi = t[:l], j
	}
}

// forms returns v and the other forms it may be printed in.
func forms(v string) []string {
	out := []string{v}
	if q := strconv.Quote(v); len(q) > 2 && q[1:len(q)-1] != v {
		out = append(out, q[1:len(q)-1])
	}
	if b, err := json.Marshal(v); err == nil && len(b) > 2 && string(b[1:len(b)-1]) != v {
		out = append(out, string(b[1:len(b)-1]))
	}
	if e := url.QueryEscape(v); e != v {
		out = append(out, e)
	}
	if e := url.PathEscape(v); e != v {
		out = append(out, e)
	}
	if _, e, _ := strings.Cut(url.UserPassword("u", v).String(), ":"); e != v {
		out = append(out, e) // as in a URL's user info
	}
	if strings.Contains(v, "${") || strings.Contains(v, "%{") {
		out = append(out, strings.NewReplacer("${", "$${", "%{", "%%{").Replace(v)) // as HCL escapes it
	}
	return out
}

// Merge returns a Redactor that knows the values of r and of every other.
func (r *Redactor) Merge(others ...*Redactor) *Redactor {
	out := &Redactor{long: map[string][]string{}}
	for _, x := range append([]*Redactor{r}, others...) {
		if x == nil {
			continue
		}
		var vs []string
		for _, l := range x.long {
			vs = append(vs, l...)
		}
		vs = append(vs, x.short...)
		out.add(vs)
	}
	return out
}

// Len is the number of values r looks for, counting each form.
func (r *Redactor) Len() int {
	if r == nil {
		return 0
	}
	return r.n
}

// Redact returns s with every occurrence of a known value replaced by
// Redacted.
func (r *Redactor) Redact(s string) string {
	if r == nil || r.n == 0 || s == "" {
		return s
	}
	// spans are the occurrences found, as [start, end) byte offsets.
	var spans [][2]int
	if len(r.long) > 0 {
		for i := 0; i+MinRedactLen <= len(s); i++ {
			if vs := r.long[s[i:i+MinRedactLen]]; len(vs) > 0 {
				// The longest match at i covers the others.
				if n := longestPrefix(vs, s[i:]); n > 0 {
					spans = append(spans, [2]int{i, i + n})
				}
			}
		}
	}
	for _, v := range r.short {
		for off := 0; ; {
			j := strings.Index(s[off:], v)
			if j < 0 {
				break
			}
			start, end := off+j, off+j+len(v)
			if (start == 0 || !isWordByte(s[start-1])) && (end == len(s) || !isWordByte(s[end])) {
				spans = append(spans, [2]int{start, end})
			}
			off = start + 1
		}
	}
	if len(spans) == 0 {
		return s
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i][0] < spans[j][0] })
	var b strings.Builder
	b.Grow(len(s))
	last := 0
	for i := 0; i < len(spans); {
		start, end := spans[i][0], spans[i][1]
		for i++; i < len(spans) && spans[i][0] <= end; i++ {
			end = max(end, spans[i][1])
		}
		b.WriteString(s[last:start])
		b.WriteString(Redacted)
		last = end
	}
	b.WriteString(s[last:])
	return b.String()
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c >= 0x80
}

// Redactor returns a Redactor for every secret of the fleet: every value
// env() returned or was given as a default, whatever attribute it landed
// in; every database DSN and the password in it; every env value marked
// sensitive; and every merchant's DATABASE_URL. It also works on the fleet
// Load returns with errors (it then knows the values met before them).
func (f *Fleet) Redactor() *Redactor {
	vals := append([]string(nil), f.secrets...)
	for _, db := range f.Databases {
		vals = append(vals, db.DSN.Reveal())
	}
	for _, m := range f.Merchants {
		for _, v := range m.Env {
			if v.Sensitive {
				vals = append(vals, v.Value.Reveal())
			}
		}
		if db := f.Databases[m.Database]; db != nil && !db.DSN.IsZero() && m.DBName != "" {
			vals = append(vals, dsn.WithDatabase(db.DSN.Reveal(), m.DBName))
		}
	}
	return NewRedactor(withParts(vals)...)
}

// Redactor returns a Redactor for every secret of the host config: every
// value env() returned or was given as a default, the state DSN, the API
// token and webhook secret (when they can be evaluated), the password of a
// git URL and the git token read from source.git.token_env.
func (h *Host) Redactor() *Redactor {
	vals := append([]string(nil), h.secrets...)
	vals = append(vals, h.State.PostgresDSN.Reveal())
	for _, s := range []DeferredSecret{h.API.Token, h.API.WebhookSecret} {
		if v, err := s.Value(); err == nil {
			vals = append(vals, v.Reveal())
		}
	}
	if g := h.Source.Git; g != nil {
		vals = append(vals, secretParts(g.URL)...)
		if g.TokenEnv != "" {
			if v, ok := LookupEnv(g.TokenEnv); ok {
				vals = append(vals, v)
			}
		}
	}
	return NewRedactor(withParts(vals)...)
}

// withParts returns vals and the secret parts of each (secretParts).
func withParts(vals []string) []string {
	out := vals
	for _, v := range vals {
		out = append(out, secretParts(v)...)
	}
	return out
}

// RedactDiagnostics replaces every value r knows in the summaries and
// details of diags, in place, and drops the expressions and evaluation
// contexts some diagnostics carry (a renderer could print values from
// them).
func RedactDiagnostics(diags hcl.Diagnostics, r *Redactor) {
	for _, d := range diags {
		d.Summary = r.Redact(d.Summary)
		d.Detail = r.Redact(d.Detail)
		d.Expression, d.EvalContext = nil, nil
	}
}

// secretParts returns the parts of v that are secrets of their own when v
// is a connection string or URL: the password of a PostgreSQL DSN (URL or
// key=value form), and the password of any URL's user info, decoded and as
// written.
func secretParts(v string) []string {
	var out []string
	if pw := dsn.Password(v); pw != "" {
		out = append(out, pw)
	}
	if i := strings.Index(v, "://"); i > 0 {
		rest := v[i+3:]
		if at := strings.LastIndex(strings.SplitN(rest, "/", 2)[0], "@"); at >= 0 {
			if _, pw, ok := strings.Cut(rest[:at], ":"); ok && pw != "" {
				out = append(out, pw)
				if dec, err := url.PathUnescape(pw); err == nil && dec != pw {
					out = append(out, dec)
				}
			}
		}
	}
	return out
}

// Snippet safety: a source line is shown in a diagnostic only when no
// secret can be in it. Values a Redactor knows are replaced first; on top of
// that a line is left out when, after redaction, it still assigns a string
// literal to an attribute or key whose name says it holds a secret (or that
// a sensitive list names), or holds the password of a URL. That covers files
// that did not parse, whose values nobody knows.
var (
	// urlCredRe finds scheme://user:password@.
	urlCredRe = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.-]*://[^\s/@"]*:([^\s/@"]*)@`)
	// sensitiveListRe finds sensitive = [...] lists.
	sensitiveListRe = regexp.MustCompile(`(?s)\bsensitive\s*=\s*\[([^\]]*)\]`)
	quotedRe        = regexp.MustCompile(`"((?:[^"\\]|\\.)*)"`)
)

// secretNameWords mark an attribute or env key whose literal value is kept
// out of snippets (matched case-insensitively as substrings).
var secretNameWords = []string{"dsn", "token", "secret", "password", "passwd", "pass", "pwd", "key", "credential", "auth", "cert", "private"}

// SensitiveNames returns the env keys that the sensitive lists in srcs
// name, for SnippetLineSafe.
func SensitiveNames(srcs ...[]byte) map[string]bool {
	out := map[string]bool{}
	for _, src := range srcs {
		for _, m := range sensitiveListRe.FindAllSubmatch(src, -1) {
			for _, q := range quotedRe.FindAllSubmatch(m[1], -1) {
				out[string(q[1])] = true
			}
		}
	}
	return out
}

// SnippetLineSafe reports whether line, already passed through a Redactor,
// may be shown: it holds no URL password other than Redacted, gives env()
// no default other than Redacted (a default is a value from env()), and
// assigns no string literal other than Redacted to an attribute or key that
// holds secrets by its name (dsn, token, webhook_secret, password, ...) or
// that sensitive lists. The name given to env() is not a value.
func SnippetLineSafe(line string, sensitive map[string]bool) bool {
	for _, m := range urlCredRe.FindAllStringSubmatch(line, -1) {
		if m[1] != "" && m[1] != Redacted {
			return false
		}
	}
	secret := func(name string) bool { return sensitive[name] || secretName(name) }
	const (
		outside = iota
		envName // the next literal is the name given to env()
		envDefault
	)
	var (
		cur      string // the attribute or key being assigned
		env      = outside
		n        = len(line)
		assignAt = func(j int) (int, bool) { // after spaces at j: = (not ==) or :
			for j < n && (line[j] == ' ' || line[j] == '\t') {
				j++
			}
			if j < n && (line[j] == ':' || line[j] == '=' && (j+1 >= n || line[j+1] != '=')) {
				return j + 1, true
			}
			return j, false
		}
	)
	for i := 0; i < n; {
		c := line[i]
		switch {
		case c == '"':
			j := i + 1
			for j < n && line[j] != '"' {
				if line[j] == '\\' {
					j++
				}
				j++
			}
			lit := line[i+1 : min(j, n)]
			i = min(j+1, n)
			if next, ok := assignAt(i); ok && env == outside {
				cur, i = lit, next
				continue
			}
			shown := strings.TrimSpace(strings.ReplaceAll(lit, Redacted, "")) != ""
			switch env {
			case envName:
				env = envDefault
			case envDefault:
				if shown {
					return false
				}
			default:
				if shown && cur != "" && secret(cur) {
					return false
				}
			}
		case c == ')':
			env = outside
			i++
		case c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
			j := i
			for j < n && (line[j] == '_' || line[j] == '-' || line[j] >= 'a' && line[j] <= 'z' || line[j] >= 'A' && line[j] <= 'Z' || line[j] >= '0' && line[j] <= '9') {
				j++
			}
			word := line[i:j]
			if next, ok := assignAt(j); ok && env == outside {
				cur, i = word, next
				continue
			}
			k := j
			for k < n && line[k] == ' ' {
				k++
			}
			if word == "env" && k < n && line[k] == '(' {
				env = envName
			}
			i = j
		default:
			i++
		}
	}
	return true
}

func secretName(name string) bool {
	l := strings.ToLower(name)
	for _, w := range secretNameWords {
		if strings.Contains(l, w) {
			return true
		}
	}
	return false
}

// RedactCut is Redact for text that was cut short: a known value whose
// beginning (MinRedactLen bytes or more of it) ends the text is redacted
// too, since the rest of it was cut away.
func (r *Redactor) RedactCut(s string) string {
	s = r.Redact(s)
	if r == nil || r.n == 0 {
		return s
	}
	best := 0
	for _, vs := range r.long {
		for _, v := range vs {
			for k := min(len(v)-1, len(s)); k >= MinRedactLen && k > best; k-- {
				if strings.HasSuffix(s, v[:k]) {
					best = k
					break
				}
			}
		}
	}
	if best == 0 {
		return s
	}
	return s[:len(s)-best] + Redacted
}
