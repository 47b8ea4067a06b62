// Command invoicing is the example per-merchant web app that steward runs.
//
//	invoicing [--port=N]          serve on 127.0.0.1:N (default $PORT)
//	invoicing migrate [up]        apply the migrations up to this build's schema version
//	invoicing migrate down N      undo the migrations above version N
//	invoicing migrate version     print the current schema version (0 without any)
//
// The environment gives MERCHANT and DATABASE_URL (optional for serving,
// required for migrate). Endpoints: GET /health answers 200 "ok" without
// touching the database; GET / answers {"merchant", "version", "database":
// "up"|"down"|"none", "schema": the database's schema version or null,
// "schema_needed": this build's}; GET /version answers the version; POST
// /invoices {"amount_cents": N, "currency": "EUR"} records an invoice. SIGTERM
// or SIGINT shut it down gracefully.
//
// The app serves whatever the state of its database: down, missing or at an
// older schema, / says so and /health stays "ok"; deciding whether a schema
// fits a release is steward's business.
//
// Migrations (see migrate.go) each run in a transaction together with their
// row in schema_migrations (version, applied_at), under an advisory lock so
// that concurrent runs take turns. "migrate up" creates the database first
// when it does not exist. Output names migrations and versions, never the DSN.
//
// Build-time settings, through -ldflags "-X main.version=1.1.0":
// main.version (default "dev"), main.schemaVersion (the schema version the
// build needs and the last migration it knows; default: all of them) and
// main.brokenHealth=true, which makes /health answer 500 to stand for a
// release that fails its health check.
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
		return runMigrate(ctx, args[1:], getenv, stdout, stderr)
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
	target   int64   // the schema version this build needs
	db       *sql.DB // nil without DATABASE_URL
	secrets  []string
	logger   *log.Logger
}

func newApp(merchant, dsn string, logger *log.Logger) (*app, error) {
	target, err := buildTarget()
	if err != nil {
		return nil, err
	}
	a := &app{merchant: merchant, target: target, logger: logger}
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
		db, schema := a.database(r.Context())
		writeJSON(w, http.StatusOK, struct {
			Merchant     string `json:"merchant"`
			Version      string `json:"version"`
			Database     string `json:"database"`
			Schema       *int64 `json:"schema"`
			SchemaNeeded int64  `json:"schema_needed"`
		}{a.merchant, version, db, schema, a.target})
	})
	mux.HandleFunc("POST /invoices", a.createInvoice)
	return a.logRequests(mux)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// database reports "none" without DATABASE_URL, else whether a ping
// succeeds within dbCheckTimeout, and then the schema version (nil when it
// cannot be read).
func (a *app) database(ctx context.Context) (string, *int64) {
	if a.db == nil {
		return "none", nil
	}
	ctx, cancel := context.WithTimeout(ctx, dbCheckTimeout)
	defer cancel()
	if err := a.db.PingContext(ctx); err != nil {
		a.logger.Printf("database down: %s", redact(err.Error(), a.secrets))
		return "down", nil
	}
	v, err := currentVersion(ctx, a.db)
	if err != nil {
		a.logger.Printf("reading the schema version: %s", redact(err.Error(), a.secrets))
		return "up", nil
	}
	return "up", &v
}

// createInvoice is POST /invoices {"amount_cents": N, "currency": "EUR"}:
// it records an invoice of the merchant and answers 201 with it. Currency
// needs schema 2; without a database or schema 1 it answers 503.
func (a *app) createInvoice(w http.ResponseWriter, r *http.Request) {
	var in struct {
		AmountCents *int64 `json:"amount_cents"`
		Currency    string `json:"currency"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil || in.AmountCents == nil {
		http.Error(w, `want {"amount_cents": N, "currency": "EUR"}`, http.StatusBadRequest)
		return
	}
	if a.db == nil {
		http.Error(w, "no database", http.StatusServiceUnavailable)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), dbCheckTimeout)
	defer cancel()
	schema, err := currentVersion(ctx, a.db)
	if err != nil {
		a.logger.Printf("reading the schema version: %s", redact(err.Error(), a.secrets))
		http.Error(w, "database unavailable", http.StatusServiceUnavailable)
		return
	}
	out := struct {
		ID          int64  `json:"id"`
		Merchant    string `json:"merchant"`
		AmountCents int64  `json:"amount_cents"`
		Currency    string `json:"currency,omitempty"`
	}{Merchant: a.merchant, AmountCents: *in.AmountCents}
	switch {
	case schema < 1:
		http.Error(w, "the database has no invoices table yet (schema 0)", http.StatusServiceUnavailable)
		return
	case schema < 2 && in.Currency != "":
		http.Error(w, fmt.Sprintf("currency needs schema 2, the database is at %d", schema), http.StatusConflict)
		return
	case schema < 2:
		err = a.db.QueryRowContext(ctx, `INSERT INTO invoices (merchant, amount_cents) VALUES ($1, $2) RETURNING id`,
			a.merchant, out.AmountCents).Scan(&out.ID)
	default:
		out.Currency = in.Currency
		if out.Currency == "" {
			out.Currency = "EUR"
		}
		err = a.db.QueryRowContext(ctx, `INSERT INTO invoices (merchant, amount_cents, currency) VALUES ($1, $2, $3) RETURNING id`,
			a.merchant, out.AmountCents, out.Currency).Scan(&out.ID)
	}
	if err != nil {
		a.logger.Printf("recording an invoice: %s", redact(err.Error(), a.secrets))
		http.Error(w, "recording the invoice failed", http.StatusServiceUnavailable)
		return
	}
	writeJSON(w, http.StatusCreated, out)
}

// logRequests logs every request but the health checks that pass: a
// supervisor probes /health every few seconds, and a line each time would
// bury the log (and cost a write per probe).
func (a *app) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		if r.URL.Path == "/health" && rec.status == http.StatusOK {
			return
		}
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
