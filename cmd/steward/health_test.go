package main

import (
	"fmt"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"steward/internal/pgtest"
	"steward/internal/tcpproxy"
)

// pgProxy is a TCP proxy in front of the test PostgreSQL server that can
// cut and restore connectivity.
func pgProxy(t *testing.T) *tcpproxy.Proxy {
	t.Helper()
	u, err := url.Parse(pgtest.DSN())
	if err != nil {
		t.Fatal(err)
	}
	p, err := tcpproxy.New(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// proxiedFleetSpec is fleetSpec with the database behind proxy and quick
// database checks.
func proxiedFleetSpec(pkgs string, proxy *tcpproxy.Proxy, health string, merchants ...string) string {
	s := fleetSpec(pkgs, merchants...)
	dsn := fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", proxy.Addr())
	i := strings.Index(s, "database \"db-main\" {")
	j := strings.Index(s[i:], "}\n") + i
	s = s[:i] + fmt.Sprintf(`database "db-main" {
  dsn            = %q
  check_interval = "200ms"
  check_timeout  = "300ms"
  down_after     = 3
  up_after       = 2
`, dsn) + s[j:]
	return s + "\n" + health
}

func (f *fleet) database(name string) (databaseStatus, bool) {
	for _, d := range f.apiStatus().Databases {
		if d.Name == name {
			return d, true
		}
	}
	return databaseStatus{}, false
}

func TestDatabaseOutageIsSeenAndHeld(t *testing.T) {
	pkgs := examplePackages(t)
	proxy := pgProxy(t)
	f := newFleet(t, 10)
	f.write("fleet.hcl", proxiedFleetSpec(pkgs, proxy, "", merchantBlock("alpha")))
	f.startDaemon()
	before := f.waitRunning(60*time.Second, "alpha")
	f.waitAPI()
	waitFor(t, 10*time.Second, "db-main up", func() bool { d, ok := f.database("db-main"); return ok && d.Up })

	// Cut: down within interval × down_after + timeout (+ margin).
	cut := time.Now()
	proxy.Cut()
	waitFor(t, 10*time.Second, "db-main down", func() bool { d, _ := f.database("db-main"); return !d.Up })
	took := time.Since(cut)
	t.Logf("database down after %s (budget 200ms×3 + 300ms = 900ms)", took.Round(time.Millisecond))
	if took > 900*time.Millisecond+time.Second {
		t.Errorf("database down detected after %s", took)
	}
	if d, _ := f.database("db-main"); d.LastError == "" || strings.Contains(d.LastError, "postgres@") {
		t.Errorf("last error %q: empty or reveals the DSN", d.LastError)
	}

	// A merchant added during the outage is held: not started, no crash loop.
	f.write("fleet.hcl", proxiedFleetSpec(pkgs, proxy, "", merchantBlock("alpha"), merchantBlock("bravo")))
	waitFor(t, 10*time.Second, "bravo held", func() bool {
		for _, m := range f.apiStatus().Merchants {
			if m.ID == "bravo" {
				return m.PID == 0 && m.State == "held"
			}
		}
		return false
	})
	// Running merchants are left alone.
	if a := f.merchant(f.apiStatus(), "alpha"); a.PID != f.merchant(before, "alpha").PID || a.State != "running" {
		t.Errorf("alpha was touched during the outage: %+v", a)
	}
	plan, _, _ := f.steward("plan")
	if !strings.Contains(plan, "bravo") {
		t.Errorf("plan does not mention bravo:\n%s", plan)
	}

	// Restore: up within interval × up_after (+ margin); bravo starts.
	restored := time.Now()
	proxy.Restore()
	waitFor(t, 10*time.Second, "db-main up again", func() bool { d, _ := f.database("db-main"); return d.Up })
	t.Logf("database up again after %s (budget 200ms×2 = 400ms)", time.Since(restored).Round(time.Millisecond))
	f.waitRunning(30*time.Second, "alpha", "bravo")
	if m := f.merchant(f.apiStatus(), "bravo"); m.Restarts != 0 {
		t.Errorf("bravo restarts = %d after its database came back", m.Restarts)
	}
	hist, _, _ := f.steward("history", "bravo")
	if strings.Contains(hist, "crashloop") {
		t.Errorf("bravo crash-looped:\n%s", hist)
	}
}

func TestFlappingDatabaseCausesNoRestartStorm(t *testing.T) {
	pkgs := examplePackages(t)
	proxy := pgProxy(t)
	f := newFleet(t, 10)
	f.write("fleet.hcl", proxiedFleetSpec(pkgs, proxy, "", merchantBlock("alpha"), merchantBlock("bravo"), merchantBlock("charlie")))
	f.startDaemon()
	before := f.waitRunning(60*time.Second, "alpha", "bravo", "charlie")
	f.waitAPI()
	// Cut and restore every 0.5 s for 10 s.
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(500 * time.Millisecond)
	cutNow := true
	for time.Now().Before(deadline) {
		<-tick.C
		if cutNow {
			proxy.Cut()
		} else {
			proxy.Restore()
		}
		cutNow = !cutNow
	}
	tick.Stop()
	proxy.Restore()
	waitFor(t, 20*time.Second, "db-main up after the flapping", func() bool { d, _ := f.database("db-main"); return d.Up })
	after := f.waitRunning(30*time.Second, "alpha", "bravo", "charlie")
	restarts := 0
	for _, m := range after.Merchants {
		restarts += m.Restarts
		if m.PID != f.merchant(before, m.ID).PID {
			restarts++
		}
	}
	transitions := strings.Count(f.daemonLog(), `"msg":"database reachability"`)
	t.Logf("10 s of flapping: %d database transitions logged, %d merchant restarts", transitions, restarts)
	if restarts > 0 {
		t.Errorf("flapping caused %d restarts", restarts)
	}
	if transitions > 8 {
		t.Errorf("flapping caused %d database transitions; hysteresis is not working", transitions)
	}
}

func TestHungMerchantIsRestarted(t *testing.T) {
	pkgs := examplePackages(t)
	f := newFleet(t, 10)
	health := `
defaults {
  package    = "invoicing"
  channel    = "stable"
  database   = "db-main"
  stop_grace = "500ms"
  health {
    http     = "/health"
    interval = "500ms"
    timeout  = "500ms"
    failures = 3
    grace    = "1s"
  }
}`
	spec := strings.Replace(fleetSpec(pkgs, merchantBlock("alpha"), merchantBlock("bravo")), `defaults {
  package  = "invoicing"
  channel  = "stable"
  database = "db-main"
}`, health, 1)
	f.write("fleet.hcl", spec)
	f.startDaemon()
	before := f.waitRunning(60*time.Second, "alpha", "bravo")
	f.waitAPI()
	// Let the monitor get past the start grace.
	waitFor(t, 10*time.Second, "a probed healthy alpha", func() bool { return f.merchant(f.apiStatus(), "alpha").Healthy })
	victim := f.merchant(before, "alpha")
	stopped := time.Now()
	if err := syscall.Kill(victim.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(victim.PID, syscall.SIGKILL) })
	waitFor(t, 20*time.Second, "alpha detected as unhealthy", func() bool {
		return strings.Contains(f.daemonLog(), `"msg":"merchant unhealthy"`)
	})
	detected := time.Since(stopped)
	var after merchantStatus
	waitFor(t, 20*time.Second, "alpha restarted", func() bool {
		after = f.merchant(f.apiStatus(), "alpha")
		return after.PID != victim.PID && after.State == "running"
	})
	restarted := time.Since(stopped)
	t.Logf("SIGSTOP detected after %s (budget 500ms×3 + 500ms = 2s), answering again after %s", detected.Round(time.Millisecond), restarted.Round(time.Millisecond))
	if budget := 2*time.Second + time.Second; detected > budget {
		t.Errorf("detection took %s, budget %s", detected, budget)
	}
	if get(after.Port, "/version") == "" {
		t.Error("alpha's new process does not answer")
	}
	if after.Restarts != 1 {
		t.Errorf("alpha restarts = %d", after.Restarts)
	}
	if isZombie(victim.PID) == false && syscall.Kill(victim.PID, 0) == nil {
		t.Errorf("the hung process %d still exists", victim.PID)
	}
	hist, _, _ := f.steward("history", "alpha")
	if !strings.Contains(hist, "health: GET /health") || !strings.Contains(hist, "timed out") {
		t.Errorf("history does not say why alpha was restarted:\n%s", hist)
	}
	if b := f.merchant(f.apiStatus(), "bravo"); b.PID != f.merchant(before, "bravo").PID {
		t.Error("bravo was restarted too")
	}
}
