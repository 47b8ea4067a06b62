package router

import (
	"crypto/sha256"
	_ "embed"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Mode says who owns nginx.
type Mode string

const (
	// Managed: steward runs its own nginx under Config.Prefix.
	Managed Mode = "managed"
	// System: steward writes Config.IncludeFile for an nginx it does not
	// own and runs Config.TestCommand and Config.ReloadCommand.
	System Mode = "system"
)

// Defaults of Config's optional fields.
const (
	DefaultRetryAfter            = 30
	DefaultProxyConnectTimeout   = 5 * time.Second
	DefaultProxyReadTimeout      = 60 * time.Second
	DefaultWorkerShutdownTimeout = 60 * time.Second
	DefaultMinInterval           = 200 * time.Millisecond
	DefaultReloadTimeout         = 10 * time.Second
	DefaultCheckInterval         = 5 * time.Second
	DefaultSystemListen          = "80"
)

// Config configures a Router. The zero values of optional fields take the
// defaults above.
type Config struct {
	// Mode is Managed or System.
	Mode Mode
	// Listen is the nginx listen address of the merchants' servers, like
	// "127.0.0.1:8080", "8080" or "[::]:80". Required in managed mode;
	// DefaultSystemListen in system mode.
	Listen string
	// Binary is the nginx executable: a path, or a name looked up in PATH.
	// Default "nginx".
	Binary string

	// Prefix (managed, required) is the absolute directory nginx gets: its
	// nginx.conf, pid file, logs/, temp/, pages/ and control socket live
	// there. steward creates it.
	Prefix string
	// User (managed, required when steward runs as root) is the
	// unprivileged user nginx's workers run as; its primary group is used.
	// The prefix must be traversable by it. Ignored when not root: there
	// is no user directive then.
	User string
	// WorkerShutdownTimeout (managed) bounds how long workers of a
	// replaced configuration may finish their requests after a reload.
	WorkerShutdownTimeout time.Duration

	// IncludeFile (system, required) is the absolute path of the file
	// steward owns and rewrites; the operator's nginx.conf includes it
	// inside its http block.
	IncludeFile string
	// PagesDir (system) is where maintenance pages are written; default
	// the directory "steward-pages" beside IncludeFile. nginx's workers
	// must be able to read it.
	PagesDir string
	// TestCommand (system) checks the operator's configuration with the
	// include in place; default [Binary, "-t"].
	TestCommand []string
	// ReloadCommand (system) makes the operator's nginx load it; default
	// [Binary, "-s", "reload"].
	ReloadCommand []string
	// NoDefaultServer (system) leaves out the default server (404 for an
	// unknown Host, and home of path-prefix routes), for an operator whose
	// nginx has its own default server on Listen. Path-prefix routes are
	// then refused.
	NoDefaultServer bool

	// Control is the nginx listen address of the local control server that
	// tells which configuration nginx serves: "unix:/abs/path" or
	// "127.0.0.1:PORT". Default unix:Prefix/control.sock (managed), or
	// unix:DIR/steward-control.sock with DIR the directory of IncludeFile
	// (system).
	Control string

	// MaintenancePage is an HTML file (an html/template) that overrides the
	// embedded maintenance page. It sees .Merchant, .Reason (the route's
	// Reason, escaped by the template), .Maintenance (false when the page
	// stands in for an instance that does not answer) and .RetryAfter.
	MaintenancePage string
	// RetryAfter is the Retry-After header, in seconds, of a 503 answer.
	RetryAfter int
	// ProxyConnectTimeout is nginx's proxy_connect_timeout.
	ProxyConnectTimeout time.Duration
	// ProxyReadTimeout is nginx's proxy_read_timeout and proxy_send_timeout.
	ProxyReadTimeout time.Duration

	// MinInterval is the least time Run leaves between two applies.
	MinInterval time.Duration
	// ReloadTimeout bounds how long a reload or start may take until nginx
	// serves the new configuration.
	ReloadTimeout time.Duration
	// CheckInterval is how often Run checks that a managed nginx runs.
	CheckInterval time.Duration

	// Logger receives reloads, restarts and failures; default slog.Default().
	Logger *slog.Logger
}

//go:embed maintenance.html
var defaultPage string

// Router renders, checks and loads nginx's routing. Its methods are safe
// for concurrent use.
type Router struct {
	cfg    Config
	bin    string // resolved absolute path of the nginx executable
	user   string // managed as root: the workers' user and group
	group  string
	pages  string // directory of the maintenance pages
	live   string // the live configuration file
	page   *template.Template
	log    *slog.Logger
	client *http.Client // to the control server

	// opMu serialises the operations that change files or processes:
	// Apply, Ensure, Stop. It guards pageSums.
	opMu     sync.Mutex
	pageSums map[string][sha256.Size]byte // pages written, by file name

	mu         sync.Mutex
	master     proc    // managed: the nginx master, once started or adopted
	health     Health  // see Status
	lastRoutes []Route // the routes of the last successful Apply
	table      *table
	seq        uint64        // bumped by each Set, Put, Delete
	done       uint64        // the seq the last finished apply covered
	doneErr    error         // and its result
	doneCh     chan struct{} // closed and replaced when done changes
	wake       chan struct{}
}

// pathRe is what a path rendered into nginx's configuration may hold.
var pathRe = regexp.MustCompile(`^/[A-Za-z0-9._/+@=,-]*$`)

// listenRe is an nginx listen address: [host:]port, with an IPv6 host in
// brackets.
var listenRe = regexp.MustCompile(`^((\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.*-]+):)?[0-9]{1,5}$`)

// maxUnixPath is the longest unix socket path the kernel accepts.
const maxUnixPath = 107

// New checks cfg, fills in its defaults and returns a Router. It starts
// nothing: see Ensure and Run.
func New(cfg Config) (*Router, error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	checkPath := func(name, p string) {
		if !pathRe.MatchString(p) {
			bad("router: %s %q must be an absolute path of letters, digits and \"._/+@=,-\" (it is written into nginx's configuration)", name, p)
		}
	}
	if cfg.Binary == "" {
		cfg.Binary = "nginx"
	}
	bin, err := exec.LookPath(cfg.Binary)
	if err == nil {
		bin, err = filepath.Abs(bin)
	}
	if err == nil {
		bin, err = filepath.EvalSymlinks(bin)
	}
	if err != nil {
		bad("router: nginx executable %q: %v (install nginx, for example apt-get install nginx-light, or set the binary)", cfg.Binary, err)
	}
	r := &Router{bin: bin, table: newTable(), doneCh: make(chan struct{}), wake: make(chan struct{}, 1)}
	switch cfg.Mode {
	case Managed:
		if cfg.Listen == "" {
			bad("router: managed mode needs a listen address, like 127.0.0.1:8080")
		}
		if cfg.Prefix == "" {
			bad("router: managed mode needs a prefix directory")
		} else {
			cfg.Prefix = filepath.Clean(cfg.Prefix)
			checkPath("prefix", cfg.Prefix)
		}
		r.pages = filepath.Join(cfg.Prefix, "pages")
		r.live = filepath.Join(cfg.Prefix, "nginx.conf")
		if cfg.Control == "" {
			cfg.Control = "unix:" + filepath.Join(cfg.Prefix, "control.sock")
		}
		if os.Geteuid() == 0 {
			if cfg.User == "" {
				bad("router: steward runs as root, so nginx's workers need an unprivileged user: set the router's user (for example runtime.user)")
			} else if r.user, r.group, err = lookupUser(cfg.User); err != nil {
				bad("router: %v", err)
			}
		}
		if cfg.WorkerShutdownTimeout == 0 {
			cfg.WorkerShutdownTimeout = DefaultWorkerShutdownTimeout
		}
	case System:
		if cfg.Listen == "" {
			cfg.Listen = DefaultSystemListen
		}
		if cfg.IncludeFile == "" {
			bad("router: system mode needs the include file that nginx.conf includes in its http block")
		} else {
			cfg.IncludeFile = filepath.Clean(cfg.IncludeFile)
			checkPath("include file", cfg.IncludeFile)
		}
		if cfg.PagesDir == "" {
			cfg.PagesDir = filepath.Join(filepath.Dir(cfg.IncludeFile), "steward-pages")
		}
		checkPath("pages directory", cfg.PagesDir)
		r.pages = cfg.PagesDir
		r.live = cfg.IncludeFile
		if cfg.Control == "" {
			cfg.Control = "unix:" + filepath.Join(filepath.Dir(cfg.IncludeFile), "steward-control.sock")
		}
		if len(cfg.TestCommand) == 0 {
			cfg.TestCommand = []string{bin, "-t"}
		}
		if len(cfg.ReloadCommand) == 0 {
			cfg.ReloadCommand = []string{bin, "-s", "reload"}
		}
	default:
		bad("router: mode %q: use %q or %q", cfg.Mode, Managed, System)
	}
	if cfg.Listen != "" && !listenRe.MatchString(cfg.Listen) {
		bad("router: listen %q: use [host:]port, like 127.0.0.1:8080 or [::]:80", cfg.Listen)
	}
	if sock, ok := strings.CutPrefix(cfg.Control, "unix:"); ok {
		checkPath("control socket", sock)
		if len(sock) > maxUnixPath {
			bad("router: control socket %s is longer than %d bytes, which unix sockets cannot be: set a shorter one, or 127.0.0.1:PORT", sock, maxUnixPath)
		}
	} else if host, port, err := net.SplitHostPort(cfg.Control); err != nil || net.ParseIP(host) == nil || !net.ParseIP(host).IsLoopback() || !listenRe.MatchString(cfg.Control) {
		bad("router: control %q: use unix:/path or 127.0.0.1:PORT (a loopback address)", cfg.Control)
	} else if cfg.Control == cfg.Listen || port == cfg.Listen {
		bad("router: control %q must differ from listen %q", cfg.Control, cfg.Listen)
	}
	if cfg.RetryAfter == 0 {
		cfg.RetryAfter = DefaultRetryAfter
	}
	if cfg.RetryAfter < 0 {
		bad("router: retry-after %d must not be negative", cfg.RetryAfter)
	}
	if cfg.ProxyConnectTimeout == 0 {
		cfg.ProxyConnectTimeout = DefaultProxyConnectTimeout
	}
	if cfg.ProxyReadTimeout == 0 {
		cfg.ProxyReadTimeout = DefaultProxyReadTimeout
	}
	for name, d := range map[string]time.Duration{"proxy connect timeout": cfg.ProxyConnectTimeout, "proxy read timeout": cfg.ProxyReadTimeout, "worker shutdown timeout": cfg.WorkerShutdownTimeout} {
		if d < 0 || (d > 0 && d < time.Millisecond) {
			bad("router: %s %s must be at least 1ms", name, d)
		}
	}
	if cfg.MinInterval == 0 {
		cfg.MinInterval = DefaultMinInterval
	}
	if cfg.ReloadTimeout == 0 {
		cfg.ReloadTimeout = DefaultReloadTimeout
	}
	if cfg.CheckInterval == 0 {
		cfg.CheckInterval = DefaultCheckInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	src := defaultPage
	if cfg.MaintenancePage != "" {
		b, err := os.ReadFile(cfg.MaintenancePage)
		if err != nil {
			bad("router: maintenance page: %v", err)
		}
		src = string(b)
	}
	if r.page, err = template.New("maintenance").Parse(src); err != nil {
		bad("router: maintenance page %s: %v", cfg.MaintenancePage, err)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	r.cfg = cfg
	r.log = cfg.Logger.With("component", "router", "mode", string(cfg.Mode))
	r.client = controlClient(cfg.Control)
	r.loadHealth()
	r.health.Mode = cfg.Mode
	return r, nil
}

// lookupUser returns the names of the user and of its primary group.
func lookupUser(name string) (string, string, error) {
	u, err := user.Lookup(name)
	if err != nil {
		if _, nerr := strconv.ParseUint(name, 10, 32); nerr != nil {
			return "", "", fmt.Errorf("nginx worker user %q: %w", name, err)
		}
		if u, err = user.LookupId(name); err != nil {
			return "", "", fmt.Errorf("nginx worker user %q: %w", name, err)
		}
	}
	if u.Uid == "0" {
		return "", "", fmt.Errorf("nginx worker user %q is root; use an unprivileged user", name)
	}
	g, err := user.LookupGroupId(u.Gid)
	if err != nil {
		return "", "", fmt.Errorf("nginx worker user %q: primary group %s: %w", name, u.Gid, err)
	}
	if !pathRe.MatchString("/"+u.Username) || !pathRe.MatchString("/"+g.Name) {
		return "", "", fmt.Errorf("nginx worker user %q or its group %q has characters nginx's configuration cannot carry", u.Username, g.Name)
	}
	return u.Username, g.Name, nil
}

// Config returns the configuration in force, defaults filled in.
func (r *Router) Config() Config { return r.cfg }
