package api

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"steward/reconcile"
	"steward/state"
)

// Errors a Daemon returns that map to HTTP statuses.
var (
	// ErrNotFound: 404, the merchant (or database) is unknown.
	ErrNotFound = errors.New("not found")
	// ErrStale: 409, the plan named by an apply request is no longer the
	// daemon's plan.
	ErrStale = errors.New("stale")
	// ErrRefused: 422, the request cannot be carried out in the merchant's
	// present state (for example a rollback with no earlier good version);
	// the error says why and what to do.
	ErrRefused = errors.New("refused")
)

// Daemon is what the API needs of the running daemon.
type Daemon interface {
	// Status returns the status document, with every field filled (the
	// server cuts what a reader without the token may not see).
	Status(ctx context.Context) (Status, error)
	Plan(ctx context.Context) (*Plan, error)
	// Apply applies the plan the daemon makes now, if it is still the plan
	// the request names (its digest; ErrStale otherwise). Progress is
	// reported through hooks.
	Apply(ctx context.Context, req ApplyRequest, hooks Hooks) (failed int, err error)
	// Sync reloads the specs now and reconciles every merchant; it returns
	// the revision in force.
	Sync(ctx context.Context) (revision string, err error)
	// Restart restarts one merchant and returns when it answers again.
	Restart(ctx context.Context, id string) error
	// Suspend suspends (true) or resumes (false) one merchant.
	Suspend(ctx context.Context, id string, suspend bool) error
	// Rollback returns one merchant to req.To ("": its previous good
	// version) through the health gate and pins it there; with
	// req.RestoreBackup, the backup taken while that version ran is
	// restored first. It returns the version the merchant runs now.
	// ErrNotFound for a merchant not in the specs, ErrRefused when there is
	// nothing to roll back to.
	Rollback(ctx context.Context, id string, req RollbackRequest) (version string, err error)
	// History returns recorded events, oldest first: the newest q.N of
	// them (q.N is 1..MaxHistory). An unknown merchant or database has an
	// empty history, not an error.
	History(ctx context.Context, q HistoryQuery) ([]state.Event, error)
	// Logs writes the last q.N lines of the merchant's log (stdout and
	// stderr, across rotated files) that match q.Grep to w, each ending in
	// "\n". With q.Follow it then writes new lines as they come, across
	// rotations, until ctx ends, and returns nil. ErrNotFound when the
	// merchant has no log.
	Logs(ctx context.Context, q LogQuery, w io.Writer) error
	// Subscribe returns a channel on which the daemon sends a Change
	// whenever something the status document shows may have changed (a
	// record saved, a process started or exited, a health verdict or a
	// database's reachability changed, the specs reloaded or refused) and
	// one Change with Event set for every event recorded in the history,
	// after it is saved. The channel is closed when ctx ends. Sends never
	// block the daemon: the channel is buffered (64 or more) and a notice
	// that does not fit is dropped.
	Subscribe(ctx context.Context) <-chan Change
}

// Hooks receive an apply's progress (engine.Hooks has this method set).
type Hooks interface {
	ActionStart(a reconcile.Action)
	ActionDone(a reconcile.Action, err error, took time.Duration)
}

// HistoryQuery selects history events: those of one merchant, or the
// reachability events ("database up", "database down") of one database
// server. Exactly one of Merchant and Database is set.
type HistoryQuery struct {
	Merchant string
	Database string
	// N is how many of the newest events to return, 1..MaxHistory.
	N int
}

// LogQuery selects the lines of one merchant's log.
type LogQuery struct {
	Merchant string
	// N is how many of the last matching lines to write, 1..MaxLogLines.
	N int
	// Grep, when set, keeps only the lines it matches.
	Grep *regexp.Regexp
	// Follow keeps writing new lines until the request ends.
	Follow bool
}

// Change is one notice from Daemon.Subscribe.
type Change struct {
	// Event is the event just recorded; nil when the notice only says the
	// status may have changed.
	Event *state.Event
}

// Bounds of the read endpoints' query parameters.
const (
	MaxHistory  = 10000
	MaxLogLines = 10000
	// MaxGrep bounds the length of a grep expression.
	MaxGrep = 1024
	// defaultLines is n when a request names none.
	defaultLines = 50
)

