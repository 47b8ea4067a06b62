package api

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func newServer(t *testing.T, token, secret string) (*httptest.Server, *fakeDaemon) {
	d := newFake()
	s := &Server{Daemon: d, Token: token, WebhookSecret: secret, Log: slog.New(slog.DiscardHandler)}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return ts, d
}

func post(t *testing.T, url string, body []byte, headers map[string]string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func TestWritesNeedTheToken(t *testing.T) {
	ts, d := newServer(t, "t0ken", "")
	if code := post(t, ts.URL+"/v1/merchants/acme/restart", nil, nil); code != http.StatusUnauthorized {
		t.Errorf("restart without token: %d", code)
	}
	if code := post(t, ts.URL+"/v1/merchants/acme/restart", nil, map[string]string{"Authorization": "Bearer wrong"}); code != http.StatusUnauthorized {
		t.Errorf("restart with a wrong token: %d", code)
	}
	c := NewClient(ts.URL, "t0ken")
	if err := c.Restart(context.Background(), "acme"); err != nil || len(d.calls()) != 1 {
		t.Errorf("restart with token: %v %v", err, d.calls())
	}
	if err := c.Restart(context.Background(), "nobody"); !errors.Is(err, ErrNotFound) {
		t.Errorf("restart of an unknown merchant: %v", err)
	}
	var doc map[string]any
	if err := NewClient(ts.URL, "").Status(context.Background(), &doc); err != nil {
		t.Errorf("status needs no token: %v", err)
	}
}

func TestSyncWebhookSignature(t *testing.T) {
	ts, d := newServer(t, "", "hooksecret")
	body := []byte(`{"ref":"refs/heads/main"}`)
	if code := post(t, ts.URL+"/v1/sync", body, map[string]string{"X-Hub-Signature-256": Sign("hooksecret", body)}); code != http.StatusOK {
		t.Errorf("signed sync: %d", code)
	}
	if code := post(t, ts.URL+"/v1/sync", body, map[string]string{"X-Hub-Signature-256": Sign("other", body)}); code != http.StatusForbidden {
		t.Errorf("badly signed sync: %d", code)
	}
	if code := post(t, ts.URL+"/v1/sync", body, map[string]string{"X-Hub-Signature-256": "sha256=zz"}); code != http.StatusForbidden {
		t.Errorf("malformed signature: %d", code)
	}
	if code := post(t, ts.URL+"/v1/sync", body, nil); code != http.StatusForbidden {
		t.Errorf("unsigned sync with a secret configured: %d", code)
	}
	if d.syncs != 1 {
		t.Errorf("syncs = %d, want 1", d.syncs)
	}
	// With a token too, an unsigned request with the token is accepted, but
	// a bad signature is refused even with the token.
	ts2, d2 := newServer(t, "t0ken", "hooksecret")
	if code := post(t, ts2.URL+"/v1/sync", body, map[string]string{"Authorization": "Bearer t0ken"}); code != http.StatusOK {
		t.Errorf("token sync: %d", code)
	}
	if code := post(t, ts2.URL+"/v1/sync", body, map[string]string{"Authorization": "Bearer t0ken", "X-Hub-Signature-256": Sign("x", body)}); code != http.StatusForbidden {
		t.Errorf("bad signature with token: %d", code)
	}
	if d2.syncs != 1 {
		t.Errorf("syncs = %d, want 1", d2.syncs)
	}
	big := bytes.Repeat([]byte("x"), DefaultMaxBody+1)
	if code := post(t, ts2.URL+"/v1/sync", big, map[string]string{"Authorization": "Bearer t0ken"}); code != http.StatusRequestEntityTooLarge {
		t.Errorf("huge body: %d", code)
	}
}

func TestApplyStreamsProgressAndRefusesStalePlans(t *testing.T) {
	ts, _ := newServer(t, "", "")
	c := NewClient(ts.URL, "")
	p, err := c.Plan(context.Background())
	if err != nil || p.Serial != 7 || len(p.Actions) != 1 {
		t.Fatalf("plan: %+v %v", p, err)
	}
	var got []string
	failed, err := c.Apply(context.Background(), p, func(pr Progress) {
		got = append(got, pr.Merchant+":"+pr.Action+":"+pr.Error)
	})
	if err != nil || failed != 1 {
		t.Fatalf("apply: failed %d, %v", failed, err)
	}
	if strings.Join(got, ",") != "acme:restart:,bolt:upgrade:gate failed" {
		t.Errorf("progress = %q", got)
	}
	p.Actions[0].Merchant = "other"
	if _, err := c.Apply(context.Background(), p, func(Progress) {}); !errors.Is(err, ErrStale) {
		t.Errorf("stale apply: %v", err)
	}
	if code := post(t, ts.URL+"/v1/apply", []byte(`{"serial": "x"}`), nil); code != http.StatusBadRequest {
		t.Errorf("bad apply body: %d", code)
	}
}

func FuzzDecodeApplyRequest(f *testing.F) {
	f.Add([]byte(`{"serial": 3, "revision": "abc", "digest": "0123"}`))
	f.Add([]byte(`{"serial": -1}`))
	f.Add([]byte(`{"revision": "a", "extra": 1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := DecodeApplyRequest(bytes.NewReader(b))
		if err == nil && (req.Revision == "" || req.Digest == "") {
			t.Fatal("accepted a request without a revision or digest")
		}
	})
}

func FuzzVerifySignature(f *testing.F) {
	f.Add("secret", []byte("body"), "sha256=00")
	f.Fuzz(func(t *testing.T, secret string, body []byte, header string) {
		if VerifySignature(secret, body, header) && header != Sign(secret, body) && !strings.EqualFold(header, Sign(secret, body)) {
			t.Fatalf("accepted signature %q", header)
		}
	})
}
