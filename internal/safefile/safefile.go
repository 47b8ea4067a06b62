package safefile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ErrNotRegular is matched (errors.Is) by every *NotRegularError.
var ErrNotRegular = errors.New("not a regular file")

// ErrTooLarge is matched (errors.Is) by every *TooLargeError.
var ErrTooLarge = errors.New("file too large")

// NotRegularError is a path that leads to something other than a regular
// file.
type NotRegularError struct {
	Path string
	// Mode is the type of what the path leads to (fs.ModeNamedPipe,
	// fs.ModeDevice|fs.ModeCharDevice, ...).
	Mode fs.FileMode
}

func (e *NotRegularError) Error() string {
	return fmt.Sprintf("%s is %s, not a regular file: only regular files are read here; replace it with a regular file or remove it", e.Path, Kind(e.Mode))
}

// Is makes a *NotRegularError match ErrNotRegular.
func (*NotRegularError) Is(target error) bool { return target == ErrNotRegular }

// TooLargeError is a file larger than the limit it was read with.
type TooLargeError struct {
	Path string
	// Size is the file's size as fstat(2) gave it, or -1 when the file grew
	// beyond the limit while it was read.
	Size int64
	// Limit is the largest size accepted, in bytes.
	Limit int64
}

func (e *TooLargeError) Error() string {
	if e.Size < 0 {
		return fmt.Sprintf("%s grew beyond the limit of %d bytes while it was read", e.Path, e.Limit)
	}
	return fmt.Sprintf("%s is %d bytes, over the limit of %d bytes", e.Path, e.Size, e.Limit)
}

// Is makes a *TooLargeError match ErrTooLarge.
func (*TooLargeError) Is(target error) bool { return target == ErrTooLarge }

// Kind names the type of a file mode the way people say it: "a regular
// file", "a directory", "a named pipe (FIFO)", "a socket", "a character
// device", "a block device", "a symbolic link", or "an irregular file".
func Kind(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return "a regular file"
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	}
	return "an irregular file"
}

// modeOf turns the S_IFMT bits of a stat into an fs.FileMode type.
func modeOf(st *unix.Stat_t) fs.FileMode {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return 0
	case unix.S_IFDIR:
		return fs.ModeDir
	case unix.S_IFIFO:
		return fs.ModeNamedPipe
	case unix.S_IFSOCK:
		return fs.ModeSocket
	case unix.S_IFCHR:
		return fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFBLK:
		return fs.ModeDevice
	case unix.S_IFLNK:
		return fs.ModeSymlink
	}
	return fs.ModeIrregular
}

// OpenRegular opens path for reading if it is a regular file, and returns
// the open file and its fstat(2) information. It never blocks on a FIFO
// and never reads from anything but a regular file: see the package
// documentation.
func OpenRegular(path string) (*os.File, fs.FileInfo, error) {
	var fd int
	var err error
	for {
		fd, err = unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		if err == unix.ENXIO {
			// What open(2) says of a socket or a device without a driver:
			// name what it is.
			var st unix.Stat_t
			if unix.Stat(path, &st) == nil && modeOf(&st) != 0 {
				return nil, nil, &NotRegularError{Path: path, Mode: modeOf(&st)}
			}
		}
		return nil, nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, nil, &fs.PathError{Op: "fstat", Path: path, Err: err}
	}
	if m := modeOf(&st); m != 0 {
		unix.Close(fd)
		return nil, nil, &NotRegularError{Path: path, Mode: m}
	}
	// A regular file: back to blocking mode before os.NewFile looks at the
	// flags, so that the file is not handed to the runtime's poller.
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err == nil {
		_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, flags&^unix.O_NONBLOCK)
	}
	if err != nil {
		unix.Close(fd)
		return nil, nil, &fs.PathError{Op: "fcntl", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, fi, nil
}

// chunk is how much ReadRegular reads between two looks at its context.
const chunk = 64 << 10

// ReadRegular returns the content of the regular file at path, refusing
// anything but a regular file (see OpenRegular) and files larger than max
// bytes (see TooLargeError). max must not be negative. It returns ctx's
// error when ctx ends before the file is read.
func ReadRegular(ctx context.Context, path string, max int64) ([]byte, error) {
	if max < 0 {
		return nil, fmt.Errorf("read %s: negative size limit %d", path, max)
	}
	if ctx.Err() != nil {
		return nil, context.Cause(ctx)
	}
	f, fi, err := OpenRegular(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi.Size() > max {
		return nil, &TooLargeError{Path: path, Size: fi.Size(), Limit: max}
	}
	// The size is a hint: files in /proc say 0, and a file may grow.
	buf := make([]byte, 0, min(fi.Size(), max)+1)
	r := &Reader{Ctx: ctx, R: io.LimitReader(f, max+1)}
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):min(cap(buf), len(buf)+chunk)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			return nil, &fs.PathError{Op: "read", Path: path, Err: err}
		}
	}
	if int64(len(buf)) > max {
		return nil, &TooLargeError{Path: path, Size: -1, Limit: max}
	}
	return buf, nil
}

// Reader reads from R and returns Ctx's error, reading nothing, once Ctx
// has ended: wrapped around a file or a stream that is copied in chunks,
// it makes the copy end within one chunk of the context.
type Reader struct {
	Ctx context.Context
	R   io.Reader
}

func (r *Reader) Read(p []byte) (int, error) {
	if err := r.Ctx.Err(); err != nil {
		return 0, context.Cause(r.Ctx)
	}
	return r.R.Read(p)
}

// OpenRegularIn is OpenRegular for the file name inside root: the name is
// resolved by root (it may not lead out of it, not even through symbolic
// links), and errors name it as root.Name() joined with name.
func OpenRegularIn(root *os.Root, name string) (*os.File, fs.FileInfo, error) {
	f, err := root.OpenFile(name, os.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, &NotRegularError{Path: filepath.Join(root.Name(), name), Mode: fi.Mode().Type()}
	}
	// A regular file was never in the runtime's poller: clearing the flag
	// behind its back is safe.
	fd := f.Fd()
	flags, err := unix.FcntlInt(fd, unix.F_GETFL, 0)
	if err == nil {
		_, err = unix.FcntlInt(fd, unix.F_SETFL, flags&^unix.O_NONBLOCK)
	}
	if err != nil {
		f.Close()
		return nil, nil, &fs.PathError{Op: "fcntl", Path: filepath.Join(root.Name(), name), Err: err}
	}
	return f, fi, nil
}
