package runtime

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A merchant (whose user owns its directory) cannot make its logs show
// another merchant's: links out of its log directory, or a log directory
// that is a link, are not followed.
func TestMerchantLogsStayTheMerchants(t *testing.T) {
	root := t.TempDir()
	mk := func(id string) string {
		d := filepath.Join(root, MerchantsDir, id, "logs")
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	m1, m2 := mk("m1"), mk("m2")
	if err := os.WriteFile(filepath.Join(m2, LogFile), []byte("m2 private line\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(m1, LogFile), []byte("m1 line\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../m2/logs/"+LogFile, filepath.Join(m1, LogFile+".2")); err != nil {
		t.Fatal(err)
	}
	lines, err := TailMerchant(root, "m1", 100, nil)
	if strings.Contains(strings.Join(lines, "\n"), "m2 private") {
		t.Errorf("m1's logs show m2's lines through a link: %q", lines)
	}
	if err == nil && !strings.Contains(strings.Join(lines, "\n"), "m1 line") {
		t.Errorf("m1's logs: %q", lines)
	}

	// The whole log directory swapped for a link to another merchant's.
	if err := os.RemoveAll(m1); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../m2/logs", m1); err != nil {
		t.Fatal(err)
	}
	lines, err = TailMerchant(root, "m1", 100, nil)
	if err == nil || strings.Contains(strings.Join(lines, "\n"), "m2 private") {
		t.Errorf("m1's log directory is a link to m2's: lines %q, err %v; want an error", lines, err)
	}
}
