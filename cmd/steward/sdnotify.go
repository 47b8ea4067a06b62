package main

import (
	"net"
	"os"
	"strconv"
	"time"
)

// sdNotify sends a state line ("READY=1", "WATCHDOG=1", "STOPPING=1") to
// systemd when steward runs under a Type=notify unit ($NOTIFY_SOCKET set).
// It is a no-op otherwise.
func sdNotify(getenv func(string) string, state string) error {
	sock := getenv("NOTIFY_SOCKET")
	if sock == "" {
		return nil
	}
	if sock[0] == '@' {
		sock = "\x00" + sock[1:] // abstract socket
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err
}

// watchdogInterval is half of $WATCHDOG_USEC when the watchdog is meant for
// this process, else 0.
func watchdogInterval(getenv func(string) string) time.Duration {
	usec, err := strconv.ParseInt(getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || usec <= 0 {
		return 0
	}
	if pid := getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0
	}
	return time.Duration(usec) * time.Microsecond / 2
}
