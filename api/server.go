package api

import (
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
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"steward/reconcile"
)

// Errors a Daemon returns that map to HTTP statuses.
var (
	ErrNotFound = errors.New("not found")
	ErrStale    = errors.New("stale")
)

// Daemon is what the API needs of the running daemon.
type Daemon interface {
	Status(ctx context.Context) (any, error)
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
	// Rollback returns one merchant to version ("": its previous good
	// one) through the health gate and pins it there; with restore, the
	// backup taken while that version ran is restored first.
	Rollback(ctx context.Context, id string, req RollbackRequest) (version string, err error)
}

// Hooks receive an apply's progress (engine.Hooks has this method set).
type Hooks interface {
	ActionStart(a reconcile.Action)
	ActionDone(a reconcile.Action, err error, took time.Duration)
}

// Server serves the API.
type Server struct {
	Daemon        Daemon
	Token         string
	WebhookSecret string
	Registry      *prometheus.Registry
	Log           *slog.Logger
}

// maxBody bounds request bodies; webhook payloads are the largest.
const maxBody = 4 << 20

// Handler returns the API's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", s.status)
	mux.HandleFunc("GET /v1/plan", s.plan)
	mux.HandleFunc("POST /v1/apply", s.writer(s.apply))
	mux.HandleFunc("POST /v1/sync", s.sync)
	mux.HandleFunc("POST /v1/merchants/{id}/restart", s.writer(s.restart))
	mux.HandleFunc("POST /v1/merchants/{id}/suspend", s.writer(s.suspend(true)))
	mux.HandleFunc("POST /v1/merchants/{id}/resume", s.writer(s.suspend(false)))
	mux.HandleFunc("POST /v1/merchants/{id}/rollback", s.writer(s.rollback))
	if s.Registry != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(s.Registry, promhttp.HandlerOpts{}))
	}
	return mux
}

// ApplyRequest is the body of POST /v1/apply.
type ApplyRequest struct {
	Serial   uint64 `json:"serial"`
	Revision string `json:"revision"`
	// Digest is reconcile.Plan.Digest of the plan the caller confirmed.
	Digest string `json:"digest"`
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
	}
	writeJSON(w, code, ErrorBody{Error: err.Error()})
}

// writer requires the bearer token, when one is configured.
func (s *Server) writer(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.tokenOK(r) {
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

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	doc, err := s.Daemon.Status(r.Context())
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, doc)
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

func (s *Server) sync(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		writeJSON(w, http.StatusRequestEntityTooLarge, ErrorBody{Error: "request body too large"})
		return
	}
	sig := r.Header.Get("X-Hub-Signature-256")
	switch {
	case sig != "" && s.WebhookSecret == "":
		writeJSON(w, http.StatusForbidden, ErrorBody{Error: "signed webhook refused: no api.webhook_secret is configured"})
		return
	case sig != "" && !VerifySignature(s.WebhookSecret, body, sig):
		s.Log.Warn("webhook with a bad signature refused", "remote", r.RemoteAddr)
		writeJSON(w, http.StatusForbidden, ErrorBody{Error: "bad X-Hub-Signature-256"})
		return
	case sig == "" && (s.WebhookSecret != "" && s.Token == ""):
		writeJSON(w, http.StatusForbidden, ErrorBody{Error: "this request needs an X-Hub-Signature-256 signature"})
		return
	case sig == "" && !s.tokenOK(r):
		writeJSON(w, http.StatusUnauthorized, ErrorBody{Error: "this request needs Authorization: Bearer TOKEN (api.token) or a webhook signature"})
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
	id := r.PathValue("id")
	if err := s.Daemon.Restart(r.Context(), id); err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"restarted": id})
}

func (s *Server) suspend(on bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if err := s.Daemon.Suspend(r.Context(), id, on); err != nil {
			fail(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"merchant": id, "suspended": on})
	}
}

// RollbackRequest is the body of POST /v1/merchants/ID/rollback.
type RollbackRequest struct {
	// To is the version to return to; "" is the previous good one.
	To string `json:"to,omitempty"`
	// RestoreBackup restores the newest backup taken while To ran first.
	RestoreBackup bool `json:"restore_backup,omitempty"`
}

func (s *Server) rollback(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var req RollbackRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil && err != io.EOF {
		writeJSON(w, http.StatusBadRequest, ErrorBody{Error: "bad rollback request: " + err.Error()})
		return
	}
	v, err := s.Daemon.Rollback(r.Context(), id, req)
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"merchant": id, "version": v})
}

// DecodeApplyRequest reads an apply request body (untrusted input).
func DecodeApplyRequest(r io.Reader) (ApplyRequest, error) {
	var req ApplyRequest
	dec := json.NewDecoder(io.LimitReader(r, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
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
	w  io.Writer
	fl http.Flusher
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
	if h.fl != nil {
		h.fl.Flush()
	}
}

func (s *Server) apply(w http.ResponseWriter, r *http.Request) {
	req, err := DecodeApplyRequest(r.Body)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, ErrorBody{Error: err.Error()})
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	fl, _ := w.(http.Flusher)
	hooks := &streamHooks{w: w, fl: fl}
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
