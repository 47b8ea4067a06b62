package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"steward/state"
)

// Client talks to a running daemon.
type Client struct {
	// Base is "http://127.0.0.1:7070".
	Base  string
	Token string
	HTTP  *http.Client
}

// NewClient returns a client for the daemon listening on addr.
func NewClient(addr, token string) *Client {
	base := addr
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	return &Client{Base: strings.TrimRight(base, "/"), Token: token, HTTP: &http.Client{}}
}

func (c *Client) do(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, rd)
	if err != nil {
		return nil, err
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("daemon API %s: %w", c.Base, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		var eb ErrorBody
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(b, &eb) != nil || eb.Error == "" {
			eb.Error = strings.TrimSpace(string(b))
		}
		err := fmt.Errorf("daemon: %s (HTTP %d)", eb.Error, resp.StatusCode)
		switch resp.StatusCode {
		case http.StatusConflict:
			err = kindError{ErrStale, eb.Error}
		case http.StatusNotFound:
			err = kindError{ErrNotFound, eb.Error}
		case http.StatusUnprocessableEntity:
			err = kindError{ErrRefused, eb.Error}
		case http.StatusUnauthorized:
			if c.Token == "" {
				err = fmt.Errorf("%w; this command sent no token: set api.token in its host config (or the variable it reads)", err)
			} else {
				err = fmt.Errorf("%w; the token this command sent (api.token of its host config) is not the daemon's: was it changed without restarting the daemon?", err)
			}
		}
		return nil, err
	}
	return resp, nil
}

func (c *Client) getJSON(ctx context.Context, path string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := c.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

// Status decodes GET /v1/status into v.
func (c *Client) Status(ctx context.Context, v any) error { return c.getJSON(ctx, "/v1/status", v) }

// Plan returns the daemon's current plan.
func (c *Client) Plan(ctx context.Context) (*Plan, error) {
	var p Plan
	if err := c.getJSON(ctx, "/v1/plan", &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// Apply applies plan p through the daemon, calling progress for each
// finished action. It returns the number of failed actions.
func (c *Client) Apply(ctx context.Context, p *Plan, progress func(Progress)) (int, error) {
	resp, err := c.do(ctx, http.MethodPost, "/v1/apply", ApplyRequest{Serial: p.Serial, Revision: p.Revision, Digest: p.Reconcile().Digest()})
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var p Progress
		if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
			return 0, fmt.Errorf("daemon sent a bad progress line: %w", err)
		}
		if p.Done {
			if p.Error != "" {
				return p.Failed, errors.New(p.Error)
			}
			return p.Failed, nil
		}
		progress(p)
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("the daemon ended the apply stream early; see its log and steward history")
}

// Sync asks the daemon to reload the specs now.
func (c *Client) Sync(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	resp, err := c.do(ctx, http.MethodPost, "/v1/sync", struct{}{})
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out struct{ Revision string }
	err = json.NewDecoder(resp.Body).Decode(&out)
	return out.Revision, err
}

// Restart restarts one merchant through the daemon.
func (c *Client) Restart(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	resp, err := c.do(ctx, http.MethodPost, "/v1/merchants/"+url.PathEscape(id)+"/restart", struct{}{})
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// Suspend suspends (true) or resumes (false) a merchant through the daemon.
func (c *Client) Suspend(ctx context.Context, id string, suspend bool) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	verb := "resume"
	if suspend {
		verb = "suspend"
	}
	resp, err := c.do(ctx, http.MethodPost, "/v1/merchants/"+url.PathEscape(id)+"/"+verb, struct{}{})
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// Rollback rolls a merchant back through the daemon and returns the
// version it runs afterwards.
func (c *Client) Rollback(ctx context.Context, id string, req RollbackRequest) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	resp, err := c.do(ctx, http.MethodPost, "/v1/merchants/"+url.PathEscape(id)+"/rollback", req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out RollbackResult
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&out); err != nil {
		return "", fmt.Errorf("daemon sent a bad rollback answer: %w", err)
	}
	return out.Version, nil
}

// History returns the last n events of a merchant, oldest first.
func (c *Client) History(ctx context.Context, id string, n int) ([]state.Event, error) {
	var h History
	if err := c.getJSON(ctx, "/v1/merchants/"+url.PathEscape(id)+"/history?n="+strconv.Itoa(n), &h); err != nil {
		return nil, err
	}
	return h.Events, nil
}

// Access says whether the client's token allows writes.
func (c *Client) Access(ctx context.Context) (Access, error) {
	var a Access
	err := c.getJSON(ctx, "/v1/access", &a)
	return a, err
}

// Logs copies the last q.N lines of a merchant's log that match q.Grep to
// w; with q.Follow it goes on copying new lines until ctx ends (and then
// returns nil).
func (c *Client) Logs(ctx context.Context, q LogQuery, w io.Writer) error {
	v := url.Values{"n": {strconv.Itoa(q.N)}}
	if q.Grep != nil {
		v.Set("grep", q.Grep.String())
	}
	if q.Follow {
		v.Set("follow", "1")
	} else {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Minute)
		defer cancel()
	}
	resp, err := c.do(ctx, http.MethodGet, "/v1/merchants/"+url.PathEscape(q.Merchant)+"/logs?"+v.Encode(), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(w, resp.Body)
	if q.Follow && ctx.Err() != nil {
		return nil
	}
	return err
}

// Watch reads the GET /v1/events stream, calling fn for each status
// document and history event, until ctx ends (it then returns nil), fn
// returns an error (returned), or the daemon ends the stream (an error).
// merchant, when set, keeps only that merchant's history events.
func (c *Client) Watch(ctx context.Context, merchant string, fn func(Update) error) error {
	path := "/v1/events"
	if merchant != "" {
		path += "?merchant=" + url.QueryEscape(merchant)
	}
	resp, err := c.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	err = readEvents(resp.Body, func(event string, data []byte) error {
		var u Update
		switch event {
		case "status":
			u.Status = new(Status)
			if err := json.Unmarshal(data, u.Status); err != nil {
				return fmt.Errorf("daemon sent a bad status event: %w", err)
			}
		case "history":
			u.Event = new(state.Event)
			if err := json.Unmarshal(data, u.Event); err != nil {
				return fmt.Errorf("daemon sent a bad history event: %w", err)
			}
		default:
			return nil
		}
		return fn(u)
	})
	if ctx.Err() != nil {
		return nil
	}
	if err == nil {
		err = errors.New("the daemon ended the event stream")
	}
	return err
}

// readEvents parses a server-sent event stream, calling fn for each event
// with its type ("message" when it names none) and data.
func readEvents(r io.Reader, fn func(event string, data []byte) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	event, data, has := "", []byte(nil), false
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 {
			if has {
				if event == "" {
					event = "message"
				}
				if err := fn(event, data); err != nil {
					return err
				}
			}
			event, data, has = "", nil, false
			continue
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "event":
			event = string(value)
		case "data":
			if has {
				data = append(data, '\n')
			}
			data, has = append(data, value...), true
		}
	}
	return sc.Err()
}

// WithKind returns err, with its message unchanged, as one of the errors
// the server tells apart (ErrStale, ErrNotFound, ErrRefused): errors.Is
// finds kind, and the answer carries err's message alone.
func WithKind(kind, err error) error { return kindError{kind, err.Error()} }

// kindError is the daemon's error message, which already says what went
// wrong, as one of the errors callers tell apart (errors.Is).
type kindError struct {
	kind error
	msg  string
}

func (k kindError) Error() string        { return k.msg }
func (k kindError) Is(target error) bool { return target == k.kind }
