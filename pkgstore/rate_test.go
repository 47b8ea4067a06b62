package pkgstore

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A server that sends a tarball a byte now and then is given up on after
// one window of the minimum rate, not after the whole request timeout.
func TestDownloadGivesUpOnADrippingServer(t *testing.T) {
	defer func(w time.Duration, b int64) { minRateWindow, minRateBytes = w, b }(minRateWindow, minRateBytes)
	minRateWindow, minRateBytes = 200*time.Millisecond, 1024
	stop := make(chan struct{})
	defer close(stop)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000000")
		w.WriteHeader(200)
		for {
			select {
			case <-stop:
				return
			case <-r.Context().Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
			w.Write([]byte{0})
			w.(http.Flusher).Flush()
		}
	}))
	defer srv.Close()
	h, err := newHTTPSource(NewHTTPClient(time.Minute), srv.URL+"/")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	_, err = h.download(ctx, "app-1.0.0.tar.gz", filepath.Join(t.TempDir(), "dl"), strings.Repeat("0", 64), 1<<30)
	if err == nil || !strings.Contains(err.Error(), "too slow or stalled") {
		t.Fatalf("download from a dripping server: %v after %s; want it given up as too slow", err, time.Since(start))
	}
	// The digest file too.
	start = time.Now()
	_, err = h.readSmall(ctx, "app-1.0.0.tar.gz.sha256")
	if err == nil || !strings.Contains(err.Error(), "too slow or stalled") {
		t.Fatalf("digest from a dripping server: %v after %s; want it given up as too slow", err, time.Since(start))
	}
}
