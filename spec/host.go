package spec

import (
	"errors"
	"fmt"
	"math"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"

	"steward/internal/safefile"
)

// Host is the per-machine configuration (steward.hcl). Relative paths in it
// are resolved against the directory of the file and stored absolute.
type Host struct {
	// File is the absolute path of the config file.
	File    string
	Source  SourceConfig
	State   StateConfig
	Runtime RuntimeConfig
	API     APIConfig
	Daemon  DaemonConfig
	// Router routes requests to merchants by domain (the router block); nil
	// without one.
	Router *RouterConfig
	// Limits bound what steward reads from specs, manifests, packages and
	// API requests (the limits block); every field is set.
	Limits Limits

	// secrets are the secret values met while loading (see Redactor).
	secrets []string
}

// SourceConfig says where fleet specs come from: a local directory, or git.
type SourceConfig struct {
	// Path is the local directory of spec files (absolute).
	Path string
	Git  *GitConfig
}

// GitConfig is a git source.
type GitConfig struct {
	URL  string
	Ref  string
	Dir  string
	Poll time.Duration
	// SSHKeyFile is a private key for ssh URLs (absolute path).
	SSHKeyFile string
	// TokenEnv names the environment variable holding an HTTP token.
	TokenEnv string
}

// StateConfig says where state lives.
type StateConfig struct {
	// Path is the embedded backend's directory (absolute).
	Path string
	// PostgresDSN selects the PostgreSQL backend when set.
	PostgresDSN Secret
}

// RuntimeConfig is where and how merchant processes run.
type RuntimeConfig struct {
	Root string
	// Ports is the inclusive range ports are assigned from; fixed ports in
	// specs must lie inside it too.
	Ports PortRange
	// User is the unprivileged user merchants run as when steward is root;
	// UserRange is where it is set (zero when it is not).
	User      string
	UserRange hcl.Range
	// UIDs, when set (steward runs as root), gives every merchant a user
	// of its own instead of User: the uid (and gid) Low plus a slot kept
	// in the merchant's record, with no other groups, so that merchants
	// cannot read each other's environment, files and logs or signal each
	// other's processes. The ids need no account on the host.
	UIDs        PortRange
	StopGrace   time.Duration
	LogMaxBytes int64
	LogKeep     int
}

// APIConfig is the daemon's HTTP API.
type APIConfig struct {
	Listen string
	// Token and WebhookSecret are evaluated when used (Value), so that a
	// command that does not need them works while the variable they read
	// is unset; only the commands that serve or call the API evaluate them.
	Token         DeferredSecret
	WebhookSecret DeferredSecret
	// Hosts are the host names the API may be reached by besides IP
	// addresses and localhost (a proxy's name); requests naming another
	// host are refused, against DNS rebinding.
	Hosts []string
}

// RouterConfig is how requests reach merchants. Nginx is its only kind.
type RouterConfig struct {
	Nginx NginxConfig
}

// Router modes.
const (
	// RouterManaged: steward runs and supervises its own nginx, listening on
	// Listen, with its prefix under runtime.root.
	RouterManaged = "managed"
	// RouterSystem: steward writes IncludeFile for an nginx it does not
	// own, and runs TestCommand and ReloadCommand.
	RouterSystem = "system"
)

// NginxConfig is the nginx router. Paths are absolute.
type NginxConfig struct {
	// Mode is RouterManaged (the default) or RouterSystem.
	Mode string
	// Listen is the address the server blocks listen on: required when
	// managed; when system, optional (the blocks then say no listen, and
	// nginx's default applies).
	Listen string
	// Binary is the nginx program: a name looked up in PATH ("nginx", the
	// default) or a path.
	Binary string
	// IncludeFile is the file steward writes, which the system nginx
	// includes; system only, and required there.
	IncludeFile string
	// TestCommand and ReloadCommand check and reload the system nginx
	// (system only; default Binary -t and Binary -s reload). Non-empty.
	TestCommand   []string
	ReloadCommand []string
	// MaintenancePage is the HTML answered with 503 for a merchant that
	// cannot serve; empty for the built-in page.
	MaintenancePage string
	// RetryAfter is the Retry-After of that answer (at least 1s, whole
	// seconds).
	RetryAfter time.Duration
	// ProxyConnectTimeout and ProxyReadTimeout bound the proxying to a
	// merchant; both positive.
	ProxyConnectTimeout time.Duration
	ProxyReadTimeout    time.Duration
}