// Server serves the API. Its exported fields are set before Handler or
// Serve is first called and not changed after.
type Server struct {
	Daemon Daemon
	// Token, when set, is required (as "Authorization: Bearer TOKEN") by
	// every write and every log read, and without it status documents
	// carry only the first line of spec_error.
	Token string
	// WebhookSecret, when set, lets POST /v1/sync be authorised by a
	// GitHub-style X-Hub-Signature-256 HMAC of its body.
	WebhookSecret string
	Registry      *prometheus.Registry
	Log           *slog.Logger
	// UI, when set, serves every path outside /v1/ and /metrics: the
	// dashboard (package api/dashboard).
	UI http.Handler
	// Limits bound what clients may take; zero fields take the defaults.
	Limits Limits
	// Hosts are the host names (besides IP addresses and "localhost")
	// that requests may name in their Host header, such as the name of a
	// proxy in front of the API. Others are refused (421), so that a web
	// page cannot reach the API through a name it made resolve to this
	// machine (DNS rebinding).
	Hosts []string

	once    sync.Once
	lim     Limits
	hub     *hub
	streams atomic.Int64
	// publicStreams counts the streams of readers without the token.
	publicStreams atomic.Int64
}

func (s *Server) init() {
	s.once.Do(func() {
		s.lim = s.Limits.withDefaults()
		if s.Log == nil {
			s.Log = slog.New(slog.DiscardHandler)
		}
		s.hub = &hub{s: s, clients: map[*subscriber]struct{}{}}
	})
}

// Handler returns the API's routes. Writes from a browser on another
// origin are refused (403), whatever their credentials.
func (s *Server) Handler() http.Handler {
	s.init()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", s.status)
	mux.HandleFunc("GET /v1/access", s.access)
	mux.HandleFunc("GET /v1/plan", s.plan)
	mux.HandleFunc("GET /v1/events", s.events)
	mux.HandleFunc("POST /v1/apply", s.writer(s.apply))
	mux.HandleFunc("POST /v1/sync", s.sync)
	mux.HandleFunc("GET /v1/merchants/{id}/history", s.merchant(s.history))
	mux.HandleFunc("GET /v1/merchants/{id}/logs", s.merchant(s.writer(s.logs)))
	mux.HandleFunc("POST /v1/merchants/{id}/restart", s.merchant(s.writer(s.restart)))
	mux.HandleFunc("POST /v1/merchants/{id}/suspend", s.merchant(s.writer(s.suspend(true))))
	mux.HandleFunc("POST /v1/merchants/{id}/resume", s.merchant(s.writer(s.suspend(false))))
	mux.HandleFunc("POST /v1/merchants/{id}/rollback", s.merchant(s.writer(s.rollback)))
	mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, ErrorBody{Error: fmt.Sprintf("no API endpoint %s %s; see GET /v1/status and the API documentation", r.Method, r.URL.Path)})
	})
	if s.Registry != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(s.Registry, promhttp.HandlerOpts{}))
	}
	if s.UI != nil {
		mux.Handle("/", s.UI)
	}
	return s.checkHost(http.NewCrossOriginProtection().Handler(s.bound(mux)))
}

// checkHost refuses requests whose Host header names a host this API was
// not told it is reached by: IP addresses, "localhost" and Hosts pass.
func (s *Server) checkHost(h http.Handler) http.Handler {
	allowed := map[string]bool{"localhost": true}
	for _, n := range s.Hosts {
		allowed[strings.ToLower(strings.TrimSuffix(n, "."))] = true
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if hn, _, err := net.SplitHostPort(host); err == nil {
			host = hn
		}
		host = strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
		if net.ParseIP(host) != nil || allowed[host] || strings.HasSuffix(host, ".localhost") {
			h.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Connection", "close")
		writeJSON(w, http.StatusMisdirectedRequest, ErrorBody{Error: fmt.Sprintf("this API does not answer to host %q: list it in the host config's api.hosts if it is a name of this machine", host)})
	})
}

// bound caps every request body at Limits.MaxBody, gives every write of
// an answer its own deadline and marks every answer as not to be sniffed.
func (s *Server) bound(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dw := &deadlineWriter{ResponseWriter: w, rc: http.NewResponseController(w), timeout: s.lim.WriteTimeout}
		dw.Header().Set("X-Content-Type-Options", "nosniff")
		if r.ContentLength > s.lim.MaxBody {
			tooLarge(dw, s.lim.MaxBody)
			return
		}
		r.Body = http.MaxBytesReader(dw, r.Body, s.lim.MaxBody)
		h.ServeHTTP(dw, r)
	})
}

