// Package atomicfile replaces files so that a reader sees either the old
// content or the new, never part of one.
package atomicfile

import (
	"io/fs"
	"os"
	"path/filepath"
)

// TempPrefix starts the names of the temporary files WriteFile creates
// (TempPrefix + the file's name + a random suffix), so that a directory's
// owner can recognise and remove those a crash left behind.
const TempPrefix = ".tmp-"

// WriteFile replaces path with data: it writes a temporary file in path's
// directory, gives it mode perm and renames it over path. A crash may leave
// the temporary file, never a torn path. With durable, the file is synced
// before the rename and the directory after it, so that once WriteFile
// returns the new content survives a power loss; without, a crash may lose
// the new content (the old one is then still in place).
func WriteFile(path string, data []byte, perm fs.FileMode, durable bool) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, TempPrefix+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if durable {
		if err = f.Sync(); err != nil {
			return err
		}
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	if durable {
		return SyncDir(dir)
	}
	return nil
}

// SyncDir syncs a directory, making the renames and removals done in it
// durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
