// Package dsn is steward's one helper for PostgreSQL connection strings,
// in URL (postgres://...) and key=value form: the database URL of a
// merchant, connect timeouts, and keeping passwords out of every text.
package dsn

import (
	"errors"
	"math"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// redacted replaces secrets in text.
const redacted = "REDACTED"

var (
	// urlUserinfo matches the userinfo of any URL ("scheme://user:pw@").
	// It runs to the last '@' before whitespace or a quote, not to the
	// first '/' or '@', so that a password with a raw '/' or '@' is still
	// caught; text is over-redacted rather than under-redacted.
	urlUserinfo = regexp.MustCompile("(?i)([a-z][a-z0-9+.-]*://)[^\\s\"'`]*@")
	// passwordKV matches password=..., sslpassword=... in key=value DSNs
	// and URL queries, quoted or not.
	passwordKV = regexp.MustCompile(`(?i)\b([a-z_]*password\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s&]+)`)
)

// Redact removes the userinfo of URLs and the values of password keys
// from s, so that error messages that quote a DSN can be shown.
func Redact(s string) string {
	s = urlUserinfo.ReplaceAllString(s, "${1}"+redacted+"@")
	return passwordKV.ReplaceAllString(s, "${1}"+redacted)
}

// RedactError returns err's text with every DSN (Redact) and the password
// of dsn removed, as an error that does not wrap err (so that the original
// text cannot be reached through errors.Unwrap). It returns nil for a nil
// err.
func RedactError(err error, dsn string) error {
	if err == nil {
		return nil
	}
	msg := Redact(err.Error())
	// Belt and braces: a password echoed outside a DSN (say, a parse
	// error quoting a bad escape) is removed too.
	if pw := Password(dsn); len(pw) >= 3 {
		msg = strings.ReplaceAll(msg, pw, redacted)
		if esc := url.QueryEscape(pw); esc != pw {
			msg = strings.ReplaceAll(msg, esc, redacted)
		}
	}
	return errors.New(msg)
}

// IsURL reports whether dsn is in URL form.
func IsURL(dsn string) bool {
	l := strings.ToLower(strings.TrimSpace(dsn))
	return strings.HasPrefix(l, "postgres://") || strings.HasPrefix(l, "postgresql://")
}

// Password is dsn's password, or "" when it has none or does not parse.
func Password(dsn string) string {
	if IsURL(dsn) {
		u, err := url.Parse(strings.TrimSpace(dsn))
		if err != nil {
			return ""
		}
		if pw, ok := u.User.Password(); ok {
			return pw
		}
		return u.Query().Get("password")
	}
	kv, err := ParseKV(dsn)
	if err != nil {
		return ""
	}
	return kv["password"]
}

// WithConnectTimeout returns dsn with connect_timeout set to timeout in
// whole seconds (rounded up, at least 1) unless dsn already sets one. Both
// URL and key=value forms are understood. Errors never quote dsn.
func WithConnectTimeout(dsn string, timeout time.Duration) (string, error) {
	secs := strconv.Itoa(max(1, int(math.Ceil(timeout.Seconds()))))
	if IsURL(dsn) {
		u, err := url.Parse(strings.TrimSpace(dsn))
		if err != nil {
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err // url.Error quotes the whole URL
			}
			return "", errors.New("invalid database URL: " + err.Error())
		}
		if u.Query().Has("connect_timeout") {
			return dsn, nil
		}
		sep := "?"
		if strings.Contains(dsn, "?") {
			sep = "&"
		}
		return strings.TrimSpace(dsn) + sep + "connect_timeout=" + secs, nil
	}
	kv, err := ParseKV(dsn)
	if err != nil {
		return "", err
	}
	if _, ok := kv["connect_timeout"]; ok {
		return dsn, nil
	}
	if strings.TrimSpace(dsn) == "" {
		return "connect_timeout=" + secs, nil
	}
	return dsn + " connect_timeout=" + secs, nil
}

// ParseKV parses a key=value connection string as libpq and lib/pq do:
// pairs separated by whitespace, spaces allowed around '=', values either
// bare (backslash escapes the next character) or single-quoted (backslash
// escapes, too). Errors name no value.
func ParseKV(s string) (map[string]string, error) {
	r := []rune(s)
	i := 0
	skip := func() {
		for i < len(r) && unicode.IsSpace(r[i]) {
			i++
		}
	}
	m := map[string]string{}
	for skip(); i < len(r); skip() {
		start := i
		for i < len(r) && r[i] != '=' && !unicode.IsSpace(r[i]) {
			i++
		}
		key := string(r[start:i])
		skip()
		if i >= len(r) || r[i] != '=' || key == "" {
			return nil, errors.New("invalid database DSN: expected key=value")
		}
		i++
		skip()
		var v strings.Builder
		if i < len(r) && r[i] == '\'' {
			i++
			for {
				if i >= len(r) {
					return nil, errors.New("invalid database DSN: unterminated quoted value of " + key)
				}
				if r[i] == '\\' && i+1 < len(r) {
					v.WriteRune(r[i+1])
					i += 2
					continue
				}
				if r[i] == '\'' {
					i++
					break
				}
				v.WriteRune(r[i])
				i++
			}
		} else {
			for i < len(r) && !unicode.IsSpace(r[i]) {
				if r[i] == '\\' && i+1 < len(r) {
					i++
				}
				v.WriteRune(r[i])
				i++
			}
		}
		m[key] = v.String()
	}
	return m, nil
}

// WithDatabase returns dsn with its database name replaced by dbName, in
// the form dsn has: a merchant's DATABASE_URL is its server's DSN with the
// merchant's database. A DSN that does not parse is returned as it is.
func WithDatabase(dsn, dbName string) string {
	if IsURL(dsn) {
		u, err := url.Parse(strings.TrimSpace(dsn))
		if err != nil {
			return dsn
		}
		u.Path = "/" + dbName
		u.RawPath = ""
		return u.String()
	}
	kv, err := ParseKV(dsn)
	if err != nil {
		return dsn
	}
	kv["dbname"] = dbName
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + quoteKV(kv[k])
	}
	return strings.Join(parts, " ")
}

// quoteKV writes a key=value value so that ParseKV (and libpq) read it
// back: single-quoted with backslash escapes when it needs quoting.
func quoteKV(v string) string {
	if v != "" && !strings.ContainsAny(v, " \t\r\n\v\f'\\") {
		return v
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// Server identifies the server dsn connects to, as "host:port" (host as
// written, lower-cased; port 5432 when none is given), so that two DSNs
// for the same server compare equal whatever else differs. It is "" when
// dsn does not parse.
func Server(dsn string) string {
	var host, port string
	if IsURL(dsn) {
		u, err := url.Parse(strings.TrimSpace(dsn))
		if err != nil {
			return ""
		}
		host, port = u.Hostname(), u.Port()
		if h := u.Query().Get("host"); h != "" {
			host = h
		}
		if p := u.Query().Get("port"); p != "" {
			port = p
		}
	} else {
		kv, err := ParseKV(dsn)
		if err != nil {
			return ""
		}
		host, port = kv["host"], kv["port"]
	}
	if host == "" {
		host = "localhost"
	}
	if port == "" {
		port = "5432"
	}
	return strings.ToLower(host) + ":" + port
}
