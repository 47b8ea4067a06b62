package pkgstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// DefaultHTTPTimeout bounds each request of the client Open gives a
	// Store, reading the body included. A context may end it sooner.
	DefaultHTTPTimeout = 10 * time.Minute

	// connectTimeout bounds the TCP connect and the TLS handshake.
	connectTimeout = 10 * time.Second
	// headerTimeout bounds the wait for response headers once a request
	// is sent: a server that accepts and then says nothing is given up on.
	headerTimeout = time.Minute
	// maxSumsBytes bounds a .sha256 or SHA256SUMS read, over HTTP or from
	// a directory.
	maxSumsBytes = 16 << 20
)

// A download that brings less than minRateBytes in any minRateWindow is
// given up on: a server that drips a byte now and then would otherwise
// hold the state lock (apply) or a daemon worker for DefaultHTTPTimeout.
var (
	minRateWindow       = 30 * time.Second
	minRateBytes  int64 = 16 << 10
)

// getGuarded GETs file like get, and gives up on it (ending the returned
// context) when its body brings less than minRateBytes in a
// minRateWindow. done closes the body and ends the watch.
func (h *httpSource) getGuarded(ctx context.Context, file string) (context.Context, *countingReader, string, func(), error) {
	ctx, cancel := context.WithCancelCause(ctx)
	resp, shown, err := h.get(ctx, file)
	if err != nil {
		cancel(nil)
		return ctx, nil, shown, nil, err
	}
	body := &countingReader{r: resp.Body, resp: resp}
	stop := guardRate(body, minRateWindow, minRateBytes, func() {
		cancel(fmt.Errorf("GET %s: less than %s arrived in %s: the server is too slow or stalled", shown, formatBytes(minRateBytes), minRateWindow))
	})
	return ctx, body, shown, func() { stop(); resp.Body.Close(); cancel(nil) }, nil
}

// slowOr is the error of a read of a guarded body that failed: why the
// guard gave up on it, or err.
func slowOr(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil && cause != ctx.Err() {
		return cause
	}
	return err
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r    io.Reader
	n    atomic.Int64
	resp *http.Response
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// guardRate calls slow once when fewer than min bytes were read through c
// in a window; stop ends the watch.
func guardRate(c *countingReader, window time.Duration, min int64, slow func()) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(window)
		defer t.Stop()
		last := int64(0)
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			n := c.n.Load()
			if n-last < min {
				slow()
				return
			}
			last = n
		}
	}()
	return sync.OnceFunc(func() { close(done) })
}

func formatBytes(n int64) string {
	if n%(1<<10) == 0 {
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

// NewHTTPClient returns the kind of client Open gives a Store: connects and
// TLS handshakes bounded by 10s, response headers by 1m, each whole request
// by timeout (DefaultHTTPTimeout when timeout <= 0), proxies from the
// environment, and no transparent decompression (tarballs are hashed as
// served).
func NewHTTPClient(timeout time.Duration) *http.Client {
	if timeout <= 0 {
		timeout = DefaultHTTPTimeout
	}
	d := &net.Dialer{Timeout: connectTimeout, KeepAlive: 30 * time.Second}
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           d.DialContext,
			TLSHandshakeTimeout:   connectTimeout,
			ResponseHeaderTimeout: headerTimeout,
			ExpectContinueTimeout: time.Second,
			IdleConnTimeout:       90 * time.Second,
			MaxIdleConnsPerHost:   4,
			ForceAttemptHTTP2:     true,
			DisableCompression:    true,
		},
	}
}

// defaultClient serves the package-level AvailableVersions.
var defaultClient = NewHTTPClient(0)

func isHTTP(source string) bool {
	s := strings.ToLower(source)
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}

// httpSource is an http:// or https:// base URL holding tarballs, their
// .sha256 files and optionally a SHA256SUMS.
type httpSource struct {
	client *http.Client
	base   *url.URL // may carry userinfo, used for basic auth; never printed
}

func newHTTPSource(client *http.Client, source string) (*httpSource, error) {
	u, err := url.Parse(source)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("package source %s: invalid HTTP URL", redactSource(source))
	}
	if client == nil {
		client = defaultClient
	}
	return &httpSource{client: client, base: u}, nil
}

func (h *httpSource) String() string { return redact(h.base) }

func (h *httpSource) fileURL(file string) *url.URL { return h.base.JoinPath(file) }

