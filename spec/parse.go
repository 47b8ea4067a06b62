package spec

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"path/filepath"
	"regexp"
	goruntime "runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// Options are the host settings fleet validation depends on.
type Options struct {
	// Ports is the runtime port range fixed ports must lie in.
	Ports PortRange
	// Limits bound every source before it is parsed (FileSize and Depth);
	// zero fields take DefaultLimits. Pass the host config's Host.Limits.
	Limits Limits
	// ReservedPorts are the ports steward itself listens on, each with the
	// setting that owns it ("api.listen"); no merchant may ask for one. Pass
	// the host config's Host.ReservedPorts().
	ReservedPorts map[int]string
}

// Files maps file names (as they appear in diagnostics) to parsed files, for
// rendering diagnostics with source snippets.
type Files = map[string]*hcl.File

// SpecFiles lists the *.hcl files below dir, sorted, skipping hidden
// directories and files.
func SpecFiles(dir string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := e.Name()
		if p != dir && strings.HasPrefix(name, ".") {
			if e.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !e.IsDir() && strings.HasSuffix(name, ".hcl") {
			out = append(out, p)
		}
		return nil
	})
	sort.Strings(out)
	return out, err
}

// LoadDir reads every spec file below dir and returns the validated fleet.
// File names in diagnostics are as given (dir joined with the relative path).
func LoadDir(dir string, opts Options) (*Fleet, Files, hcl.Diagnostics) {
	paths, err := SpecFiles(dir)
	if err != nil {
		return nil, nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Cannot read specs", Detail: err.Error()}}
	}
	if len(paths) == 0 {
		return nil, nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "No spec files",
			Detail: fmt.Sprintf("No *.hcl files were found in %s; point source.path in the host config at the directory of merchant specs.", dir)}}
	}
	srcs := make([]Source, 0, len(paths))
	var diags hcl.Diagnostics
	for _, p := range paths {
		b, err := ReadFile(p, opts.Limits)
		if err != nil {
			diags = append(diags, readDiag("Cannot read spec file", p, err, ""))
			continue
		}
		srcs = append(srcs, Source{Name: p, Dir: filepath.Dir(p), Bytes: b})
	}
	if diags.HasErrors() {
		return nil, nil, diags
	}
	return Load(srcs, opts)
}

// Source is one spec file's content.
type Source struct {
	// Name is the file name used in diagnostics.
	Name string
	// Dir is the directory relative package sources resolve against.
	Dir   string
	Bytes []byte
}

// ContentRevision digests sources by their paths relative to the
// directory they have in common, and their content. The order of srcs and
// where that directory is do not matter; moving a file to another
// subdirectory does (relative package sources resolve against it).
func ContentRevision(srcs []Source) string {
	root := commonDir(srcs)
	type entry struct {
		name string
		b    []byte
	}
	es := make([]entry, len(srcs))
	for i, s := range srcs {
		rel, err := filepath.Rel(root, s.Name)
		if err != nil {
			rel = filepath.Base(s.Name)
		}
		es[i] = entry{filepath.ToSlash(rel), s.Bytes}
	}
	sort.Slice(es, func(a, b int) bool { return es[a].name < es[b].name })
	h := sha256.New()
	for _, e := range es {
		fmt.Fprintf(h, "%s\x00%d\x00", e.name, len(e.b))
		h.Write(e.b)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))[:16]
}

// commonDir is the longest directory that holds every source.
func commonDir(srcs []Source) string {
	if len(srcs) == 0 {
		return ""
	}
	dir := filepath.Dir(srcs[0].Name)
	for _, s := range srcs[1:] {
		for !strings.HasPrefix(filepath.Dir(s.Name)+string(filepath.Separator), dir+string(filepath.Separator)) && dir != "." && dir != string(filepath.Separator) {
			dir = filepath.Dir(dir)
		}
	}
	return dir
}