// Router defaults.
const (
	DefaultNginxBinary         = "nginx"
	DefaultRetryAfter          = 30 * time.Second
	DefaultProxyConnectTimeout = 2 * time.Second
	DefaultProxyReadTimeout    = 60 * time.Second
)

// DaemonConfig tunes `steward run`.
type DaemonConfig struct {
	Workers int
	Resync  time.Duration
}

// PortRange is an inclusive range of TCP ports.
type PortRange struct{ Low, High int }

func (r PortRange) Contains(p int) bool { return p >= r.Low && p <= r.High }
func (r PortRange) String() string      { return fmt.Sprintf("%d-%d", r.Low, r.High) }

// ParsePortRange parses "8100-8999".
func ParsePortRange(s string) (PortRange, error) {
	lo, hi, ok := strings.Cut(strings.TrimSpace(s), "-")
	if !ok {
		return PortRange{}, fmt.Errorf("%q is not a port range; write it as LOW-HIGH, for example \"8100-8999\"", s)
	}
	l, err1 := strconv.Atoi(strings.TrimSpace(lo))
	h, err2 := strconv.Atoi(strings.TrimSpace(hi))
	if err1 != nil || err2 != nil {
		return PortRange{}, fmt.Errorf("%q is not a port range; write it as LOW-HIGH, for example \"8100-8999\"", s)
	}
	if l < 1 || h > 65535 || l > h {
		return PortRange{}, fmt.Errorf("port range %q must satisfy 1 <= LOW <= HIGH <= 65535", s)
	}
	return PortRange{Low: l, High: h}, nil
}

// Defaults for the host config.
const (
	DefaultPorts       = "8100-8999"
	DefaultListen      = "127.0.0.1:7070"
	DefaultStopGrace   = 10 * time.Second
	DefaultLogMaxBytes = 10 << 20
	DefaultLogKeep     = 5
	DefaultResync      = time.Minute
	DefaultWorkers     = 4
	DefaultGitPoll     = 30 * time.Second
)

var hostSchema = &hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{
	{Type: "source"}, {Type: "state"}, {Type: "runtime"}, {Type: "api"}, {Type: "daemon"}, {Type: "limits"}, {Type: "router"},
}}

// LoadHost reads and validates the host config at path. The returned Host is
// usable only when the diagnostics have no errors. The file is read and
// checked with DefaultLimits: its own limits block applies to what steward
// reads later.
func LoadHost(path string) (*Host, map[string]*hcl.File, hcl.Diagnostics) {
	src, err := ReadFile(path, DefaultLimits)
	if err != nil {
		if errors.Is(err, safefile.ErrTooLarge) {
			return nil, nil, hcl.Diagnostics{readDiag("Cannot read host config", path, err, hostLimitsFixed)}
		}
		return nil, nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Cannot read host config",
			Detail: fmt.Sprintf("%s. Pass -config FILE or set STEWARD_CONFIG to the host config (for example examples/steward.hcl).", err)}}
	}
	return LoadHostBytes(src, path)
}

// LoadHostBytes is LoadHost for content already read; path names the file
// and relative paths resolve against its directory.
func LoadHostBytes(src []byte, path string) (*Host, map[string]*hcl.File, hcl.Diagnostics) {
	if diags := checkSource(path, src, DefaultLimits, hostLimitsFixed); diags.HasErrors() {
		return nil, nil, diags
	}
	p := hclparse.NewParser()
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = path
	}
	f, diags := p.ParseHCL(src, path)
	if diags.HasErrors() {
		return nil, p.Files(), diags
	}
	h, more := decodeHost(f.Body, filepath.Dir(abs))
	h.File = abs
	diags = append(diags, more...)
	RedactDiagnostics(diags, h.Redactor())
	return h, p.Files(), diags
}