// ApplyRequest is the body of POST /v1/apply.
type ApplyRequest struct {
	Serial   uint64 `json:"serial"`
	Revision string `json:"revision"`
	// Digest is reconcile.Plan.Digest of the plan the caller confirmed.
	Digest string `json:"digest"`
}

// RollbackRequest is the optional body of POST /v1/merchants/ID/rollback.
type RollbackRequest struct {
	// To is the version to return to; "": the previous good version.
	To string `json:"to,omitempty"`
	// RestoreBackup restores the newest backup taken while To ran first.
	RestoreBackup bool `json:"restore_backup,omitempty"`
}

// RollbackResult answers a rollback.
type RollbackResult struct {
	Merchant string `json:"merchant"`
	Version  string `json:"version"`
}

// History is the answer of GET /v1/merchants/ID/history, the same
// document as `steward history -o json`.
type History struct {
	Merchant string        `json:"merchant"`
	Events   []state.Event `json:"events"`
}

// Access is the answer of GET /v1/access: what the caller may do.
type Access struct {
	// TokenRequired is true when the daemon has an API token.
	TokenRequired bool `json:"token_required"`
	// Write is true when the request's credentials allow writes and log
	// reads.
	Write bool `json:"write"`
}

// Progress is one line of the POST /v1/apply stream.
type Progress struct {
	Merchant string  `json:"merchant,omitempty"`
	Action   string  `json:"action,omitempty"`
	Reason   string  `json:"reason,omitempty"`
	Error    string  `json:"error,omitempty"`
	Seconds  float64 `json:"seconds,omitempty"`
	// The last line has Done set and the number of failed actions.
	Done   bool `json:"done,omitempty"`
	Failed int  `json:"failed,omitempty"`
}

// ErrorBody is the body of every error answer.
type ErrorBody struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func fail(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, ErrStale):
		code = http.StatusConflict
	case errors.Is(err, ErrRefused):
		code = http.StatusUnprocessableEntity
	}
	writeJSON(w, code, ErrorBody{Error: err.Error()})
}

func badRequest(w http.ResponseWriter, format string, args ...any) {
	writeJSON(w, http.StatusBadRequest, ErrorBody{Error: fmt.Sprintf(format, args...)})
}

// writer requires the bearer token, when one is configured.
func (s *Server) writer(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.tokenOK(r) {
			w.Header().Set("Connection", "close") // answer without reading the body
			writeJSON(w, http.StatusUnauthorized, ErrorBody{Error: "this request needs Authorization: Bearer TOKEN (api.token)"})
			return
		}
		h(w, r)
	}
}

func (s *Server) tokenOK(r *http.Request) bool {
	if s.Token == "" {
		return true
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(s.Token)) == 1
}

// ValidMerchantID reports whether id can name a merchant: 1 to 63
// lower-case letters, digits and '-', not starting with '-' (the specs'
// rule).
func ValidMerchantID(id string) bool {
	if len(id) == 0 || len(id) > 63 || id[0] == '-' {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// merchant refuses a request whose path names no valid merchant id,
// before anything is looked up.
func (s *Server) merchant(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if id := r.PathValue("id"); !ValidMerchantID(id) {
			badRequest(w, "bad merchant id %.80q: a merchant id is 1 to 63 lower-case letters, digits and '-', not starting with '-'", id)
			return
		}
		h(w, r)
	}
}

// count reads query parameter name as a count in 1..max (default def).
func count(r *http.Request, name string, def, max int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > max {
		return 0, fmt.Errorf("bad %s=%.40q: give a number from 1 to %d", name, v, max)
	}
	return n, nil
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	doc, err := s.Daemon.Status(r.Context())
	if err != nil {
		fail(w, err)
		return
	}
	if !s.tokenOK(r) {
		doc = doc.Public()
	}
	writeJSON(w, http.StatusOK, doc)
}

func (s *Server) access(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, Access{TokenRequired: s.Token != "", Write: s.tokenOK(r)})
}

