package dsn

import (
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/lib/pq"
)

func TestRedact(t *testing.T) {
	tests := []struct{ in, want string }{
		{"postgres://postgres:s3cret@db:5432/x?sslmode=disable", "postgres://REDACTED@db:5432/x?sslmode=disable"},
		{"dial postgresql://bob@db/x failed", "dial postgresql://REDACTED@db/x failed"},
		{`parse "postgres://u:s3/cr@t@db:bad/x": invalid port`, `parse "postgres://REDACTED@db:bad/x": invalid port`},
		{"postgres://db/x?user=u&password=s3cret&sslmode=disable", "postgres://db/x?user=u&password=REDACTED&sslmode=disable"},
		{"host=db user=u password=s3cret dbname=x", "host=db user=u password=REDACTED dbname=x"},
		{"host=db password = 'se cret\\'s' dbname=x", "host=db password = REDACTED dbname=x"},
		{"sslpassword=k3y host=db", "sslpassword=REDACTED host=db"},
		{"PASSWORD=S3CRET", "PASSWORD=REDACTED"},
		{"pq: password authentication failed for user \"u\"", "pq: password authentication failed for user \"u\""},
		{"dial tcp 127.0.0.1:5432: connect: connection refused", "dial tcp 127.0.0.1:5432: connect: connection refused"},
		{"https://example.com/path", "https://example.com/path"},
	}
	for _, tt := range tests {
		if got := Redact(tt.in); got != tt.want {
			t.Errorf("Redact(%q)\n got %q\nwant %q", tt.in, got, tt.want)
		}
	}
}

func TestRedactErrorRemovesThePasswordAnywhere(t *testing.T) {
	dsn := "postgres://u:s3cret@db/x"
	err := RedactError(errors.New(`invalid escape near "s3cret" and s3cret`), dsn)
	if strings.Contains(err.Error(), "s3cret") {
		t.Fatal(err)
	}
	if errors.Unwrap(err) != nil {
		t.Fatal("a redacted error must not wrap the original")
	}
	dsn = "host=db password='p@ss word'"
	if err := RedactError(errors.New("bad p@ss word"), dsn); strings.Contains(err.Error(), "p@ss word") {
		t.Fatal(err)
	}
}

func TestWithConnectTimeout(t *testing.T) {
	tests := []struct {
		dsn     string
		timeout time.Duration
		want    string
		secs    time.Duration // what lib/pq makes of it
	}{
		{"postgres://u:pw@db:5432/x", 2 * time.Second, "postgres://u:pw@db:5432/x?connect_timeout=2", 2},
		{"postgres://u:pw@db/x?sslmode=disable", 2500 * time.Millisecond, "postgres://u:pw@db/x?sslmode=disable&connect_timeout=3", 3},
		{"postgresql://db/x", 300 * time.Millisecond, "postgresql://db/x?connect_timeout=1", 1},
		{"postgres://db/x?connect_timeout=10", time.Second, "postgres://db/x?connect_timeout=10", 10},
		{"host=db user=u password='a b' dbname=x", time.Second, "host=db user=u password='a b' dbname=x connect_timeout=1", 1},
		{"host=db connect_timeout = 7", time.Second, "host=db connect_timeout = 7", 7},
		{"", 2 * time.Second, "connect_timeout=2", 2},
	}
	for _, tt := range tests {
		got, err := WithConnectTimeout(tt.dsn, tt.timeout)
		if err != nil || got != tt.want {
			t.Errorf("WithConnectTimeout(%q, %s) = %q, %v; want %q", tt.dsn, tt.timeout, got, err, tt.want)
			continue
		}
		cfg, err := pq.NewConfig(got)
		if err != nil {
			t.Errorf("lib/pq rejects %q: %v", got, err)
			continue
		}
		if cfg.ConnectTimeout != tt.secs*time.Second {
			t.Errorf("lib/pq reads connect_timeout %s from %q, want %ds", cfg.ConnectTimeout, got, tt.secs)
		}
	}
	for _, bad := range []string{"postgres://u:s3cret@db:port/x", "host=db password='s3cret", "host=db s3cret"} {
		_, err := WithConnectTimeout(bad, time.Second)
		if err == nil {
			t.Errorf("WithConnectTimeout(%q) accepted it", bad)
		} else if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("error quotes the secret: %v", err)
		}
	}
}

