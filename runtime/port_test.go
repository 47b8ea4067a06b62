package runtime

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestPortOwner(t *testing.T) {
	port := freePort(t)
	if p, mine, found, err := PortOwner(port, "/nowhere"); err != nil || found || mine || p != (Proc{}) {
		t.Fatalf("free port: %v, mine %v, found %v, %v", p, mine, found, err)
	}

	s := helperSpec(t, "merchant", "PORT="+strconv.Itoa(port))
	m := start(t, s)
	waitLog(t, s.LogDir, `^ready `, 10*time.Second)
	link := filepath.Join(t.TempDir(), "work-link")
	if err := os.Symlink(s.WorkDir, link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		workDir string
		mine    bool
	}{
		{"its work dir", s.WorkDir, true},
		{"its work dir through a link", link, true},
		{"another merchant's work dir", filepath.Join(t.TempDir(), "work"), false},
		{"no work dir", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, mine, found, err := PortOwner(port, tc.workDir)
			if err != nil || !found || p != m.p || mine != tc.mine {
				t.Errorf("PortOwner = %v, mine %v, found %v, %v; want %v, mine %v", p, mine, found, err, m.p, tc.mine)
			}
		})
	}

	if err := Stop(testCtx(t), m.p, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, _, found, err := PortOwner(port, s.WorkDir); err != nil || found {
		t.Errorf("after Stop: found %v, %v", found, err)
	}
}

func TestPortOwnerSelf(t *testing.T) {
	l, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	wd, _ := os.Getwd()
	self, _ := Inspect(os.Getpid())
	p, mine, found, err := PortOwner(port, wd)
	if err != nil || !found || !mine || p != self {
		t.Errorf("PortOwner = %v, mine %v, found %v, %v; want this process, mine", p, mine, found, err)
	}
}

func TestFreePort(t *testing.T) {
	l, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	held := l.Addr().(*net.TCPAddr).Port
	if held > 65000 {
		t.Skipf("port %d too near the end of the range", held)
	}
	claimed := held + 1
	got, ok := FreePort(held, held+50, func(p int) bool { return p == claimed })
	if !ok || got == held || got == claimed || got < held || got > held+50 {
		t.Errorf("FreePort = %d, %v; want a port in %d..%d but %d (held) and %d (claimed)", got, ok, held, held+50, held, claimed)
	}
	if _, ok := FreePort(held, held, nil); ok {
		t.Error("FreePort found the held port free")
	}
	if _, ok := FreePort(claimed, claimed, func(int) bool { return true }); ok {
		t.Error("FreePort returned a claimed port")
	}
}