func (s *Server) plan(w http.ResponseWriter, r *http.Request) {
	p, err := s.Daemon.Plan(r.Context())
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

// VerifySignature checks a GitHub-style "sha256=HEX" HMAC of body.
func VerifySignature(secret string, body []byte, header string) bool {
	hexSig, ok := strings.CutPrefix(header, "sha256=")
	if !ok {
		return false
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return hmac.Equal(got, mac.Sum(nil))
}

// Sign returns the X-Hub-Signature-256 value for body.
func Sign(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// webhookBodyTimeout bounds the arrival of a signed webhook's body, read
// before the request is known to be authorised: a client that sends it a
// byte at a time must not hold a connection for the whole ReadTimeout.
const webhookBodyTimeout = 5 * time.Second

func (s *Server) sync(w http.ResponseWriter, r *http.Request) {
	// Everything that can be refused without the body is refused first,
	// and the connection closed: net/http would otherwise read what is
	// left of the body before it answers.
	sig := r.Header.Get("X-Hub-Signature-256")
	if sig == "" && ((s.WebhookSecret != "" && s.Token == "") || !s.tokenOK(r)) || sig != "" && s.WebhookSecret == "" {
		w.Header().Set("Connection", "close")
	}
	switch {
	case sig != "" && s.WebhookSecret == "":
		writeJSON(w, http.StatusForbidden, ErrorBody{Error: "signed webhook refused: no api.webhook_secret is configured"})
		return
	case sig == "" && (s.WebhookSecret != "" && s.Token == ""):
		writeJSON(w, http.StatusForbidden, ErrorBody{Error: "this request needs an X-Hub-Signature-256 signature"})
		return
	case sig == "" && !s.tokenOK(r):
		writeJSON(w, http.StatusUnauthorized, ErrorBody{Error: "this request needs Authorization: Bearer TOKEN (api.token) or a webhook signature"})
		return
	case sig != "":
		_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(webhookBodyTimeout))
	}
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	if sig != "" && !VerifySignature(s.WebhookSecret, body, sig) {
		s.Log.Warn("webhook with a bad signature refused", "remote", r.RemoteAddr)
		writeJSON(w, http.StatusForbidden, ErrorBody{Error: "bad X-Hub-Signature-256"})
		return
	}
	rev, err := s.Daemon.Sync(r.Context())
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"revision": rev})
}

func (s *Server) restart(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.readBody(w, r); !ok {
		return
	}
	id := r.PathValue("id")
	if err := s.Daemon.Restart(r.Context(), id); err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"restarted": id})
}

func (s *Server) suspend(on bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if _, ok := s.readBody(w, r); !ok {
			return
		}
		id := r.PathValue("id")
		if err := s.Daemon.Suspend(r.Context(), id, on); err != nil {
			fail(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"merchant": id, "suspended": on})
	}
}

// validVersion is the specs' rule for a version string.
func validVersion(v string) bool {
	if len(v) == 0 || len(v) > 64 {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		alnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		if !alnum && (i == 0 || c != '.' && c != '+' && c != '_' && c != '-') {
			return false
		}
	}
	return true
}

func (s *Server) rollback(w http.ResponseWriter, r *http.Request) {
	var req RollbackRequest
	if !s.decodeJSON(w, r, &req, true) {
		return
	}
	if req.To != "" && !validVersion(req.To) {
		badRequest(w, "bad rollback request: \"to\" is %.80q; a version is 1 to 64 letters, digits and . + _ -, starting with a letter or digit", req.To)
		return
	}
	id := r.PathValue("id")
	v, err := s.Daemon.Rollback(r.Context(), id, req)
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, RollbackResult{Merchant: id, Version: v})
}

func (s *Server) history(w http.ResponseWriter, r *http.Request) {
	n, err := count(r, "n", defaultLines, MaxHistory)
	if err != nil {
		badRequest(w, "%s", err)
		return
	}
	id := r.PathValue("id")
	events, err := s.Daemon.History(r.Context(), HistoryQuery{Merchant: id, N: n})
	if err != nil {
		fail(w, err)
		return
	}
	if events == nil {
		events = []state.Event{}
	}
	if !s.tokenOK(r) {
		for i := range events {
			events[i] = PublicEvent(events[i])
		}
	}
	writeJSON(w, http.StatusOK, History{Merchant: id, Events: events})
}