func TestParseKV(t *testing.T) {
	m, err := ParseKV(` host = db  password='it\'s a secret' user=a\ b dbname=x `)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"host": "db", "password": "it's a secret", "user": "a b", "dbname": "x"}
	if len(m) != len(want) {
		t.Fatalf("%q", m)
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %q, want %q", k, m[k], v)
		}
	}
	if Password("host=db password='it\\'s'") != "it's" || Password("postgres://u:p%40ss@db/x") != "p@ss" || Password("postgres://db/x?password=q") != "q" {
		t.Error("dsnPassword")
	}
	if _, err := url.Parse("postgres://u:p%40ss@db/x"); err != nil {
		t.Fatal(err)
	}
}

// FuzzRedactDSN checks that a password placed in a URL or key=value DSN
// never survives redaction.
func FuzzRedact(f *testing.F) {
	f.Add("s3cret", "prefix ")
	f.Add("p@ss/w'rd", "error: ")
	f.Fuzz(func(t *testing.T, pw, prefix string) {
		if len(pw) < 3 || strings.ContainsAny(pw, " \t\r\n\v\f\x85\xa0") || !strings.Contains(Redact(pw), pw) ||
			strings.Contains(prefix+"postgres://user:", pw) || strings.Contains(prefix+"host=db ", pw) {
			return // only passwords that are not redacted text and appear only as the password
		}
		u := prefix + "postgres://user:" + url.QueryEscape(pw) + "@db/x"
		if got := Redact(u); strings.Contains(got, url.QueryEscape(pw)) {
			t.Fatalf("URL: %q -> %q", u, got)
		}
		kv := prefix + "host=db password='" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(pw) + "' dbname=x"
		if got := Redact(kv); strings.Contains(got, pw) {
			t.Fatalf("key=value: %q -> %q", kv, got)
		}
	})
}

func TestWithDatabase(t *testing.T) {
	for _, tt := range []struct{ dsn, db, want string }{
		{"postgres://u:p@h:5432/postgres?sslmode=disable", "acme", "postgres://u:p@h:5432/acme?sslmode=disable"},
		{"postgresql://h/", "acme", "postgresql://h/acme"},
		{"host=h user=u dbname=postgres", "acme", "dbname=acme host=h user=u"},
		{"host=h password='it\\'s a secret'", "acme", "dbname=acme host=h password='it\\'s a secret'"},
		{"host=h", "acme", "dbname=acme host=h"},
	} {
		got := WithDatabase(tt.dsn, tt.db)
		if got != tt.want {
			t.Errorf("WithDatabase(%q, %q) = %q, want %q", tt.dsn, tt.db, got, tt.want)
		}
		if !IsURL(got) {
			kv, err := ParseKV(got)
			if err != nil || kv["dbname"] != tt.db {
				t.Errorf("WithDatabase(%q) does not parse back: %v %v", tt.dsn, kv, err)
			}
		}
	}
}

func TestServer(t *testing.T) {
	for _, tc := range []struct{ dsn, want string }{
		{"postgres://u:p@127.0.0.1:5432/x?sslmode=disable", "127.0.0.1:5432"},
		{"postgres://u@DB.example.com/x", "db.example.com:5432"},
		{"postgresql://u@h:6543", "h:6543"},
		{"postgres:///x?host=/run/postgresql", "/run/postgresql:5432"},
		{"host=h port=5433 dbname=x password='a b'", "h:5433"},
		{"dbname=x", "localhost:5432"},
		{"host='unterminated", ""},
	} {
		if got := Server(tc.dsn); got != tc.want {
			t.Errorf("Server(%q) = %q, want %q", tc.dsn, got, tc.want)
		}
	}
}
