package router

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"steward/runtime"
)

// listenWait is how long a listen address in use is waited for.
const listenWait = 2500 * time.Millisecond

// checkListen tells, before nginx is started, whether its listen address
// is taken by another process: nginx would otherwise retry the bind for
// seconds and end with an error that names neither the setting nor who
// holds the port.
func (r *Router) checkListen() error {
	addr := tcpAddr(r.cfg.Listen)
	if addr == "" {
		return nil
	}
	// Workers a killed master left may still be closing their sockets
	// (stopOrphans): the port is given the time nginx itself retries for.
	deadline := time.Now().Add(listenWait)
	for {
		l, err := net.Listen("tcp", addr)
		if err == nil {
			l.Close()
			return nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			return nil // nginx reports what else may be wrong (a name, a permission)
		}
		pid, comm := listener(addr)
		if time.Now().After(deadline) || comm != "" && comm != "nginx" {
			holder := "another process"
			if pid != 0 {
				holder = fmt.Sprintf("pid %d (%s)", pid, comm)
			}
			return fmt.Errorf("router: the nginx listen address %s (router.nginx.listen in the host config) is in use by %s; choose another address or stop that process", r.cfg.Listen, holder)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tcpAddr turns an nginx listen address ([host:]port, host "*" for any)
// into one net.Listen takes; "" when it is not one.
func tcpAddr(listen string) string {
	if listen == "" || strings.HasPrefix(listen, "unix:") {
		return ""
	}
	if _, err := strconv.Atoi(listen); err == nil {
		return ":" + listen
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return ""
	}
	if host == "*" {
		host = ""
	}
	return net.JoinHostPort(host, port)
}

// listener names the process listening on addr's port: its pid and
// command name, or 0 and "" when it cannot be named.
func listener(addr string) (pid int, comm string) {
	_, port, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(port)
	pid, found, err := runtime.PortHolder(n)
	if err != nil || !found {
		return 0, ""
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil {
		return 0, ""
	}
	return pid, strings.TrimSpace(string(b))
}
