package main

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/lib/pq"

	"steward/internal/atomicfile"
	"steward/internal/tcpproxy"
)

// The package versions faultsim builds: two good ones (schemas 1 and 2)
// and one whose /health fails on purpose (schema 3).
var (
	goodVersions  = []string{"1.0.0", "1.1.0"}
	brokenVersion = "1.2.0"
	allVersions   = append(append([]string(nil), goodVersions...), brokenVersion)
)

func isBroken(v string) bool { return v == brokenVersion }

// merchant is one merchant of the scratch fleet.
type merchant struct {
	id     string
	port   int
	dbName string
	proxy  *tcpproxy.Proxy // in front of PostgreSQL: the merchant's database server as steward sees it
}

// specFiles renders the fleet's spec files for channel version v: the
// fleet-wide blocks in fleet.hcl, the merchants in merchants.hcl.
func (s *sim) specFiles(v string) map[string]string {
	var b strings.Builder
	fmt.Fprintf(&b, `# The fault simulator's scratch fleet.

package "invoicing" {
  source = %q
  channel "stable" {
    version = %q
  }
}

rollout {
  canary           = 1
  max_parallel     = 2
  max_failures     = 1
  health_deadline  = "5s"
  min_healthy_time = "1s"
}

defaults {
  package          = "invoicing"
  channel          = "stable"
  on_database_down = "hold"
  stop_grace       = "2s"

  health {
    http     = "/health"
    interval = "500ms"
    timeout  = "1s"
    failures = 3
    grace    = "2s"
  }
}
`, "file://"+s.packages, v)
	if s.cfg.restartBlock {
		b.WriteString(restartBlock)
	}
	for _, m := range s.merchants {
		u := url.URL{Scheme: "postgres", User: url.User(s.pgUser), Host: m.proxy.Addr(), Path: "/postgres", RawQuery: "sslmode=disable"}
		fmt.Fprintf(&b, `
database "db-%s" {
  dsn            = %q
  check_interval = "500ms"
  check_timeout  = "1s"
  down_after     = 2
  up_after       = 1
}
`, m.id, u.String())
	}
	var mb strings.Builder
	mb.WriteString("# One merchant per database server (a proxy each, so that one can be cut).\n")
	for _, m := range s.merchants {
		fmt.Fprintf(&mb, `
merchant %q {
  database = "db-%s"
  db_name  = %q
  port     = %d
}
`, m.id, m.id, m.dbName, m.port)
	}
	return map[string]string{"fleet.hcl": b.String(), "merchants.hcl": mb.String()}
}

// restartBlock is the fleet-wide restart backoff that lets many faults fit
// in minutes.
const restartBlock = `
restart {
  initial_delay = "100ms"
  max_delay     = "2s"
  reset_after   = "10s"
}
`

// hostConfig renders steward.hcl.
func (s *sim) hostConfig() string {
	var src string
	if s.cfg.source == "git" {
		src = fmt.Sprintf(`source {
  git {
    url  = %q
    ref  = "main"
    dir  = "specs"
    poll = "1s"
  }
}`, s.gitDir)
	} else {
		src = fmt.Sprintf("source { path = %q }", s.specDir)
	}
	user := ""
	if os.Geteuid() == 0 {
		user = "\n  user       = \"nobody\""
	}
	return fmt.Sprintf(`# The fault simulator's host config.
%s
state { path = %q }
runtime {
  root       = %q
  ports      = "%d-%d"
  stop_grace = "2s"%s
}
api { listen = %q }
daemon {
  workers = 4
  resync  = "2s"
}
`, src, s.stateDir, s.runRoot, s.portLow, s.portHigh, user, s.apiAddr)
}

// writeSpecs writes the spec files for channel version v plus extra files
// (a name with empty content is removed), atomically, and, with a git
// source, commits them. It returns a description of the change.
func (s *sim) writeSpecs(v string, extra map[string]string, msg string) error {
	files := s.specFiles(v)
	for k, c := range extra {
		files[k] = c
	}
	if s.cfg.source == "git" {
		return s.commit(files, msg)
	}
	for name, content := range files {
		p := filepath.Join(s.specDir, name)
		if content == "" {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			continue
		}
		if err := atomicfile.WriteFile(p, []byte(content), 0o644, false); err != nil {
			return err
		}
	}
	return nil
}