func decodeHost(body hcl.Body, base string) (*Host, hcl.Diagnostics) {
	d := newDecoder()
	h := &Host{
		Source:  SourceConfig{Path: base},
		State:   StateConfig{Path: filepath.Join(base, ".steward", "state")},
		Runtime: RuntimeConfig{Root: filepath.Join(base, ".steward", "run"), StopGrace: DefaultStopGrace, LogMaxBytes: DefaultLogMaxBytes, LogKeep: DefaultLogKeep},
		API:     APIConfig{Listen: DefaultListen, Token: DeferredSecret{name: "api.token"}, WebhookSecret: DeferredSecret{name: "api.webhook_secret"}},
		Daemon:  DaemonConfig{Workers: DefaultWorkers, Resync: DefaultResync},
		Limits:  DefaultLimits,
	}
	h.Runtime.Ports, _ = ParsePortRange(DefaultPorts)
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(base, p)
	}
	c := d.content(body, hostSchema)
	if c == nil {
		h.secrets = d.secretList()
		return h, d.diags
	}
	for _, typ := range []string{"source", "state", "runtime", "api", "daemon", "limits", "router"} {
		d.oneBlock(c.Blocks, typ)
	}
	for _, b := range c.Blocks {
		switch b.Type {
		case "source":
			bc := d.content(b.Body, &hcl.BodySchema{Attributes: attrNames("path"), Blocks: []hcl.BlockHeaderSchema{{Type: "git"}}})
			if bc == nil {
				continue
			}
			if d.str(bc.Attributes, "path", &h.Source.Path) != nil {
				h.Source.Path = abs(h.Source.Path)
			}
			if g := d.oneBlock(bc.Blocks, "git"); g != nil {
				gc := d.content(g.Body, &hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "url", Required: true}, {Name: "ref"}, {Name: "dir"}, {Name: "poll"}, {Name: "ssh_key_file"}, {Name: "token_env"}}})
				gitc := &GitConfig{Ref: "main", Poll: DefaultGitPoll}
				if gc != nil {
					d.str(gc.Attributes, "url", &gitc.URL)
					d.str(gc.Attributes, "ref", &gitc.Ref)
					d.str(gc.Attributes, "dir", &gitc.Dir)
					d.duration(gc.Attributes, "poll", &gitc.Poll)
					if d.str(gc.Attributes, "ssh_key_file", &gitc.SSHKeyFile) != nil {
						gitc.SSHKeyFile = abs(gitc.SSHKeyFile)
					}
					d.str(gc.Attributes, "token_env", &gitc.TokenEnv)
				}
				h.Source.Git = gitc
				if bc.Attributes["path"] != nil {
					d.errorf(g.DefRange, "Conflicting sources", "A source has either path or a git block, not both.")
				}
			}
		case "state":
			bc := d.content(b.Body, &hcl.BodySchema{Attributes: attrNames("path"), Blocks: []hcl.BlockHeaderSchema{{Type: "postgres"}}})
			if bc == nil {
				continue
			}
			if d.str(bc.Attributes, "path", &h.State.Path) != nil {
				h.State.Path = abs(h.State.Path)
			}
			if pg := d.oneBlock(bc.Blocks, "postgres"); pg != nil {
				pc := d.content(pg.Body, &hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "dsn", Required: true}}})
				if pc != nil {
					d.secret(pc.Attributes, "dsn", &h.State.PostgresDSN)
				}
				d.errorf(pg.DefRange, "Unsupported state backend",
					"state { postgres } is not available in this version of steward: its state lives in the embedded file store. Remove the postgres block and use state { path = \".steward/state\" } (or leave state out for that default).")
			}
		case "runtime":
			bc := d.content(b.Body, &hcl.BodySchema{Attributes: attrNames("root", "ports", "user", "uids", "stop_grace", "log_max_size", "log_keep")})
			if bc == nil {
				continue
			}
			if d.str(bc.Attributes, "root", &h.Runtime.Root) != nil {
				h.Runtime.Root = abs(h.Runtime.Root)
			}
			var ports string
			if a := d.str(bc.Attributes, "ports", &ports); a != nil && ports != "" {
				r, err := ParsePortRange(ports)
				if err != nil {
					d.errorf(a.Expr.Range(), "Invalid port range", "%s.", err)
				} else {
					h.Runtime.Ports = r
				}
			}
			if a := d.str(bc.Attributes, "user", &h.Runtime.User); a != nil {
				h.Runtime.UserRange = a.Expr.Range()
			}
			var uids string
			if a := d.str(bc.Attributes, "uids", &uids); a != nil && uids != "" {
				lo, hi, ok := strings.Cut(strings.TrimSpace(uids), "-")
				l, err1 := strconv.Atoi(strings.TrimSpace(lo))
				hh, err2 := strconv.Atoi(strings.TrimSpace(hi))
				switch {
				case !ok || err1 != nil || err2 != nil || l > hh:
					d.errorf(a.Expr.Range(), "Invalid uid range", "runtime.uids is a range of user ids, LOW-HIGH, for example \"70000-79999\"; got %q.", uids)
				case l < 1000 || hh > 2147483646:
					d.errorf(a.Expr.Range(), "Invalid uid range", "runtime.uids must lie within 1000-2147483646 (below 1000 are the system's accounts); got %q.", uids)
				default:
					h.Runtime.UIDs = PortRange{Low: l, High: hh}
				}
			}
			d.duration(bc.Attributes, "stop_grace", &h.Runtime.StopGrace)
			var size string
			if a := d.str(bc.Attributes, "log_max_size", &size); a != nil && size != "" {
				n, err := ParseSize(size)
				if err != nil {
					d.errorf(a.Expr.Range(), "Invalid size", "%s.", err)
				} else {
					h.Runtime.LogMaxBytes = n
				}
			}
			d.integer(bc.Attributes, "log_keep", 0, 1000, &h.Runtime.LogKeep)
		case "api":
			bc := d.content(b.Body, &hcl.BodySchema{Attributes: attrNames("listen", "token", "webhook_secret", "hosts")})
			if bc == nil {
				continue
			}
			if a := d.str(bc.Attributes, "listen", &h.API.Listen); a != nil {
				if _, err := listenPort(h.API.Listen); err != nil {
					d.errorf(a.Expr.Range(), "Invalid listen address", "api.listen: %s.", err)
				}
			}
			d.deferredSecret(bc.Attributes, "token", &h.API.Token)
			d.deferredSecret(bc.Attributes, "webhook_secret", &h.API.WebhookSecret)
			if a := d.strList(bc.Attributes, "hosts", &h.API.Hosts); a != nil {
				for _, n := range h.API.Hosts {
					if strings.HasPrefix(n, "*.") || domainError(n, true) != "" {
						d.errorf(a.Expr.Range(), "Invalid api.hosts", "api.hosts lists host names the API is reached by (for example a proxy's name, \"steward.example.com\"); %q is not one: write it in lower case, without port or wildcard.", n)
					}
				}
			}
		case "daemon":
			bc := d.content(b.Body, &hcl.BodySchema{Attributes: attrNames("workers", "resync")})
			if bc == nil {
				continue
			}
			d.integer(bc.Attributes, "workers", 1, 256, &h.Daemon.Workers)
			if a := d.duration(bc.Attributes, "resync", &h.Daemon.Resync); a != nil && h.Daemon.Resync < time.Second {
				d.errorf(a.Expr.Range(), "Invalid resync", "resync must be at least 1s.")
			}
		case "limits":
			d.limits(b, &h.Limits)
		case "router":
			h.Router = d.router(b, abs)
		}
	}
	h.secrets = d.secretList()
	return h, d.diags
}