var topSchema = &hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{
	{Type: "merchant", LabelNames: []string{"id"}},
	{Type: "database", LabelNames: []string{"name"}},
	{Type: "package", LabelNames: []string{"name"}},
	{Type: "rollout"},
	{Type: "defaults"},
	{Type: "backup"},
	{Type: "restart"},
}}

var (
	merchantSchema = &hcl.BodySchema{
		Attributes: attrNames("package", "channel", "version", "database", "db_name", "port", "env", "sensitive", "stop_grace", "on_database_down", "domains", "path_prefix"),
		Blocks:     []hcl.BlockHeaderSchema{{Type: "health"}},
	}
	defaultsSchema = &hcl.BodySchema{
		Attributes: attrNames("package", "channel", "database", "env", "sensitive", "stop_grace", "on_database_down"),
		Blocks:     []hcl.BlockHeaderSchema{{Type: "health"}, {Type: "rollout"}},
	}
	healthSchema   = &hcl.BodySchema{Attributes: attrNames("http", "tcp", "status", "interval", "timeout", "failures", "grace")}
	databaseSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "dsn", Required: true}, {Name: "check_interval"}, {Name: "check_timeout"}, {Name: "down_after"}, {Name: "up_after"}}}
	packageSchema  = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "source", Required: true}},
		Blocks:     []hcl.BlockHeaderSchema{{Type: "channel", LabelNames: []string{"name"}}, {Type: "rollout"}, {Type: "backup"}},
	}
	backupSchema  = &hcl.BodySchema{Attributes: attrNames("enabled", "keep")}
	channelSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "version", Required: true}}}
	rolloutSchema = &hcl.BodySchema{Attributes: attrNames("canary", "max_parallel", "max_failures", "health_deadline", "min_healthy_time")}
	restartSchema = &hcl.BodySchema{Attributes: attrNames("initial_delay", "max_delay", "reset_after")}
)