// commit writes files into the git worktree's specs/ and commits them.
func (s *sim) commit(files map[string]string, msg string) error {
	wt, err := s.repo.Worktree()
	if err != nil {
		return err
	}
	for name, content := range files {
		rel := filepath.ToSlash(filepath.Join("specs", name))
		p := filepath.Join(s.gitDir, rel)
		if content == "" {
			if _, err := os.Stat(p); err == nil {
				if _, err := wt.Remove(rel); err != nil {
					return err
				}
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return err
		}
		if _, err := wt.Add(rel); err != nil {
			return err
		}
	}
	s.commits++
	_, err = wt.Commit(msg, &git.CommitOptions{
		AllowEmptyCommits: true,
		Author:            &object.Signature{Name: "faultsim", Email: "faultsim@example.com", When: time.Now()},
	})
	return err
}

func initRepo(dir string) (*git.Repository, error) {
	return git.PlainInitWithOptions(dir, &git.PlainInitOptions{
		InitOptions: git.InitOptions{DefaultBranch: plumbing.NewBranchReferenceName("main")},
	})
}

// freePortRange returns the first of n consecutive ports that nothing
// listens on, between 12000 and 19999: below the kernel's ephemeral range
// (32768 and up), outside the example fleet's 8100-8999 and below the
// 20000-32000 that steward's own integration tests pick from, so that a
// test running beside faultsim does not take a merchant's port while the
// merchant is down. The search starts at a place derived from seed.
func freePortRange(n int, seed int64) (int, error) {
	const low, high = 12000, 19999
	span := high - low - n
	start := low + int(uint64(seed)%uint64(span/50))*50
	for tries := 0; tries < span/10; tries++ {
		base := low + (start-low+tries*(n+7))%span
		ok := true
		for p := base; p < base+n && ok; p++ {
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if ok {
			return base, nil
		}
	}
	return 0, fmt.Errorf("no %d consecutive free ports between %d and %d", n, low, high)
}

// pgServer is the PostgreSQL server the fleet's databases live on.
type pgServer struct {
	dsn  string // STEWARD_TEST_PG or the default
	addr string // host:port
	user string
}

const defaultPG = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

func pgFromEnv() (pgServer, error) {
	dsn := os.Getenv("STEWARD_TEST_PG")
	if dsn == "" {
		dsn = defaultPG
	}
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || u.Host == "" {
		return pgServer{}, fmt.Errorf("STEWARD_TEST_PG %q: faultsim needs a postgres:// URL with a host", dsn)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "5432")
	}
	user := "postgres"
	if u.User != nil && u.User.Username() != "" {
		user = u.User.Username()
		if _, has := u.User.Password(); has {
			return pgServer{}, errors.New("STEWARD_TEST_PG: faultsim puts the server behind proxies and writes the DSN into spec files; use a user without a password (trust authentication)")
		}
	}
	return pgServer{dsn: dsn, addr: host, user: user}, nil
}

// ping checks that the server answers within 5 seconds.
func (pg pgServer) ping(ctx context.Context) error {
	db, err := sql.Open("postgres", pg.dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return db.PingContext(ctx)
}

// withDB returns the server's DSN naming database name.
func (pg pgServer) withDB(name string) string {
	u, _ := url.Parse(pg.dsn)
	u.Path, u.RawPath = "/"+name, ""
	return u.String()
}

// dropDatabases drops every database whose name starts with prefix_.
func (pg pgServer) dropDatabases(prefix string) error {
	db, err := sql.Open("postgres", pg.dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rows, err := db.QueryContext(ctx, `SELECT datname FROM pg_database WHERE datname LIKE $1`, prefix+`\_%`)
	if err != nil {
		return err
	}
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return err
		}
		names = append(names, n)
	}
	rows.Close()
	var errs []error
	for _, n := range names {
		if _, err := db.ExecContext(ctx, "DROP DATABASE IF EXISTS "+pq.QuoteIdentifier(n)+" WITH (FORCE)"); err != nil {
			errs = append(errs, fmt.Errorf("dropping %s: %w", n, err))
		}
	}
	return errors.Join(errs...)
}

// moduleRoot returns the directory of the steward module (go.mod), found
// by the go command from the current directory.
func moduleRoot(ctx context.Context) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "env", "GOMOD")
	var b bytes.Buffer
	cmd.Stdout = &b
	err := runChild(cmd)
	out := b.Bytes()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("faultsim must run inside the steward module (go env GOMOD is empty)")
	}
	data, err := os.ReadFile(mod)
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(string(data), "module steward\n") {
		return "", fmt.Errorf("%s is not the steward module", mod)
	}
	return filepath.Dir(mod), nil
}
