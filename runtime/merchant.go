package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"unicode"
)

// MerchantsDir is the directory below the runtime root that holds one
// directory per merchant: MerchantsDir/ID/work and MerchantsDir/ID/logs.
const MerchantsDir = "merchants"

// CheckMerchantID refuses an id that is not a single plain path
// component: empty, "." or "..", holding "/", "\", a NUL or another
// control character, or starting with "." (hidden, and never a merchant).
// Every function that turns a merchant id into a path checks it first.
func CheckMerchantID(id string) error {
	switch {
	case id == "":
		return errors.New("empty merchant id")
	case strings.HasPrefix(id, "."):
		return fmt.Errorf("merchant id %q starts with \".\"; a merchant id is a single name such as \"acme\"", id)
	case strings.ContainsAny(id, `/\`) || strings.ContainsFunc(id, unicode.IsControl):
		return fmt.Errorf("merchant id %q is not a single plain name (no \"/\", \"\\\" or control characters); a merchant id is a name such as \"acme\"", id)
	}
	return nil
}

// MerchantDirs returns merchant id's working and log directories below the
// runtime root: root/merchants/ID/work and root/merchants/ID/logs. It
// refuses an id CheckMerchantID refuses.
func MerchantDirs(root, id string) (work, logs string, err error) {
	if err := CheckMerchantID(id); err != nil {
		return "", "", err
	}
	dir := filepath.Join(root, MerchantsDir, id)
	return filepath.Join(dir, "work"), filepath.Join(dir, "logs"), nil
}

// openMerchantLog opens merchant id's log directory through an os.Root on
// root/merchants: no name, and no symbolic link in the merchant's
// directory (which the merchant's user owns), leads out of it.
func openMerchantLog(root, id string) (logDir, error) {
	if err := CheckMerchantID(id); err != nil {
		return logDir{}, err
	}
	mdir := filepath.Join(root, MerchantsDir)
	r, err := os.OpenRoot(mdir)
	if errors.Is(err, fs.ErrNotExist) {
		return logDir{}, fmt.Errorf("merchant %s has no logs: no merchant has run under the runtime root %s yet: %w", id, root, fs.ErrNotExist)
	}
	if err != nil {
		return logDir{}, err
	}
	defer r.Close()
	rel, path := filepath.Join(id, "logs"), filepath.Join(mdir, id, "logs")
	// The merchant's user owns its directory and could swap its logs for a
	// link to another merchant's: both levels must be real directories,
	// and the logs are then read through a root of their own, which no
	// link in them leads out of.
	var fi fs.FileInfo
	for _, p := range []string{id, rel} {
		fi, err = r.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return logDir{}, fmt.Errorf("merchant %s has no logs in %s: it has not run on this host (check the id with steward status): %w", id, path, fs.ErrNotExist)
		}
		if err != nil {
			return logDir{}, err
		}
		if !fi.IsDir() {
			return logDir{}, fmt.Errorf("merchant %s's logs: %s is not a directory (%s)", id, filepath.Join(mdir, p), fi.Mode().Type())
		}
	}
	sub, err := r.OpenRoot(rel)
	if err != nil {
		return logDir{}, err
	}
	if got, err := sub.Stat("."); err != nil || !os.SameFile(got, fi) {
		sub.Close()
		return logDir{}, fmt.Errorf("merchant %s's log directory %s changed while it was opened", id, path)
	}
	return logDir{root: sub, rel: ".", path: path}, nil
}

// TailMerchant is TailLines for merchant id's log below the runtime root
// (root/merchants/ID/logs), read through an os.Root on root/merchants. It
// refuses an id CheckMerchantID refuses, and a merchant without a log
// directory with an error that says so and matches fs.ErrNotExist.
func TailMerchant(root, id string, n int, f LineFilter) ([]string, error) {
	d, err := openMerchantLog(root, id)
	if err != nil {
		return nil, err
	}
	defer d.close()
	return d.tailLines(n, f)
}

// FollowMerchant is TailFollow (n < 0: all lines, 0: none, then follow)
// for merchant id's log below the runtime root, read like TailMerchant.
func FollowMerchant(ctx context.Context, root, id string, n int, f LineFilter, w io.Writer) error {
	d, err := openMerchantLog(root, id)
	if err != nil {
		return err
	}
	defer d.close()
	return d.follow(ctx, n, f, w)
}