// parseLogQuery reads n, grep and follow of a log request.
func parseLogQuery(r *http.Request) (LogQuery, error) {
	q := LogQuery{Merchant: r.PathValue("id")}
	var err error
	if q.N, err = count(r, "n", defaultLines, MaxLogLines); err != nil {
		return q, err
	}
	if g := r.URL.Query().Get("grep"); g != "" {
		if len(g) > MaxGrep {
			return q, fmt.Errorf("bad grep: %d bytes; at most %d", len(g), MaxGrep)
		}
		if q.Grep, err = regexp.Compile(g); err != nil {
			return q, fmt.Errorf("bad grep: %w", err)
		}
	}
	switch f := r.URL.Query().Get("follow"); f {
	case "", "0", "false":
	case "1", "true":
		q.Follow = true
	default:
		return q, fmt.Errorf("bad follow=%.20q: give 1 or 0", f)
	}
	return q, nil
}

func (s *Server) logs(w http.ResponseWriter, r *http.Request) {
	q, err := parseLogQuery(r)
	if err != nil {
		badRequest(w, "%s", err)
		return
	}
	if _, ok := s.readBody(w, r); !ok {
		return
	}
	ctx := r.Context()
	if q.Follow {
		done, ok := s.stream(w, r)
		if !ok {
			return
		}
		defer done()
	}
	lw := &lineWriter{w: w, follow: q.Follow}
	err = s.Daemon.Logs(ctx, q, lw)
	if err != nil && !lw.started {
		fail(w, err)
		return
	}
	if err != nil && ctx.Err() == nil {
		// The status is sent; the error can only end the text.
		fmt.Fprintf(lw, "steward: reading the log failed: %s\n", err)
	}
	if !lw.started {
		lw.begin()
	}
}

// lineWriter answers log lines as text, each write within its own
// deadline; when following, each write is flushed.
type lineWriter struct {
	w       http.ResponseWriter
	follow  bool
	started bool
}

func (l *lineWriter) begin() {
	l.started = true
	l.w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	l.w.Header().Set("Cache-Control", "no-store")
	l.w.WriteHeader(http.StatusOK)
}

func (l *lineWriter) Write(p []byte) (int, error) {
	if !l.started {
		l.begin()
	}
	n, err := l.w.Write(p)
	if err == nil && l.follow {
		err = http.NewResponseController(l.w).Flush()
	}
	return n, err
}

// DecodeApplyRequest reads an apply request body (untrusted input).
func DecodeApplyRequest(r io.Reader) (ApplyRequest, error) {
	var req ApplyRequest
	b, err := io.ReadAll(io.LimitReader(r, DefaultMaxBody+1))
	if err != nil {
		return req, fmt.Errorf("bad apply request: %w", err)
	}
	if len(b) > DefaultMaxBody {
		return req, fmt.Errorf("bad apply request: larger than %d bytes", DefaultMaxBody)
	}
	if err := decodeStrict(b, &req, DefaultMaxJSONDepth); err != nil {
		return req, fmt.Errorf("bad apply request: %w", err)
	}
	if req.Revision == "" || req.Digest == "" {
		return req, errors.New("bad apply request: revision and digest are required")
	}
	return req, nil
}

// streamHooks writes one Progress line per finished action.
type streamHooks struct {
	mu sync.Mutex
	w  http.ResponseWriter
}

func (h *streamHooks) ActionStart(reconcile.Action) {}

func (h *streamHooks) ActionDone(a reconcile.Action, err error, took time.Duration) {
	if !a.Kind.IsChange() {
		return
	}
	p := Progress{Merchant: a.Merchant, Action: string(a.Kind), Reason: a.Reason, Seconds: took.Seconds()}
	if err != nil {
		p.Error = err.Error()
	}
	h.write(p)
}

func (h *streamHooks) write(p Progress) {
	h.mu.Lock()
	defer h.mu.Unlock()
	json.NewEncoder(h.w).Encode(p)
	http.NewResponseController(h.w).Flush()
}

func (s *Server) apply(w http.ResponseWriter, r *http.Request) {
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	req, err := DecodeApplyRequest(bytes.NewReader(body))
	if err != nil {
		badRequest(w, "%s", err)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	hooks := &streamHooks{w: w}
	// A stale plan is refused before any progress is written, so the
	// status code can still say so. The apply goes on if the client goes.
	failed, err := s.Daemon.Apply(context.WithoutCancel(r.Context()), req, hooks)
	if err != nil && errors.Is(err, ErrStale) {
		fail(w, err)
		return
	}
	end := Progress{Done: true, Failed: failed}
	if err != nil {
		end.Error = err.Error()
	}
	hooks.write(end)
}
