package router

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Upstream keepalive: idle connections each worker keeps per merchant, and
// how long. The timeout is shorter than the idle timeouts of common
// application servers (Node.js: 5 s), so that nginx closes an idle
// connection before the application does and never sends a request on a
// connection the application is closing.
const (
	upstreamKeepalive        = 16
	upstreamKeepaliveTimeout = "4s"
)

// rendered is one rendering of a routing table.
type rendered struct {
	conf   []byte            // the whole file: nginx.conf or the include
	gen    string            // the generation: a hash of conf
	pages  map[string][]byte // maintenance page file name → content
	routes []Route           // normalized
}

// Render returns the configuration file the routes make: the whole
// nginx.conf in managed mode, the include file in system mode. It is
// deterministic: the same routes in any order give the same bytes. Invalid
// routes (see CheckDomain, CheckPathPrefix, CheckMerchant) are refused with
// every problem named.
func (r *Router) Render(routes []Route) ([]byte, error) {
	rd, err := r.render(routes)
	if err != nil {
		return nil, err
	}
	return rd.conf, nil
}

func (r *Router) render(routes []Route) (*rendered, error) {
	rs, err := normalize(routes, r.defaultServer())
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.Grow(2048 + 1400*len(rs))
	c := &r.cfg
	if c.Mode == Managed {
		b.WriteString("# Rendered by steward from its routes; changes to this file are overwritten.\n")
		fmt.Fprintf(&b, "daemon on;\npid %s;\nerror_log %s warn;\n", r.pidFile(), r.errorLog())
		if r.user != "" {
			// Only root may raise the workers' descriptor limit.
			fmt.Fprintf(&b, "user %s %s;\nworker_rlimit_nofile 16384;\n", r.user, r.group)
		}
		fmt.Fprintf(&b, "worker_processes auto;\nworker_shutdown_timeout %s;\n", duration(c.WorkerShutdownTimeout))
		b.WriteString("\nevents {\n    worker_connections 4096;\n}\n\nhttp {\n")
		b.WriteString("    access_log off;\n    server_tokens off;\n")
		// Room for every domain a spec may name (up to 253 bytes) and for
		// thousands of them: nginx's defaults refuse a 50-byte name.
		names := 0
		for _, rt := range rs {
			names += len(rt.Domains)
		}
		fmt.Fprintf(&b, "    server_names_hash_bucket_size 512;\n    server_names_hash_max_size %d;\n", hashMaxSize(names))
		for _, t := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
			fmt.Fprintf(&b, "    %s_temp_path %s;\n", t, filepath.Join(c.Prefix, "temp", t))
		}
		b.WriteString("\n")
	} else {
		b.WriteString("# Rendered by steward from its routes; changes to this file are overwritten.\n")
		b.WriteString("# Include it inside the http block of nginx.conf.\n\n")
	}
	in := "    "
	if c.Mode == System {
		in = ""
	}
	w := &writer{b: &b, in: in}
	w.line("map $http_upgrade $steward_connection {")
	w.line(`    default upgrade;`)
	w.line(`    "" "";`)
	w.line("}")
	for _, rt := range rs {
		if rt.unavailable() {
			continue
		}
		w.line("")
		w.line("upstream " + upstreamName(rt.Merchant) + " {")
		w.line("    server 127.0.0.1:" + portString(rt.Upstream) + " max_fails=0;")
		w.line("    keepalive " + strconv.Itoa(upstreamKeepalive) + ";")
		w.line("    keepalive_timeout " + upstreamKeepaliveTimeout + ";")
		w.line("}")
	}
	for _, rt := range rs {
		if len(rt.Domains) == 0 {
			continue
		}
		w.line("")
		w.line("# merchant " + rt.Merchant)
		w.line("server {")
		w.line("    listen " + c.Listen + ";")
		w.line("    server_name " + strings.Join(rt.Domains, " ") + ";")
		r.proxySettings(w, "    ")
		r.errorPages(w, "    ", rt)
		r.pageLocation(w, "    ", rt)
		w.line("    location / {")
		r.target(w, "        ", rt)
		w.line("    }")
		if rt.inject != "" {
			w.line("    " + rt.inject)
		}
		w.line("}")
	}
	if r.defaultServer() {
		w.line("")
		w.line("# Unknown hosts get 404; path-prefix routes live here.")
		w.line("server {")
		w.line("    listen " + c.Listen + " default_server;")
		w.line("    server_name _;")
		r.proxySettings(w, "    ")
		w.line("    location / {")
		w.line("        return 404;")
		w.line("    }")
		for _, rt := range rs {
			if rt.PathPrefix == "" {
				continue
			}
			w.line("    # merchant " + rt.Merchant)
			r.pageLocation(w, "    ", rt)
			for _, loc := range []string{"= " + rt.PathPrefix, "^~ " + rt.PathPrefix + "/"} {
				w.line("    location " + loc + " {")
				r.errorPages(w, "        ", rt)
				r.target(w, "        ", rt)
				w.line("    }")
			}
		}
		w.line("}")
	}
	sum := sha256.Sum256(b.Bytes())
	gen := hex.EncodeToString(sum[:8])
	w.line("")
	w.line("# steward's control server: tells which configuration nginx serves.")
	w.line("server {")
	w.line("    listen " + c.Control + ";")
	w.line("    location = " + generationPath + " {")
	w.line("        default_type text/plain;")
	w.line(`        return 200 "` + gen + ` $pid\n";`)
	w.line("    }")
	w.line("    location / {")
	w.line("        return 404;")
	w.line("    }")
	w.line("}")
	if c.Mode == Managed {
		b.WriteString("}\n")
	}
	pages := make(map[string][]byte, len(rs))
	for _, rt := range rs {
		var p bytes.Buffer
		reason := rt.Reason
		if len(reason) > maxReason {
			reason = reason[:maxReason]
		}
		data := struct {
			Merchant, Reason string
			Maintenance      bool
			RetryAfter       int
		}{rt.Merchant, reason, rt.Maintenance, c.RetryAfter}
		if err := r.page.Execute(&p, data); err != nil {
			return nil, fmt.Errorf("maintenance page for %s: %w", rt.Merchant, err)
		}
		pages[pageFile(rt.Merchant)] = p.Bytes()
	}
	return &rendered{conf: b.Bytes(), gen: gen, pages: pages, routes: rs}, nil
}