var (
	merchantIDRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	nameRe       = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)
	envKeyRe     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	dbNameRe     = regexp.MustCompile(`^[a-z_][a-z0-9_$-]{0,62}$`)
	versionRe    = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$`)
)

// reservedEnv are set by steward for every process.
var reservedEnv = []string{"PORT", "MERCHANT", "DATABASE_URL"}

// reservedDBNames are PostgreSQL's own databases, which no merchant may use.
var reservedDBNames = []string{"postgres", "template0", "template1"}

// Bounds of a merchant's process environment. The kernel refuses execve
// with a single "NAME=value" string over MaxEnvString bytes (MAX_ARG_STRLEN,
// 32 pages, counting the terminating NUL), and with arguments and
// environment together over ARG_MAX, which is a quarter of the stack limit:
// 2 MiB with the usual 8 MiB. steward keeps the whole environment (env,
// PORT, MERCHANT and DATABASE_URL, each string with its NUL and its 8-byte
// pointer) within MaxEnvironment, half of that, to leave room for the
// command line and for a smaller stack limit.
const (
	MaxEnvString   = 131072
	MaxEnvironment = 1 << 20
)

// ValidMerchantID returns an error unless id is a valid merchant id: 1 to 63
// lower-case letters, digits and '-', starting with a letter or digit (the
// rule merchant blocks follow). Commands that take a merchant id check it
// before using it in a path or a request.
func ValidMerchantID(id string) error {
	if !merchantIDRe.MatchString(id) {
		return fmt.Errorf("%q is not a valid merchant id: use 1 to 63 lowercase letters, digits and '-', starting with a letter or digit", id)
	}
	return nil
}

// rawMerchant keeps attribute ranges for cross-block validation.
type rawMerchant struct {
	m                                  *Merchant
	pkgAttr, chanAttr, verAttr, dbAttr *hcl.Attribute
	portAttr, dbNameAttr               *hcl.Attribute
	prefixAttr                         *hcl.Attribute
	domainAt                           map[string]hcl.Range
	hasChannel, hasVersion             bool
}

// Load parses and validates spec sources.
func Load(srcs []Source, opts Options) (*Fleet, Files, hcl.Diagnostics) {
	d := newDecoder()
	fl := &Fleet{
		Revision:  ContentRevision(srcs),
		Merchants: map[string]*Merchant{},
		Databases: map[string]*Database{},
		Packages:  map[string]*Package{},
		Rollout:   DefaultRollout,
		Restart:   DefaultRestart,
		Defaults:  Defaults{OnDatabaseDown: OnDBDownHold, Health: DefaultHealth},
	}
	type bodyOf struct {
		block *hcl.Block
		dir   string
	}
	var merchants, databases, packages, rollouts, defaults, backups, restarts []bodyOf
	lim := opts.Limits.WithDefaults()
	var total int64
	for _, s := range srcs {
		total += int64(len(s.Bytes))
	}
	if total > lim.TotalSize {
		d.diags = append(d.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Specs too large", Detail: TotalSizeError(total, lim.TotalSize).Error() + "."})
		return fl, Files{}, d.diags
	}
	parsed := parseAll(srcs, lim)
	files := make(Files, len(srcs))
	unparsed := 0 // files that did not parse: their blocks are unknown
	for i, s := range srcs {
		f, diags := parsed[i].file, parsed[i].diags
		if f != nil {
			files[s.Name] = f
		}
		d.diags = append(d.diags, foldRepeats(diags)...)
		if f == nil || diags.HasErrors() {
			unparsed++
			continue
		}
		c := d.content(f.Body, topSchema)
		if c == nil {
			continue
		}
		for _, b := range c.Blocks {
			bo := bodyOf{b, s.Dir}
			switch b.Type {
			case "merchant":
				merchants = append(merchants, bo)
			case "database":
				databases = append(databases, bo)
			case "package":
				packages = append(packages, bo)
			case "rollout":
				rollouts = append(rollouts, bo)
			case "defaults":
				defaults = append(defaults, bo)
			case "backup":
				backups = append(backups, bo)
			case "restart":
				restarts = append(restarts, bo)
			}
		}
	}
	if len(defaults) > 1 {
		d.errorf(defaults[1].block.DefRange, "Duplicate defaults block", "Only one defaults block is allowed in a fleet; the first one is at %s.", rangeString(defaults[0].block.DefRange))
	}
	if len(rollouts) > 1 {
		d.errorf(rollouts[1].block.DefRange, "Duplicate rollout block", "Only one top-level rollout block is allowed in a fleet; the first one is at %s.", rangeString(rollouts[0].block.DefRange))
	}
	var defaultSensitive []string
	if len(defaults) > 0 {
		c := d.content(defaults[0].block.Body, defaultsSchema)
		if c != nil {
			df := &fl.Defaults
			d.str(c.Attributes, "package", &df.Package)
			d.str(c.Attributes, "channel", &df.Channel)
			d.str(c.Attributes, "database", &df.Database)
			df.Env, _ = d.envMap(c.Attributes, "env")
			d.strList(c.Attributes, "sensitive", &defaultSensitive)
			markSensitiveKeys(d, df.Env, defaultSensitive, c.Attributes["sensitive"])
			d.duration(c.Attributes, "stop_grace", &df.StopGrace)
			d.policy(c.Attributes, &df.OnDatabaseDown)
			df.SensitiveFields = map[string]bool{}
			d.fields(df.SensitiveFields, "", c.Attributes)
			if hb := d.oneBlock(c.Blocks, "health"); hb != nil {
				d.fields(df.SensitiveFields, "health.", d.health(hb, &df.Health))
			}
			if rb := d.oneBlock(c.Blocks, "rollout"); rb != nil {
				d.rollout(rb, &fl.Rollout)
			}
		}
	}
	if len(rollouts) > 0 {
		d.rollout(rollouts[0].block, &fl.Rollout)
	}
	if len(backups) > 1 {
		d.errorf(backups[1].block.DefRange, "Duplicate backup block", "Only one top-level backup block is allowed in a fleet; the first one is at %s.", rangeString(backups[0].block.DefRange))
	}
	if len(backups) > 0 {
		d.backup(backups[0].block, &fl.Backup)
	}
	if len(restarts) > 1 {
		d.errorf(restarts[1].block.DefRange, "Duplicate restart block", "Only one restart block is allowed in a fleet; the first one is at %s.", rangeString(restarts[0].block.DefRange))
	}
	if len(restarts) > 0 {
		d.restart(restarts[0].block, &fl.Restart)
	}

	declared := map[string]map[string]hcl.Range{"database": {}, "package": {}, "merchant": {}}
	dup := func(kind string, b *hcl.Block) bool {
		name := b.Labels[0]
		if first, ok := declared[kind][name]; ok {
			d.errorf(b.LabelRanges[0], "Duplicate "+kind+" "+fmt.Sprintf("%q", name),
				"A %s named %q is already declared at %s; %s names must be unique across all spec files.", kind, name, rangeString(first), kind)
			return true
		}
		declared[kind][name] = b.DefRange
		return false
	}
	for _, bo := range databases {
		b := bo.block
		if dup("database", b) {
			continue
		}
		if !nameRe.MatchString(b.Labels[0]) {
			d.errorf(b.LabelRanges[0], "Invalid database name", "%q is not a valid name: use letters, digits, '.', '_' and '-' (at most 63).", b.Labels[0])
		}
		db := &Database{Name: b.Labels[0], CheckInterval: 5 * time.Second, CheckTimeout: 2 * time.Second, DownAfter: 3, UpAfter: 2, DeclRange: b.DefRange}
		if c := d.content(b.Body, databaseSchema); c != nil {
			if a := d.secret(c.Attributes, "dsn", &db.DSN); a != nil && db.DSN.IsZero() {
				d.errorf(a.Expr.Range(), "Empty dsn", "Database %q needs a PostgreSQL connection string, for example dsn = env(\"DB_DSN\").", db.Name)
			}
			d.duration(c.Attributes, "check_interval", &db.CheckInterval)
			d.duration(c.Attributes, "check_timeout", &db.CheckTimeout)
			d.integer(c.Attributes, "down_after", 1, 100, &db.DownAfter)
			d.integer(c.Attributes, "up_after", 1, 100, &db.UpAfter)
		}
		fl.Databases[db.Name] = db
	}
	for _, bo := range packages {
		b := bo.block
		if dup("package", b) {
			continue
		}
		if !nameRe.MatchString(b.Labels[0]) {
			d.errorf(b.LabelRanges[0], "Invalid package name", "%q is not a valid name: use letters, digits, '.', '_' and '-' (at most 63).", b.Labels[0])
		}
		pk := &Package{Name: b.Labels[0], Channels: map[string]string{}, SensitiveFields: map[string]bool{}, DeclRange: b.DefRange}
		c := d.content(b.Body, packageSchema)
		if c != nil {
			if a := d.str(c.Attributes, "source", &pk.Source); a != nil {
				pk.Source = resolveSource(pk.Source, bo.dir)
				if pk.Source == "" {
					d.errorf(a.Expr.Range(), "Empty source", "Package %q needs a source: a directory of tarballs (file://DIR or a path) or an http(s) URL.", pk.Name)
				}
			}
			d.fields(pk.SensitiveFields, "", c.Attributes)
			chanAt := map[string]hcl.Range{}
			for _, cb := range c.Blocks {
				switch cb.Type {
				case "channel":
					name := cb.Labels[0]
					if first, ok := chanAt[name]; ok {
						d.errorf(cb.LabelRanges[0], "Duplicate channel", "Channel %q of package %q is already declared at %s.", name, pk.Name, rangeString(first))
						continue
					}
					chanAt[name] = cb.DefRange
					cc := d.content(cb.Body, channelSchema)
					var v string
					if cc != nil {
						if a := d.str(cc.Attributes, "version", &v); a != nil && !versionRe.MatchString(v) {
							d.errorf(a.Expr.Range(), "Invalid version", "%q is not a version; use digits, letters, '.', '+', '_' and '-', for example \"1.4.2\".", v)
						}
						if d.sensitive[cc.Attributes["version"]] {
							pk.SensitiveFields["channel."+name] = true
						}
					}
					pk.Channels[name] = v
				case "rollout":
					r := fl.Rollout
					d.rollout(cb, &r)
					pk.Rollout = &r
				case "backup":
					b := fl.Backup
					d.backup(cb, &b)
					pk.Backup = &b
				}
			}
		}
		if len(pk.SensitiveFields) == 0 {
			pk.SensitiveFields = nil
		}
		fl.Packages[pk.Name] = pk
	}
	var raws []*rawMerchant
	for _, bo := range merchants {
		b := bo.block
		if dup("merchant", b) {
			continue
		}
		id := b.Labels[0]
		if err := ValidMerchantID(id); err != nil {
			d.errorf(b.LabelRanges[0], "Invalid merchant id", "%s.", err)
		}
		m := &Merchant{ID: id, DBName: strings.ReplaceAll(id, "-", "_"), StopGrace: fl.Defaults.StopGrace,
			OnDatabaseDown: fl.Defaults.OnDatabaseDown, Health: fl.Defaults.Health, DeclRange: b.DefRange,
			SensitiveFields: inheritedSensitive(fl.Defaults.SensitiveFields)}
		rm := &rawMerchant{m: m}
		raws = append(raws, rm)
		c := d.content(b.Body, merchantSchema)
		if c == nil {
			continue
		}
		rm.pkgAttr = d.str(c.Attributes, "package", &m.Package)
		rm.chanAttr = d.str(c.Attributes, "channel", &m.Channel)
		rm.verAttr = d.str(c.Attributes, "version", &m.Version)
		rm.dbAttr = d.str(c.Attributes, "database", &m.Database)
		rm.hasChannel, rm.hasVersion = rm.chanAttr != nil, rm.verAttr != nil
		rm.dbNameAttr = d.str(c.Attributes, "db_name", &m.DBName)
		if a := rm.dbNameAttr; a != nil && !dbNameRe.MatchString(m.DBName) {
			d.errorf(a.Expr.Range(), "Invalid db_name", "%q is not a database name steward accepts: lowercase letters, digits, '_', '$' and '-', starting with a letter or '_'.", m.DBName)
		}
		rm.portAttr = d.integer(c.Attributes, "port", 1, 65535, &m.Port)
		rm.domainAt = d.domains(c.Attributes, &m.Domains)
		rm.prefixAttr = d.pathPrefix(c.Attributes, &m.PathPrefix)
		env, envAttr := d.envMap(c.Attributes, "env")
		var sens []string
		sensAttr := d.strList(c.Attributes, "sensitive", &sens)
		m.Env = map[string]EnvValue{}
		for k, v := range fl.Defaults.Env {
			m.Env[k] = v
		}
		for k, v := range env {
			if !envKeyRe.MatchString(k) {
				d.errorf(envAttr.Expr.Range(), "Invalid env name", "%q is not a valid environment variable name: use letters, digits and '_', not starting with a digit.", k)
			}
			if oneOf(k, reservedEnv...) {
				d.errorf(envAttr.Expr.Range(), "Reserved env name", "%s is set by steward for every merchant and cannot be set in env.", k)
			}
			m.Env[k] = v
		}
		markSensitiveKeys(d, m.Env, append(defaultSensitive, sens...), sensAttr)
		d.duration(c.Attributes, "stop_grace", &m.StopGrace)
		d.policy(c.Attributes, &m.OnDatabaseDown)
		d.fields(m.SensitiveFields, "", c.Attributes)
		if rm.hasVersion {
			delete(m.SensitiveFields, "channel")
		}
		if hb := d.oneBlock(c.Blocks, "health"); hb != nil {
			d.fields(m.SensitiveFields, "health.", d.health(hb, &m.Health))
		}
		if m.Package == "" {
			m.Package = fl.Defaults.Package
		}
		if m.Database == "" {
			m.Database = fl.Defaults.Database
		}
		if !rm.hasChannel && !rm.hasVersion {
			m.Channel = fl.Defaults.Channel
		}
		fl.Merchants[id] = m
	}
	validateMerchants(d, fl, raws, opts, unparsed == 0)
	for _, m := range fl.Merchants {
		if len(m.SensitiveFields) == 0 {
			m.SensitiveFields = nil
		}
	}
	fl.secrets = d.secretList()
	if len(d.diags) > 0 {
		RedactDiagnostics(d.diags, fl.Redactor())
	}
	return fl, files, d.diags
}

// inheritedSensitive returns the marks of the defaults a merchant inherits.
func inheritedSensitive(defaults map[string]bool) map[string]bool {
	out := map[string]bool{}
	for k := range defaults {
		if oneOf(k, "package", "channel", "database", "stop_grace", "on_database_down") || strings.HasPrefix(k, "health.") {
			out[k] = true
		}
	}
	return out
}

type parseResult struct {
	file  *hcl.File
	diags hcl.Diagnostics
}

// parseAll checks sources against lim and parses those within it,
// concurrently: parsing dominates the cost of loading a large fleet, and
// foldRepeats keeps the first three of a run of diagnostics with the same
// summary (one unclosed quote makes every later line of a file an
// "Invalid multi-line string"), and says how many more there were.
func foldRepeats(diags hcl.Diagnostics) hcl.Diagnostics {
	const keep = 3
	count := map[string]int{}
	for _, d := range diags {
		count[d.Summary]++
	}
	var out hcl.Diagnostics
	seen := map[string]int{}
	for _, d := range diags {
		seen[d.Summary]++
		switch n := seen[d.Summary]; {
		case n < keep || count[d.Summary] <= keep:
			out = append(out, d)
		case n == keep:
			c := *d
			c.Detail = strings.TrimSpace(c.Detail + fmt.Sprintf(" (%d more diagnostics like this one in the file are not shown: they likely follow from this one.)", count[d.Summary]-keep))
			out = append(out, &c)
		}
	}
	return out
}

// files are independent. A source refused by the limits has no file.
func parseAll(srcs []Source, lim Limits) []parseResult {
	out := make([]parseResult, len(srcs))
	workers := min(goruntime.GOMAXPROCS(0), len(srcs))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(srcs) {
					return
				}
				if diags := checkSource(srcs[i].Name, srcs[i].Bytes, lim, ""); diags.HasErrors() {
					out[i] = parseResult{nil, diags}
					continue
				}
				f, diags := hclsyntax.ParseConfig(srcs[i].Bytes, srcs[i].Name, hcl.InitialPos)
				out[i] = parseResult{f, diags}
			}
		}()
	}
	wg.Wait()
	return out
}

func markSensitiveKeys(d *decoder, env map[string]EnvValue, keys []string, attr *hcl.Attribute) {
	for _, k := range keys {
		v, ok := env[k]
		if !ok {
			if attr != nil {
				d.errorf(attr.Expr.Range(), "Unknown sensitive env", "sensitive names %q, which is not set in env; list only keys of env.", k)
			}
			continue
		}
		v.Sensitive = true
		d.secretValue(v.Value.Reveal())
		env[k] = v
	}
}

func (d *decoder) policy(attrs hcl.Attributes, dst *string) {
	var v string
	if a := d.str(attrs, "on_database_down", &v); a != nil {
		if !oneOf(v, OnDBDownHold, OnDBDownStop, OnDBDownIgnore) {
			d.errorf(a.Expr.Range(), "Invalid on_database_down", "on_database_down must be \"hold\", \"stop\" or \"ignore\"; got %q.", v)
			return
		}
		*dst = v
	}
}

// health decodes a health block over h and returns its attributes.
func (d *decoder) health(b *hcl.Block, h *Health) hcl.Attributes {
	c := d.content(b.Body, healthSchema)
	if c == nil {
		return nil
	}
	if a := d.str(c.Attributes, "http", &h.HTTP); a != nil {
		if !strings.HasPrefix(h.HTTP, "/") {
			d.errorf(a.Expr.Range(), "Invalid health path", "http must be a path starting with '/', for example \"/health\".")
		} else if strings.IndexFunc(h.HTTP, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
			d.errorf(a.Expr.Range(), "Invalid health path", "http must not contain spaces or control characters; percent-encode them (%%20 for a space).")
		}
	}
	d.boolean(c.Attributes, "tcp", &h.TCP)
	if c.Attributes["http"] != nil && c.Attributes["tcp"] != nil && h.TCP {
		d.errorf(c.Attributes["tcp"].Range, "Conflicting health checks", "A health block has either http or tcp = true, not both.")
	}
	if c.Attributes["http"] != nil {
		h.TCP = false
	}
	if c.Attributes["tcp"] != nil && h.TCP {
		h.HTTP = ""
	}
	d.integer(c.Attributes, "status", 100, 599, &h.Status)
	d.duration(c.Attributes, "interval", &h.Interval)
	d.duration(c.Attributes, "timeout", &h.Timeout)
	d.integer(c.Attributes, "failures", 1, 100, &h.Failures)
	d.duration(c.Attributes, "grace", &h.StartGrace)
	if h.Interval <= 0 {
		d.errorf(b.DefRange, "Invalid health interval", "interval must be greater than zero.")
	}
	return c.Attributes
}

func (d *decoder) rollout(b *hcl.Block, r *Rollout) {
	c := d.content(b.Body, rolloutSchema)
	if c == nil {
		return
	}
	d.integer(c.Attributes, "canary", 0, 1_000_000, &r.Canary)
	d.integer(c.Attributes, "max_parallel", 1, 1_000_000, &r.MaxParallel)
	d.integer(c.Attributes, "max_failures", 0, 1_000_000, &r.MaxFailures)
	d.duration(c.Attributes, "health_deadline", &r.HealthDeadline)
	d.duration(c.Attributes, "min_healthy_time", &r.MinHealthyTime)
}

// restart decodes a restart block over r.
func (d *decoder) restart(b *hcl.Block, r *RestartBackoff) {
	c := d.content(b.Body, restartSchema)
	if c == nil {
		return
	}
	for _, f := range []struct {
		name string
		dst  *time.Duration
	}{{"initial_delay", &r.Initial}, {"max_delay", &r.Max}, {"reset_after", &r.ResetAfter}} {
		if a := d.duration(c.Attributes, f.name, f.dst); a != nil && *f.dst < MinRestartDuration {
			d.errorf(a.Expr.Range(), "Invalid "+f.name, "%s must be at least %s; got %s.", f.name, MinRestartDuration, d.shown(a, f.dst.String()))
			*f.dst = MinRestartDuration
		}
	}
	if r.Initial > r.Max {
		rng := b.DefRange
		if a := c.Attributes["initial_delay"]; a != nil {
			rng = a.Expr.Range()
		}
		d.errorf(rng, "Invalid restart backoff", "initial_delay (%s) must not be longer than max_delay (%s).",
			d.shown(c.Attributes["initial_delay"], r.Initial.String()), d.shown(c.Attributes["max_delay"], r.Max.String()))
	}
}

var (
	// dnsLabel is one label of a host name, lower case.
	dnsLabelRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	// pathSegmentRe is one segment of a path prefix.
	pathSegmentRe = regexp.MustCompile(`^[A-Za-z0-9._~-]+$`)
)

// domainError returns why name is not a domain a merchant may have, or "";
// with suggest, it says how to write it (not for a secret: the suggestion
// is a form of the value no Redactor knows).
func domainError(name string, suggest bool) string {
	host := strings.TrimPrefix(name, "*.")
	switch {
	case name == "":
		return "a domain must not be empty"
	case strings.ToLower(name) != name && suggest:
		return fmt.Sprintf("%q must be written in lower case (%q)", name, strings.ToLower(name))
	case strings.ToLower(name) != name:
		return fmt.Sprintf("%q must be written in lower case", name)
	case strings.HasSuffix(name, ".") && suggest:
		return fmt.Sprintf("%q must not end with a dot; write %q", name, strings.TrimSuffix(name, "."))
	case strings.HasSuffix(name, "."):
		return fmt.Sprintf("%q must not end with a dot", name)
	case len(host) > 253:
		return fmt.Sprintf("%q is longer than 253 characters", name)
	case strings.Contains(host, "*"):
		return fmt.Sprintf("%q may hold a wildcard only as its first label, as in \"*.example.com\"", name)
	}
	for _, l := range strings.Split(host, ".") {
		if !dnsLabelRe.MatchString(l) {
			return fmt.Sprintf("%q is not a host name: each dot-separated label has 1 to 63 letters, digits and '-', not starting or ending with '-'", name)
		}
	}
	return ""
}

// domains decodes the domains list; it returns where each valid domain is.
func (d *decoder) domains(attrs hcl.Attributes, dst *[]string) map[string]hcl.Range {
	var list []string
	a := d.strList(attrs, "domains", &list)
	if a == nil {
		return nil
	}
	// Point at the element when the list is written out.
	at := func(i int) hcl.Range {
		if elems, diags := hcl.ExprList(a.Expr); !diags.HasErrors() && len(elems) == len(list) {
			return elems[i].Range()
		}
		return a.Expr.Range()
	}
	seen, ranges := map[string]bool{}, map[string]hcl.Range{}
	for i, name := range list {
		if msg := domainError(name, !d.sensitive[a]); msg != "" {
			d.errorf(at(i), "Invalid domain", "%s.", msg)
			continue
		}
		if seen[name] {
			d.errorf(at(i), "Duplicate domain", "%q is listed twice.", name)
			continue
		}
		seen[name] = true
		*dst = append(*dst, name)
		ranges[name] = at(i)
	}
	return ranges
}

// pathPrefix decodes path_prefix.
func (d *decoder) pathPrefix(attrs hcl.Attributes, dst *string) *hcl.Attribute {
	var p string
	a := d.str(attrs, "path_prefix", &p)
	if a == nil {
		return nil
	}
	bad := func(why string) {
		d.errorf(a.Expr.Range(), "Invalid path_prefix", "path_prefix %q %s; write it like \"/acme/\".", p, why)
	}
	if !strings.HasPrefix(p, "/") || !strings.HasSuffix(p, "/") || p == "/" {
		bad("must start and end with '/' and name a path below /")
		return a
	}
	for _, seg := range strings.Split(strings.Trim(p, "/"), "/") {
		if seg == "." || seg == ".." || !pathSegmentRe.MatchString(seg) {
			bad("may hold only letters, digits and \"-._~\" between single slashes, and no \".\" or \"..\" segment")
			return a
		}
	}
	*dst = p
	return a
}

// backup decodes a backup block: present means enabled unless it says
// enabled = false; keep defaults to 5.
func (d *decoder) backup(b *hcl.Block, dst *Backup) {
	c := d.content(b.Body, backupSchema)
	dst.Enabled, dst.Keep = true, 5
	if c == nil {
		return
	}
	d.boolean(c.Attributes, "enabled", &dst.Enabled)
	d.integer(c.Attributes, "keep", 1, 1000, &dst.Keep)
}

// resolveSource strips file:// and makes local paths absolute against dir.
func resolveSource(src, dir string) string {
	if strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://") {
		return src
	}
	src = strings.TrimPrefix(src, "file://")
	if src == "" {
		return ""
	}
	if !filepath.IsAbs(src) {
		src = filepath.Join(dir, src)
	}
	if abs, err := filepath.Abs(src); err == nil {
		src = abs
	}
	return src
}
