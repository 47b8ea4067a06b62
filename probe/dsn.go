package probe

import (
	"errors"
	"math"
	"net/url"
	"regexp"
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

// RedactDSN removes the userinfo of URLs and the values of password keys
// from s, so that error messages that quote a DSN can be shown.
func RedactDSN(s string) string {
	s = urlUserinfo.ReplaceAllString(s, "${1}"+redacted+"@")
	return passwordKV.ReplaceAllString(s, "${1}"+redacted)
}

// redactError returns err's text with every DSN and the password of dsn
// removed, as an error that does not wrap err (so that the original text
// cannot be reached through errors.Unwrap).
func redactError(err error, dsn string) error {
	if err == nil {
		return nil
	}
	msg := RedactDSN(err.Error())
	// Belt and braces: a password echoed outside a DSN (say, a parse
	// error quoting a bad escape) is removed too.
	if pw := dsnPassword(dsn); len(pw) >= 3 {
		msg = strings.ReplaceAll(msg, pw, redacted)
		if esc := url.QueryEscape(pw); esc != pw {
			msg = strings.ReplaceAll(msg, esc, redacted)
		}
	}
	return errors.New(msg)
}

func isURLDSN(dsn string) bool {
	l := strings.ToLower(strings.TrimSpace(dsn))
	return strings.HasPrefix(l, "postgres://") || strings.HasPrefix(l, "postgresql://")
}

// dsnPassword is dsn's password, or "" when it has none or does not parse.
func dsnPassword(dsn string) string {
	if isURLDSN(dsn) {
		u, err := url.Parse(strings.TrimSpace(dsn))
		if err != nil {
			return ""
		}
		if pw, ok := u.User.Password(); ok {
			return pw
		}
		return u.Query().Get("password")
	}
	kv, err := parseKV(dsn)
	if err != nil {
		return ""
	}
	return kv["password"]
}

// withConnectTimeout returns dsn with connect_timeout set to timeout in
// whole seconds (rounded up, at least 1) unless dsn already sets one. Both
// URL and key=value forms are understood. Errors never quote dsn.
func withConnectTimeout(dsn string, timeout time.Duration) (string, error) {
	secs := strconv.Itoa(max(1, int(math.Ceil(timeout.Seconds()))))
	if isURLDSN(dsn) {
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
	kv, err := parseKV(dsn)
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

// parseKV parses a key=value connection string as libpq and lib/pq do:
// pairs separated by whitespace, spaces allowed around '=', values either
// bare (backslash escapes the next character) or single-quoted (backslash
// escapes, too). Errors name no value.
func parseKV(s string) (map[string]string, error) {
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
