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
	"strings"
	"time"
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
			err = fmt.Errorf("%w: %s", ErrStale, eb.Error)
		case http.StatusNotFound:
			err = fmt.Errorf("%w: %s", ErrNotFound, eb.Error)
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
	var out struct {
		Version string `json:"version"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&out); err != nil {
		return "", fmt.Errorf("daemon sent a bad rollback answer: %w", err)
	}
	return out.Version, nil
}
