// Command invoicing is the example per-merchant web app that steward runs.
//
//	invoicing [--port=N]     serve on 127.0.0.1:N (default $PORT)
//	invoicing migrate        run database migrations (there are none yet)
//
// The environment gives MERCHANT and DATABASE_URL (optional). Endpoints:
// GET /health answers 200 "ok" without touching the database; GET / answers
// {"merchant", "version", "database": "up"|"down"|"none"}; GET /version
// answers the version. SIGTERM or SIGINT shut it down gracefully.
//
// Build-time settings, through -ldflags "-X main.version=1.1.0":
// main.version (default "dev") and main.brokenHealth=true, which makes
// /health answer 500 to stand for a release that fails its health check.
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	_ "github.com/lib/pq"
)

var (
	version      = "dev"
	brokenHealth = "" // "true" makes /health fail
)

const (
	shutdownTimeout = 5 * time.Second
	dbCheckTimeout  = 3 * time.Second
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "migrate" {
		fmt.Fprintln(stdout, "no migrations")
		return 0
	}
	flags := flag.NewFlagSet("invoicing", flag.ContinueOnError)
	flags.SetOutput(stderr)
	portFlag := flags.Int("port", -1, "port to listen on on 127.0.0.1 (default $PORT)")
	if err := flags.Parse(args); err != nil {
		return 2
	}
	if flags.NArg() > 0 {
		fmt.Fprintf(stderr, "invoicing: unexpected argument %q\n", flags.Arg(0))
		return 2
	}
	port := *portFlag
	if port < 0 {
		env := getenv("PORT")
		p, err := strconv.Atoi(env)
		if err != nil || p < 0 {
			fmt.Fprintf(stderr, "invoicing: no port: set PORT or --port (PORT=%q)\n", env)
			return 2
		}
		port = p
	}
	merchant := getenv("MERCHANT")
	logger := log.New(stdout, "", log.LstdFlags)

	a, err := newApp(merchant, getenv("DATABASE_URL"), logger)
	if err != nil {
		fmt.Fprintf(stderr, "invoicing: %v\n", err)
		return 1
	}
	defer a.close()

	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		fmt.Fprintf(stderr, "invoicing: %v\n", err)
		return 1
	}
	srv := &http.Server{Handler: a.handler(), ReadHeaderTimeout: 10 * time.Second}
	logger.Printf("invoicing %s for %s listening on %s", version, merchant, ln.Addr())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		logger.Printf("serving: %v", err)
		return 1
	case <-ctx.Done():
	}
	logger.Printf("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		logger.Printf("shutdown: %v", err)
		return 1
	}
	logger.Printf("stopped")
	return 0
}

type app struct {
	merchant string
	db       *sql.DB // nil without DATABASE_URL
	secrets  []string
	logger   *log.Logger
}

func newApp(merchant, dsn string, logger *log.Logger) (*app, error) {
	a := &app{merchant: merchant, logger: logger}
	if dsn == "" {
		return a, nil
	}
	full := withConnectTimeout(dsn)
	a.secrets = secretsOf(dsn, full)
	db, err := sql.Open("postgres", full)
	if err != nil {
		// The driver's message could quote the DSN; keep it out.
		return nil, errors.New("DATABASE_URL is not a valid PostgreSQL DSN")
	}
	db.SetMaxOpenConns(2)
	db.SetConnMaxIdleTime(time.Minute)
	a.db = db
	return a, nil
}

func (a *app) close() {
	if a.db != nil {
		a.db.Close()
	}
}

func (a *app) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		if brokenHealth == "true" {
			http.Error(w, "unhealthy (this build is broken on purpose)", http.StatusInternalServerError)
			return
		}
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, version+"\n")
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(struct {
			Merchant string `json:"merchant"`
			Version  string `json:"version"`
			Database string `json:"database"`
		}{a.merchant, version, a.database(r.Context())})
	})
	return a.logRequests(mux)
}

// database reports "none" without DATABASE_URL, else whether a ping
// succeeds within dbCheckTimeout.
func (a *app) database(ctx context.Context) string {
	if a.db == nil {
		return "none"
	}
	ctx, cancel := context.WithTimeout(ctx, dbCheckTimeout)
	defer cancel()
	if err := a.db.PingContext(ctx); err != nil {
		a.logger.Printf("database down: %s", redact(err.Error(), a.secrets))
		return "down"
	}
	return "up"
}

func (a *app) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		a.logger.Printf("%s %s %d %s", r.Method, r.URL.Path, rec.status, time.Since(start).Round(time.Microsecond))
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// withConnectTimeout adds connect_timeout=2 to a DSN (URL or key=value
// form) that does not set one, so a ping cannot hang on a dead server.
func withConnectTimeout(dsn string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return dsn // the driver will refuse it
		}
		q := u.Query()
		if q.Get("connect_timeout") == "" {
			q.Set("connect_timeout", "2")
			u.RawQuery = q.Encode()
		}
		return u.String()
	}
	if kvTimeout.MatchString(dsn) {
		return dsn
	}
	return strings.TrimSpace(dsn + " connect_timeout=2")
}

var (
	kvTimeout  = regexp.MustCompile(`(^|\s)connect_timeout\s*=`)
	kvPassword = regexp.MustCompile(`(?:^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)`)
)

// secretsOf returns the strings that must never be logged: the DSNs and
// the password in them.
func secretsOf(dsns ...string) []string {
	var out []string
	for _, dsn := range dsns {
		out = append(out, dsn)
		if u, err := url.Parse(dsn); err == nil && u.User != nil {
			if p, ok := u.User.Password(); ok && p != "" {
				out = append(out, p, url.PathEscape(p), url.QueryEscape(p))
			}
		}
		for _, m := range kvPassword.FindAllStringSubmatch(dsn, -1) {
			out = append(out, m[1], strings.Trim(m[1], "'"))
		}
	}
	return out
}

func redact(msg string, secrets []string) string {
	for _, s := range secrets {
		if s != "" {
			msg = strings.ReplaceAll(msg, s, "***")
		}
	}
	return msg
}
