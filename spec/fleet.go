package spec

import (
	"time"

	"github.com/hashicorp/hcl/v2"
)

// Fleet is the parsed and validated desired state of all merchants.
type Fleet struct {
	// Revision identifies the spec content: a git commit SHA, or for a
	// directory a digest of every spec file's path and content.
	Revision  string
	Merchants map[string]*Merchant
	Databases map[string]*Database
	Packages  map[string]*Package
	Rollout   Rollout
	Defaults  Defaults
	// Backup is the fleet-wide backup policy (packages may override it).
	Backup Backup
	// Restart is how soon a merchant whose process died is started again
	// (the restart block); every field is set.
	Restart RestartBackoff

	// secrets are the secret values met while loading (see Redactor).
	secrets []string
}

// RestartBackoff is how soon a merchant whose process died is started
// again. A process that had been up for at least ResetAfter is restarted at
// once and its failures are forgiven; after a process that died sooner, the
// first restart is at once and the next ones wait Initial, doubling up to
// Max. Invariants: 10ms <= Initial <= Max, ResetAfter >= 10ms.
type RestartBackoff struct {
	Initial    time.Duration
	Max        time.Duration
	ResetAfter time.Duration
}

// DefaultRestart backs off from 1s to 5m and forgives after 10m up.
var DefaultRestart = RestartBackoff{Initial: time.Second, Max: 5 * time.Minute, ResetAfter: 10 * time.Minute}

// MinRestartDuration is the shortest duration of a restart block.
const MinRestartDuration = 10 * time.Millisecond

// Backup says whether merchant databases are dumped (pg_dump) before a
// migration, and how many dumps per merchant are kept.
type Backup struct {
	Enabled bool
	Keep    int
}

// BackupFor returns the backup policy for package pkg.
func (f *Fleet) BackupFor(pkg string) Backup {
	if p := f.Packages[pkg]; p != nil && p.Backup != nil {
		return *p.Backup
	}
	return f.Backup
}

// MerchantIDs returns the merchant ids in sorted order.
func (f *Fleet) MerchantIDs() []string { return sortedKeys(f.Merchants) }

// Merchant is one tenant's desired process. Defaults are already applied.
type Merchant struct {
	ID      string
	Package string
	// Channel is set when the merchant follows a channel; Version is then the
	// channel's version. A pinned merchant has Channel == "" and its Version.
	Channel string
	Version string
	// Database names a database block; DBName is the database on that server.
	Database string
	DBName   string
	// Port is the fixed port, or 0 to have one assigned (and kept).
	Port int
	// Domains are the host names the router sends to this merchant: valid
	// lower-case DNS names, each optionally starting with "*.", unique
	// across the fleet. PathPrefix, when set, is a path the router sends to
	// it on any host: it starts and ends with "/", holds only letters,
	// digits and "-._~" between the slashes, and is unique across the fleet.
	// Both are routing only: changing them must not restart the process.
	Domains        []string
	PathPrefix     string
	Env            map[string]EnvValue
	StopGrace      time.Duration
	OnDatabaseDown string
	Health         Health
	// SensitiveFields names the fields whose value came from env(), by
	// their attribute names: "package", "channel", "version", "database",
	// "db_name", "port", "stop_grace", "on_database_down", "health.http"
	// (and the other health attributes), "domains", "path_prefix". A field
	// inherited from defaults keeps its mark; "version" is marked too when
	// the merchant follows a channel whose version came from env(). Such a
	// value is a secret like any other: show it with Shown. Env values carry
	// their own mark (EnvValue.Sensitive). Nil when no field is marked.
	SensitiveFields map[string]bool
	// DeclRange is where the merchant block is declared.
	DeclRange hcl.Range
}

// Shown returns value as it may be shown to people: Redacted when field is
// one of m's SensitiveFields.
func (m *Merchant) Shown(field, value string) string {
	if m.SensitiveFields[field] {
		return Redacted
	}
	return value
}

// EnvValue is one environment variable. Sensitive values are redacted in
// every rendering; their Value is a Secret either way.
type EnvValue struct {
	Value     Secret
	Sensitive bool
}

// Display returns the value as it may be shown to people.
func (v EnvValue) Display() string {
	if v.Sensitive {
		return Redacted
	}
	return v.Value.Reveal()
}

// FingerprintWith identifies the value without revealing a sensitive one:
// a sensitive value is Secret.FingerprintWith(key), any other the value
// itself.
func (v EnvValue) FingerprintWith(key []byte) string {
	if v.Sensitive {
		return v.Value.FingerprintWith(key)
	}
	return v.Value.Reveal()
}

// Database is a PostgreSQL server merchants' databases live on.
type Database struct {
	Name string
	// DSN is the server's connection string; the merchant's DATABASE_URL is
	// this DSN with the database name replaced by the merchant's DBName.
	DSN           Secret
	CheckInterval time.Duration
	CheckTimeout  time.Duration
	DownAfter     int
	UpAfter       int
	DeclRange     hcl.Range
}

// Package is an application package and its channels.
type Package struct {
	Name string
	// Source is a directory (absolute, "file://" stripped) or an http(s) URL.
	Source   string
	Channels map[string]string // channel name -> version
	Rollout  *Rollout          // overrides the fleet rollout when set
	Backup   *Backup           // overrides the fleet backup policy when set
	// SensitiveFields names the fields whose value came from env():
	// "source", and "channel.NAME" for the version of channel NAME. Nil
	// when none is.
	SensitiveFields map[string]bool
	DeclRange       hcl.Range
}

// Rollout controls how version changes are rolled out across merchants.
type Rollout struct {
	Canary         int
	MaxParallel    int
	MaxFailures    int
	HealthDeadline time.Duration
	MinHealthyTime time.Duration
}

// Health is a merchant's health probe. Empty HTTP and TCP false means the
// package manifest decides.
type Health struct {
	HTTP       string
	TCP        bool
	Status     int
	Interval   time.Duration
	Timeout    time.Duration
	Failures   int
	StartGrace time.Duration
}

// Defaults are fleet-wide values merchants inherit.
type Defaults struct {
	Package        string
	Channel        string
	Database       string
	Env            map[string]EnvValue
	StopGrace      time.Duration
	OnDatabaseDown string
	Health         Health
	// SensitiveFields is as for Merchant: the defaults whose value came
	// from env(), which merchants inherit with the value.
	SensitiveFields map[string]bool
}

// Built-in defaults.
var (
	DefaultRollout = Rollout{Canary: 1, MaxParallel: 1, MaxFailures: 1, HealthDeadline: time.Minute, MinHealthyTime: 10 * time.Second}
	DefaultHealth  = Health{Status: 200, Interval: 5 * time.Second, Timeout: 2 * time.Second, Failures: 3, StartGrace: 10 * time.Second}
)

// Policies for a merchant whose database is down.
const (
	OnDBDownHold   = "hold"
	OnDBDownStop   = "stop"
	OnDBDownIgnore = "ignore"
)
