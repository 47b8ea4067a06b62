package probe

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// Prober probes merchants on the loopback interface.
type Prober struct {
	// Host is the address merchants listen on (default 127.0.0.1).
	Host   string
	client *http.Client
}

// New returns a Prober with a shared client. Probes do not keep
// connections open between them.
func New() *Prober {
	tr := &http.Transport{
		Proxy:       nil,
		DialContext: (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
		// No keep-alive: a kept connection per merchant costs two goroutines
		// and their buffers in steward (and a connection in every merchant)
		// for probes a few seconds apart; a loopback connect is cheap.
		DisableKeepAlives:  true,
		DisableCompression: true,
	}
	return &Prober{Host: "127.0.0.1", client: &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// Probe checks once. With an empty path it only connects to the port;
// otherwise it GETs path and expects status (any 2xx when status is 0).
func (p *Prober) Probe(ctx context.Context, port int, path string, status int, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	addr := net.JoinHostPort(p.Host, strconv.Itoa(port))
	if path == "" {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return fmt.Errorf("tcp %s: %w", addr, simplify(err, ctx, timeout))
		}
		return c.Close()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, simplify(err, ctx, timeout))
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	ok := resp.StatusCode == status || (status == 0 && resp.StatusCode/100 == 2)
	if !ok {
		return fmt.Errorf("GET %s answered %d", path, resp.StatusCode)
	}
	return nil
}

// simplify turns deadline errors into "timed out (2s)".
func simplify(err error, ctx context.Context, timeout time.Duration) error {
	if ctx.Err() == context.DeadlineExceeded {
		return fmt.Errorf("timed out (%s)", timeout)
	}
	var op *net.OpError
	if e, ok := err.(*net.OpError); ok {
		op = e
		return fmt.Errorf("%s", op.Err)
	}
	return err
}
