package main

import (
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestHalfSentRequestsDoNotBlindTheDaemon holds more half-sent API
// requests than the daemon has descriptors (a daemon limited to 256, 400
// requests whose headers arrived and whose bodies never finish), then
// SIGKILLs a merchant: the daemon restarts it as quickly as it does
// without the flood, and records no exit of a merchant that did not die.
func TestHalfSentRequestsDoNotBlindTheDaemon(t *testing.T) {
	const nofile, held = 256, 400
	pkgs := examplePackages(t)
	f := newFleet(t, 10)
	f.write("fleet.hcl", fleetSpec(pkgs, merchantBlock("alpha"), merchantBlock("bravo"), merchantBlock("charlie")))
	d := f.startDaemonEnv(fmt.Sprintf("STEWARD_TEST_NOFILE=%d", nofile))
	f.waitAPI()
	f.waitRunning(60*time.Second, "alpha", "bravo", "charlie")

	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range held {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", f.apiPort), 5*time.Second)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		conns = append(conns, c)
		// Headers complete, a body that never ends: held until the
		// server's read timeout, if the server reads it at all.
		fmt.Fprintf(c, "POST /v1/sync HTTP/1.1\r\nHost: steward\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"a\":")
	}
	fds := func() int {
		ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", d.cmd.Process.Pid))
		return len(ents)
	}
	waitFor(t, 10*time.Second, "the daemon taking its share of the held requests", func() bool { return fds() > 64 })

	before := f.merchant(f.status(), "alpha")
	killed := time.Now()
	if err := syscall.Kill(before.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var after merchantStatus
	waitFor(t, 15*time.Second, "alpha restarted while the requests are held", func() bool {
		after = f.merchant(f.status(), "alpha")
		return after.State == "running" && after.PID != before.PID && after.PID != 0
	})
	took := time.Since(killed)
	t.Logf("alpha restarted in %s with %d requests held; the daemon has %d descriptors open (limit %d)", took.Round(time.Millisecond), held, fds(), nofile)
	if n := fds(); n >= nofile {
		t.Errorf("the daemon uses %d descriptors of its %d", n, nofile)
	}
	if get(after.Port, "/health") == "" {
		t.Errorf("alpha does not answer on port %d after its restart", after.Port)
	}
	// Merchants that never died: no exit recorded, same process.
	for _, id := range []string{"bravo", "charlie"} {
		if h := f.history(id); strings.Contains(h, "exited") {
			t.Errorf("%s did not die, yet its history records an exit:\n%s", id, h)
		}
	}
	if h := f.history("alpha"); strings.Count(h, "exited") != 1 {
		t.Errorf("alpha died once; its history:\n%s", h)
	}
	if strings.Contains(f.daemonLog(), "too many open files") {
		t.Errorf("the daemon ran out of descriptors:\n%s", lastLines(f.daemonLog(), 20))
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	d.stop(t, syscall.SIGTERM)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
