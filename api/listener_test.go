package api

import (
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

func serveEvicting(t *testing.T, max int, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	el := newEvictingListener(ln, max)
	hs := &http.Server{Handler: h, ConnState: el.connState, ReadHeaderTimeout: time.Minute}
	go hs.Serve(el)
	t.Cleanup(func() { hs.Close() })
	return ln.Addr().String()
}

// Connections that never send a request (or send a byte now and then)
// cannot keep a real request out: at the cap the newcomer takes the place
// of the one that waited longest.
func TestEvictingListenerLetsARequestPastIdleConnections(t *testing.T) {
	addr := serveEvicting(t, 4, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	var idle []net.Conn
	for range 8 { // twice the cap, each sending half a request line
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("GET /"))
		idle = append(idle, c)
	}
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	start := time.Now()
	resp, err := client.Get("http://" + addr + "/")
	if err != nil {
		t.Fatalf("a request behind 8 half-sent ones (cap 4): %v after %s", err, time.Since(start))
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "ok" {
		t.Fatalf("answer %d %q", resp.StatusCode, b)
	}
}

// Requests in progress are never cut off to make room: a newcomer waits
// for one of them to end.
func TestEvictingListenerKeepsRequestsInProgress(t *testing.T) {
	release := make(chan struct{})
	var started sync.WaitGroup
	started.Add(2)
	addr := serveEvicting(t, 2, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started.Done()
			<-release
		}
		io.WriteString(w, "ok")
	}))
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	errs := make(chan error, 3)
	get := func(path string) {
		resp, err := client.Get("http://" + addr + path)
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode != 200 {
				err = io.ErrUnexpectedEOF
			}
		}
		errs <- err
	}
	go get("/slow")
	go get("/slow")
	started.Wait() // both slots serve a request
	go get("/fast")
	select {
	case err := <-errs:
		t.Fatalf("a request ended while both slots were busy: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	for range 3 {
		if err := <-errs; err != nil {
			t.Errorf("request failed: %v", err)
		}
	}
}