var limitsSchema = &hcl.BodySchema{Attributes: attrNames("spec_file_size", "spec_total_size", "spec_depth", "api_body_size", "package_size", "unpack_files", "unpack_size", "git_fetch_memory")}

// limits decodes a limits block over the defaults already in l.
func (d *decoder) limits(b *hcl.Block, l *Limits) {
	c := d.content(b.Body, limitsSchema)
	if c == nil {
		return
	}
	d.size(c.Attributes, "spec_file_size", minFileSizeLimit, maxFileSizeLimit, &l.FileSize)
	d.size(c.Attributes, "spec_total_size", minFileSizeLimit, 1<<30, &l.TotalSize)
	d.integer(c.Attributes, "spec_depth", minDepthLimit, maxDepthLimit, &l.Depth)
	d.size(c.Attributes, "api_body_size", 1<<10, 1<<40, &l.APIBody)
	d.size(c.Attributes, "package_size", 1<<10, 1<<50, &l.PackageSize)
	d.integer(c.Attributes, "unpack_files", 1, 100_000_000, &l.UnpackFiles)
	d.size(c.Attributes, "unpack_size", 1<<10, 1<<50, &l.UnpackSize)
	d.size(c.Attributes, "git_fetch_memory", 64<<20, 1<<40, &l.GitFetchMemory)
}

