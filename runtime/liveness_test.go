package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestCheck(t *testing.T) {
	self, err := Inspect(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	sleeper := start(t, helperSpec(t, "sleeper"))

	// A child that has exited but is not reaped yet: a zombie.
	zombie := start(t, helperSpec(t, "exit"))
	waitShim(t, zombie) // the shim exits once the child has
	waitZombie(t, zombie.p)

	// A child that has exited and been reaped: no such process.
	reaped := start(t, helperSpec(t, "exit"))
	if _, err := Wait(testCtx(t), reaped.p); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name    string
		p       Proc
		want    Liveness
		wantErr bool
	}{
		{"self", self, Alive, false},
		{"running child", sleeper.p, Alive, false},
		{"zombie", zombie.p, Dead, false},
		{"reaped", reaped.p, Dead, false},
		{"pid reused", Proc{PID: self.PID, StartTime: self.StartTime + 1}, Dead, false},
		{"no such pid", Proc{PID: 1 << 30, StartTime: 1}, Dead, false},
		{"pid 0", Proc{}, Unknown, true},
		{"negative pid", Proc{PID: -1, StartTime: 1}, Unknown, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.p.Check()
			if got != tc.want || (err != nil) != tc.wantErr {
				t.Errorf("Check() = %v, %v; want %v (error %v)", got, err, tc.want, tc.wantErr)
			}
			// Alive is true for Alive only, false for Dead and Unknown.
			if alive := tc.p.Alive(); alive != (tc.want == Alive) {
				t.Errorf("Alive() = %v for %v", alive, tc.want)
			}
		})
	}
}

// waitZombie waits, bounded, until p is a zombie.
func waitZombie(t *testing.T, p Proc) {
	t.Helper()
	ctx := testCtx(t)
	for {
		st, err := readStat(p.PID)
		if err == nil && st.zombie() {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%v never became a zombie", p)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// noFDsReport is what the nofds helper found out about the Proc it was
// given, with no descriptor left to open.
type noFDsReport struct {
	Opened    int    `json:"opened"` // descriptors opened to reach the limit
	Check     string `json:"check"`
	CheckErr  string `json:"check_err"`
	StopErr   string `json:"stop_err"`
	StopUnk   bool   `json:"stop_unknown"`
	KillErr   string `json:"kill_err"`
	KillUnk   bool   `json:"kill_unknown"`
	WaitErr   string `json:"wait_err"`
	WaitUnk   bool   `json:"wait_unknown"`
	WaitExit  string `json:"wait_exit"`
	DeadCheck string `json:"dead_check"` // Check of a PID no process has
	PortFound bool   `json:"port_found"` // PortOwner of $NOFDS_PORT
	PortErr   string `json:"port_err"`
}

// noFDsMain lowers RLIMIT_NOFILE, opens descriptors until EMFILE, then asks
// Check, Stop, Kill and Wait about the Proc in $NOFDS_PROC and prints a
// noFDsReport.
func noFDsMain() int {
	var p Proc
	if err := json.Unmarshal([]byte(os.Getenv("NOFDS_PROC")), &p); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	lim := unix.Rlimit{Cur: 64, Max: 64}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var r noFDsReport
	var held []*os.File
	for {
		f, err := os.Open("/dev/null")
		if errors.Is(err, syscall.EMFILE) {
			break
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		held = append(held, f)
	}
	r.Opened = len(held)
	l, err := p.Check()
	r.Check = l.String()
	if err != nil {
		r.CheckErr = err.Error()
	}
	if err := Stop(context.Background(), p, time.Second); err != nil {
		r.StopErr, r.StopUnk = err.Error(), errors.Is(err, ErrLivenessUnknown)
	}
	if err := Kill(p); err != nil {
		r.KillErr, r.KillUnk = err.Error(), errors.Is(err, ErrLivenessUnknown)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	es, err := Wait(ctx, p)
	cancel()
	if err != nil {
		r.WaitErr, r.WaitUnk = err.Error(), errors.Is(err, ErrLivenessUnknown)
	} else {
		r.WaitExit = es.String()
	}
	dl, _ := Proc{PID: 1 << 30, StartTime: 1}.Check()
	r.DeadCheck = dl.String()
	port, _ := strconv.Atoi(os.Getenv("NOFDS_PORT"))
	if _, _, found, err := PortOwner(port, "/"); err != nil {
		r.PortErr = err.Error()
	} else {
		r.PortFound = found
	}
	// Print with the descriptors still held: stdout is open already.
	if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
		return 1
	}
	for _, f := range held {
		f.Close()
	}
	return 0
}

// When steward has no descriptor left, reading /proc fails: a live
// merchant is then Unknown, never Dead; Stop and Kill signal nothing and
// Wait reports no exit, each with an error matching ErrLivenessUnknown.
func TestCheckWithoutDescriptors(t *testing.T) {
	m := start(t, helperSpec(t, "sleeper"))
	spec, _ := json.Marshal(m.p)
	l, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	cmd := exec.CommandContext(testCtx(t), testExe(t), "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=nofds", "NOFDS_PROC="+string(spec), "NOFDS_PORT="+strconv.Itoa(port))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("nofds helper: %v\n%s", err, stderr.String())
	}
	var r noFDsReport
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("nofds helper printed %q: %v", out, err)
	}
	t.Logf("helper opened %d descriptors; report %+v", r.Opened, r)
	if r.Check != "unknown" || !strings.Contains(r.CheckErr, "too many open files") {
		t.Errorf("Check of a live process without descriptors: %s (%s), want unknown with EMFILE", r.Check, r.CheckErr)
	}
	if !r.StopUnk || !r.KillUnk {
		t.Errorf("Stop: %q, Kill: %q; want errors matching ErrLivenessUnknown", r.StopErr, r.KillErr)
	}
	if !r.WaitUnk || r.WaitExit != "" {
		t.Errorf("Wait: exit %q, error %q; want no exit and an error matching ErrLivenessUnknown", r.WaitExit, r.WaitErr)
	}
	if r.DeadCheck != "dead" {
		t.Errorf("Check of a PID no process has, without descriptors: %s, want dead (kill(2) needs none)", r.DeadCheck)
	}
	if r.PortErr == "" {
		t.Errorf("PortOwner without descriptors: found %v and no error; want the owner unknown (an error)", r.PortFound)
	}
	// Nothing was signalled: the merchant still runs.
	if l, err := m.p.Check(); l != Alive {
		t.Errorf("the merchant after the helper: %v, %v", l, err)
	}
}
