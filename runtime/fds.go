package runtime

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// closeInheritedOnExec sets close-on-exec on every descriptor of this
// process from 3 up. Go opens all its own descriptors close-on-exec, but
// steward may have inherited some without it from whatever started it (a
// shell, a supervisor, a CI harness), and exec(2) would pass those on to
// every merchant and shim, where they could keep a pipe of the starter's
// open for as long as the merchant runs. Start calls it before each start
// (one close_range(2) call; /proc/self/fd where that is missing).
func closeInheritedOnExec() {
	if unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC) == nil {
		return
	}
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return
	}
	defer d.Close()
	names, _ := d.Readdirnames(-1)
	for _, n := range names {
		fd, err := strconv.Atoi(n)
		if err != nil || fd < 3 || fd == int(d.Fd()) {
			continue
		}
		unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC)
	}
}