// size decodes a size attribute ("10MB", or a number of bytes) that must
// lie in [min, max].
func (d *decoder) size(attrs hcl.Attributes, name string, min, max int64, dst *int64) *hcl.Attribute {
	var s string
	a := d.str(attrs, name, &s)
	if a == nil {
		return nil
	}
	n, err := ParseSize(s)
	switch {
	case err != nil:
		d.errorf(a.Expr.Range(), "Invalid size", "%s.", err)
	case n < min || n > max:
		d.errorf(a.Expr.Range(), "Invalid "+name, "%s must be from %s to %s; got %s.", name, FormatSize(min), FormatSize(max), d.shown(a, FormatSize(n)))
	default:
		*dst = n
	}
	return a
}

var nginxSchema = &hcl.BodySchema{Attributes: attrNames("mode", "listen", "binary", "include_file", "test_command", "reload_command",
	"maintenance_page", "retry_after", "proxy_connect_timeout", "proxy_read_timeout")}

// router decodes a router block; abs makes a path absolute against the
// config's directory.
func (d *decoder) router(b *hcl.Block, abs func(string) string) *RouterConfig {
	c := d.content(b.Body, &hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{{Type: "nginx"}}})
	if c == nil {
		return nil
	}
	nb := d.oneBlock(c.Blocks, "nginx")
	if nb == nil {
		d.errorf(b.DefRange, "Missing router kind", "A router block needs an nginx block, for example router { nginx { listen = \"127.0.0.1:8080\" } }.")
		return nil
	}
	n := NginxConfig{Mode: RouterManaged, Binary: DefaultNginxBinary, RetryAfter: DefaultRetryAfter,
		ProxyConnectTimeout: DefaultProxyConnectTimeout, ProxyReadTimeout: DefaultProxyReadTimeout}
	nc := d.content(nb.Body, nginxSchema)
	if nc == nil {
		return &RouterConfig{Nginx: n}
	}
	at := nc.Attributes
	if a := d.str(at, "mode", &n.Mode); a != nil && !oneOf(n.Mode, RouterManaged, RouterSystem) {
		d.errorf(a.Expr.Range(), "Invalid router mode", "mode must be %q (steward runs its own nginx) or %q (steward writes an include file for the system's nginx); got %q.", RouterManaged, RouterSystem, n.Mode)
	}
	if a := d.str(at, "listen", &n.Listen); a != nil {
		if p, err := listenPort(n.Listen); err != nil {
			d.errorf(a.Expr.Range(), "Invalid listen address", "router.nginx.listen: %s.", err)
		} else if p == 0 {
			d.errorf(a.Expr.Range(), "Invalid listen address", "router.nginx.listen needs a port other than 0: nginx's address is where users connect.")
		}
	}
	if a := d.str(at, "binary", &n.Binary); a != nil {
		if n.Binary == "" {
			d.errorf(a.Expr.Range(), "Empty binary", "binary names the nginx program: a name looked up in PATH, or a path.")
		} else if strings.Contains(n.Binary, "/") {
			n.Binary = abs(n.Binary)
		}
	}
	if d.str(at, "include_file", &n.IncludeFile) != nil && n.IncludeFile != "" {
		n.IncludeFile = abs(n.IncludeFile)
	}
	if d.str(at, "maintenance_page", &n.MaintenancePage) != nil && n.MaintenancePage != "" {
		n.MaintenancePage = abs(n.MaintenancePage)
	}
	n.TestCommand, n.ReloadCommand = []string{n.Binary, "-t"}, []string{n.Binary, "-s", "reload"}
	for _, cmd := range []struct {
		name string
		dst  *[]string
	}{{"test_command", &n.TestCommand}, {"reload_command", &n.ReloadCommand}} {
		if a := d.strList(at, cmd.name, cmd.dst); a != nil && (len(*cmd.dst) == 0 || (*cmd.dst)[0] == "") {
			d.errorf(a.Expr.Range(), "Invalid "+cmd.name, "%s is the program and its arguments, for example [\"nginx\", \"-t\"]; the program must not be empty.", cmd.name)
		}
	}
	if a := d.duration(at, "retry_after", &n.RetryAfter); a != nil && (n.RetryAfter < time.Second || n.RetryAfter%time.Second != 0) {
		d.errorf(a.Expr.Range(), "Invalid retry_after", "retry_after is the Retry-After header, in whole seconds of at least 1s; got %s.", d.shown(a, n.RetryAfter.String()))
	}
	for _, t := range []struct {
		name string
		dst  *time.Duration
	}{{"proxy_connect_timeout", &n.ProxyConnectTimeout}, {"proxy_read_timeout", &n.ProxyReadTimeout}} {
		if a := d.duration(at, t.name, t.dst); a != nil && *t.dst < time.Millisecond {
			d.errorf(a.Expr.Range(), "Invalid "+t.name, "%s must be at least 1ms.", t.name)
		}
	}
	switch n.Mode {
	case RouterManaged:
		if at["listen"] == nil {
			d.errorf(nb.DefRange, "Missing listen", "A managed nginx needs listen, the address users connect to, for example listen = \"127.0.0.1:8080\".")
		}
		for _, name := range []string{"include_file", "test_command", "reload_command"} {
			if a := at[name]; a != nil {
				d.errorf(a.NameRange, "Not for a managed nginx", "%s is only for mode = %q: steward writes, tests and reloads its own nginx's configuration itself.", name, RouterSystem)
			}
		}
	case RouterSystem:
		if at["include_file"] == nil {
			d.errorf(nb.DefRange, "Missing include_file", "A system nginx needs include_file, the file steward writes and nginx includes, for example include_file = \"/etc/nginx/conf.d/steward.conf\".")
		}
	}
	return &RouterConfig{Nginx: n}
}