// generationPath is the control server's location that answers
// "GENERATION WORKERPID".
const generationPath = "/__steward/generation"

// writer writes indented lines.
type writer struct {
	b  *bytes.Buffer
	in string
}

func (w *writer) line(s string) {
	if s != "" {
		w.b.WriteString(w.in)
		w.b.WriteString(s)
	}
	w.b.WriteByte('\n')
}

func (r *Router) defaultServer() bool { return r.cfg.Mode == Managed || !r.cfg.NoDefaultServer }

func upstreamName(merchant string) string { return "steward_" + merchant }

func pageFile(merchant string) string { return merchant + ".html" }

func pageURI(merchant string) string { return "/__steward/page/" + merchant }

// proxySettings are the proxy directives of a server: HTTP/1.1 with the
// Connection header cleared (so that upstream keepalive works) unless the
// client asks for an upgrade (websockets), the usual forwarding headers and
// the configured timeouts.
func (r *Router) proxySettings(w *writer, in string) {
	w.line(in + "proxy_http_version 1.1;")
	w.line(in + "proxy_set_header Host $host;")
	w.line(in + "proxy_set_header X-Real-IP $remote_addr;")
	w.line(in + "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;")
	w.line(in + "proxy_set_header X-Forwarded-Proto $scheme;")
	w.line(in + "proxy_set_header Upgrade $http_upgrade;")
	w.line(in + "proxy_set_header Connection $steward_connection;")
	w.line(in + "proxy_connect_timeout " + duration(r.cfg.ProxyConnectTimeout) + ";")
	w.line(in + "proxy_send_timeout " + duration(r.cfg.ProxyReadTimeout) + ";")
	w.line(in + "proxy_read_timeout " + duration(r.cfg.ProxyReadTimeout) + ";")
}

// errorPages sends 503 to the maintenance page, and turns nginx's own 502
// and 504 (the instance refuses connections or does not answer, as between
// a crash and its restart) into 503 with the page. An application's own
// error answers pass through unchanged (proxy_intercept_errors is off).
func (r *Router) errorPages(w *writer, in string, rt Route) {
	if !rt.unavailable() {
		w.line(in + "error_page 502 504 =503 " + pageURI(rt.Merchant) + ";")
	}
	w.line(in + "error_page 503 " + pageURI(rt.Merchant) + ";")
}

// pageLocation serves the merchant's maintenance page with Retry-After to
// internal redirects only.
func (r *Router) pageLocation(w *writer, in string, rt Route) {
	w.line(in + "location = " + pageURI(rt.Merchant) + " {")
	w.line(in + "    internal;")
	w.line(in + "    alias " + filepath.Join(r.pages, pageFile(rt.Merchant)) + ";")
	w.line(in + "    default_type text/html;")
	w.line(in + "    etag off;")
	w.line(in + "    add_header Retry-After " + strconv.Itoa(r.cfg.RetryAfter) + " always;")
	w.line(in + "    add_header Cache-Control no-store always;")
	w.line(in + "}")
}

// target is what a location of the merchant does: proxy, or answer 503.
func (r *Router) target(w *writer, in string, rt Route) {
	if rt.unavailable() {
		w.line(in + "return 503;")
		return
	}
	w.line(in + "proxy_pass http://" + upstreamName(rt.Merchant) + ";")
}

// duration renders d in nginx's time syntax.
func duration(d time.Duration) string {
	if d%time.Second == 0 {
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
	return strconv.FormatInt(int64(d/time.Millisecond), 10) + "ms"
}

func (r *Router) pidFile() string  { return filepath.Join(r.cfg.Prefix, "nginx.pid") }
func (r *Router) errorLog() string { return filepath.Join(r.cfg.Prefix, "logs", "error.log") }

// hashMaxSize is a server_names_hash_max_size that fits names server
// names: the next power of two of twice their number, at least 512.
func hashMaxSize(names int) int {
	n := 512
	for n < 2*names {
		n *= 2
	}
	return n
}
