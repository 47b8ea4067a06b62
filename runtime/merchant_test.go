package runtime

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestCheckMerchantID(t *testing.T) {
	for _, id := range []string{"acme", "a-b", "x.y", "m1", "ACME_2"} {
		if err := CheckMerchantID(id); err != nil {
			t.Errorf("CheckMerchantID(%q): %v", id, err)
		}
	}
	for _, id := range []string{"", ".", "..", "../x", "a/b", "/abs", "a/", ".hidden", "a\x00b", "a\nb", `a\b`} {
		if err := CheckMerchantID(id); err == nil {
			t.Errorf("CheckMerchantID(%q) accepted it", id)
		}
		if _, _, err := MerchantDirs("/srv/run", id); err == nil {
			t.Errorf("MerchantDirs(%q) accepted it", id)
		}
		if _, err := TailMerchant("/srv/run", id, 5, nil); err == nil {
			t.Errorf("TailMerchant(%q) accepted it", id)
		}
		if err := FollowMerchant(context.Background(), "/srv/run", id, 5, nil, lineWriter(nil)); err == nil {
			t.Errorf("FollowMerchant(%q) accepted it", id)
		}
	}
	work, logs, err := MerchantDirs("/srv/run", "acme")
	if err != nil || work != "/srv/run/merchants/acme/work" || logs != "/srv/run/merchants/acme/logs" {
		t.Errorf("MerchantDirs = %q, %q, %v", work, logs, err)
	}
}

// merchantRoot makes a runtime root with merchant acme's log, and files
// outside the merchants directory a log reader must never show.
func merchantRoot(t *testing.T) (root, outside string) {
	t.Helper()
	base := t.TempDir()
	root = filepath.Join(base, "run")
	_, logs, _ := MerchantDirs(root, "acme")
	writeFiles(t, mkdir(t, logs), map[string]string{"current.log.1": "one\n", "current.log": "two\nthree\n"})
	// What ../x and links would reach: a merchant-like directory beside
	// merchants/, and a directory outside the root.
	writeFiles(t, mkdir(t, filepath.Join(root, "x", "logs")), map[string]string{"current.log": "secret beside\n"})
	outside = mkdir(t, filepath.Join(base, "outside"))
	writeFiles(t, outside, map[string]string{"current.log": "secret outside\n"})
	return root, outside
}

func mkdir(t *testing.T, dir string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestTailMerchant(t *testing.T) {
	root, outside := merchantRoot(t)
	got, err := TailMerchant(root, "acme", 2, nil)
	if err != nil || !slices.Equal(got, []string{"two", "three"}) {
		t.Fatalf("TailMerchant(acme) = %q, %v", got, err)
	}

	// A merchant's directory belongs to its user, who may plant links.
	mdir := filepath.Join(root, MerchantsDir)
	mkdir(t, filepath.Join(mdir, "linked", "logs"))
	if err := os.Symlink(filepath.Join(outside, "current.log"), filepath.Join(mdir, "linked", "logs", "current.log")); err != nil {
		t.Fatal(err)
	}
	mkdir(t, filepath.Join(mdir, "dirlink"))
	if err := os.Symlink(outside, filepath.Join(mdir, "dirlink", "logs")); err != nil {
		t.Fatal(err)
	}
	mkdir(t, filepath.Join(mdir, "relative", "logs"))
	if err := os.Symlink("../../../x/logs/current.log", filepath.Join(mdir, "relative", "logs", "current.log")); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"../x", "linked", "dirlink", "relative"} {
		got, err := TailMerchant(root, id, 5, nil)
		if err == nil {
			t.Errorf("TailMerchant(%q) = %q, want an error", id, got)
		}
		if strings.Contains(strings.Join(got, "\n"), "secret") {
			t.Errorf("TailMerchant(%q) read outside the merchants directory: %q", id, got)
		}
	}

	_, err = TailMerchant(root, "nobody-here", 5, nil)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "merchant nobody-here has no logs") {
		t.Errorf("unknown merchant: %v", err)
	}
	_, err = TailMerchant(filepath.Join(root, "missing"), "acme", 5, nil)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "no merchant has run") {
		t.Errorf("missing runtime root: %v", err)
	}
}

// A FIFO in place of a log file is refused at once, not read (which would
// block until a writer came).
func TestTailMerchantRefusesFIFO(t *testing.T) {
	root, _ := merchantRoot(t)
	_, logs, _ := MerchantDirs(root, "acme")
	os.Remove(filepath.Join(logs, LogFile))
	if err := syscall.Mkfifo(filepath.Join(logs, LogFile), 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := TailMerchant(root, "acme", 5, nil)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "named pipe") {
			t.Errorf("TailMerchant: %v, want the FIFO refused", err)
		}
	case <-time.After(time.Second):
		t.Fatal("TailMerchant blocked on a FIFO")
	}
}

func TestFollowMerchantByID(t *testing.T) {
	root, _ := merchantRoot(t)
	_, logs, _ := MerchantDirs(root, "acme")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ch := make(lineWriter, 100)
	done := make(chan error, 1)
	go func() { done <- FollowMerchant(ctx, root, "acme", 1, nil, ch) }()
	if got := collect(t, ch, 1, 10*time.Second); !slices.Equal(got, []string{"three"}) {
		t.Fatalf("backlog %q", got)
	}
	f, err := os.OpenFile(filepath.Join(logs, LogFile), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("four\n")
	f.Close()
	if got := collect(t, ch, 1, 10*time.Second); !slices.Equal(got, []string{"four"}) {
		t.Fatalf("followed %q", got)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("FollowMerchant: %v", err)
	}
}