// redact returns u without userinfo, query and fragment: the parts that
// may carry credentials.
func redact(u *url.URL) string {
	c := *u
	c.User = nil
	c.RawQuery, c.ForceQuery = "", false
	c.Fragment, c.RawFragment = "", ""
	return c.String()
}

// redactSource redacts a source string that may not even parse.
func redactSource(source string) string {
	if u, err := url.Parse(source); err == nil {
		return redact(u)
	}
	if i := strings.Index(source, "://"); i > 0 {
		rest := source[i+3:]
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			return source[:i+3] + rest[at+1:]
		}
	}
	return source
}

// get GETs file and returns the response when its status is 200. A 404 or
// 410 wraps fs.ErrNotExist. Errors name the URL without credentials.
func (h *httpSource) get(ctx context.Context, file string) (*http.Response, string, error) {
	u := h.fileURL(file)
	shown := redact(u)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, shown, fmt.Errorf("GET %s: %w", shown, err)
	}
	// Bytes as served: a tarball sent with Content-Encoding: gzip must not
	// be gunzipped on the way, or its digest would not match.
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := h.client.Do(req)
	if err != nil {
		// *url.Error repeats the URL with its user name; name it ourselves.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return nil, shown, fmt.Errorf("GET %s: %w", shown, err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return resp, shown, nil
	case http.StatusNotFound, http.StatusGone:
		resp.Body.Close()
		return nil, shown, fmt.Errorf("GET %s: %s: %w", shown, resp.Status, fs.ErrNotExist)
	}
	resp.Body.Close()
	return nil, shown, fmt.Errorf("GET %s: %s", shown, resp.Status)
}

// readSmall GETs a digest file.
func (h *httpSource) readSmall(ctx context.Context, file string) ([]byte, error) {
	ctx, body, shown, done, err := h.getGuarded(ctx, file)
	if err != nil {
		return nil, err
	}
	defer done()
	data, err := io.ReadAll(ctxReader{ctx, io.LimitReader(body, maxSumsBytes+1)})
	if err != nil {
		return nil, slowOr(ctx, fmt.Errorf("GET %s: %w", shown, err))
	}
	if len(data) > maxSumsBytes {
		return nil, badPackage{fmt.Errorf("GET %s: more than %d bytes for a digest file", shown, maxSumsBytes)}
	}
	return data, nil
}

// digest returns the digest the source gives for tarName (see sourceDigest).
func (h *httpSource) digest(ctx context.Context, tarName string) (string, error) {
	return sourceDigest(tarName, func(file string) ([]byte, error) { return h.readSmall(ctx, file) })
}

// versions lists the versions of name that the source's SHA256SUMS lists.
func (h *httpSource) versions(ctx context.Context, name string) ([]string, error) {
	data, err := h.readSmall(ctx, SumsFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("package source %s: listing versions over HTTP needs a %s there: %w", h, SumsFile, err)
	}
	if err != nil {
		return nil, fmt.Errorf("package source %s: %w", h, err)
	}
	lines, err := parseSums(data, SumsFile)
	if err != nil {
		return nil, fmt.Errorf("package source %s: %w", h, err)
	}
	files := make([]string, len(lines))
	for i, l := range lines {
		files[i] = l.file[strings.LastIndex(l.file, "/")+1:]
	}
	return versionsIn(files, name), nil
}

// download GETs tarName into the file at dst (created or truncated),
// hashing while writing, refusing more than max bytes, and returns the
// file open at its start once its digest is want. On error dst is removed.
func (h *httpSource) download(ctx context.Context, tarName, dst, want string, max int64) (f *os.File, err error) {
	ctx, body, shown, done, err := h.getGuarded(ctx, tarName)
	if err != nil {
		return nil, err
	}
	defer done()
	resp := body.resp
	tooBig := func() error {
		return badPackage{fmt.Errorf("%s from %s is larger than the package size limit of %d bytes", tarName, shown, max)}
	}
	if resp.ContentLength > max {
		return nil, tooBig()
	}
	f, err = os.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(dst)
		}
	}()
	hash := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, hash), ctxReader{ctx, io.LimitReader(body, max+1)})
	if err != nil {
		return nil, slowOr(ctx, fmt.Errorf("GET %s: %w", shown, err))
	}
	if n > max {
		return nil, tooBig()
	}
	if got := hex.EncodeToString(hash.Sum(nil)); got != want {
		return nil, badPackage{fmt.Errorf("sha256 mismatch for %s from %s: got %s, want %s", tarName, shown, got, want)}
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return f, nil
}