// listenPort returns the port of a listen address "HOST:PORT" (0: any).
func listenPort(addr string) (int, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, fmt.Errorf("%q is not a listen address; write HOST:PORT, for example \"127.0.0.1:7070\"", addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return 0, fmt.Errorf("%q has no port number from 0 to 65535", addr)
	}
	return n, nil
}

// ReservedPorts returns the ports steward itself listens on by this host
// config, each with the setting that owns it: api.listen, and the managed
// router's listen address. Pass it as Options.ReservedPorts so that no
// merchant asks for one; port assignment must skip them too.
func (h *Host) ReservedPorts() map[int]string {
	out := map[int]string{}
	if p, err := listenPort(h.API.Listen); err == nil && p > 0 {
		out[p] = "api.listen"
	}
	if h.Router != nil && h.Router.Nginx.Listen != "" {
		if p, err := listenPort(h.Router.Nginx.Listen); err == nil && p > 0 {
			out[p] = "router.nginx.listen"
		}
	}
	return out
}

// ParseSize parses sizes such as "10MB", "512KiB" or "1048576".
func ParseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"GIB", 1 << 30}, {"MIB", 1 << 20}, {"KIB", 1 << 10}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.m
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%q is not a size; write for example \"10MB\" or \"512KB\"", s)
	}
	if n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q is too large a size", s)
	}
	return n * mult, nil
}
