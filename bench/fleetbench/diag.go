package main

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Reading /proc/net/tcp walks the whole established-socket hash table
// (262,144 buckets on this 24 GB machine: about 2.5 ms of kernel time a
// read, whatever few sockets there are), which polled every few
// milliseconds would eat a core the supervisors need. A sock_diag netlink
// dump asking only for LISTEN sockets walks the listening hash alone.

const (
	tcpListenState = 10 // TCP_LISTEN
	diagReqLen     = 56 // struct inet_diag_req_v2
	diagMsgLen     = 72 // struct inet_diag_msg
)

// listeningDiag returns port → socket inode for every TCP socket in LISTEN
// state (IPv4 and IPv6) whose port is in want (nil: all).
func listeningDiag(want map[int]bool) (map[int]uint64, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, err
	}
	out := map[int]uint64{}
	buf := make([]byte, 64<<10)
	for seq, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		req := make([]byte, unix.NLMSG_HDRLEN+diagReqLen)
		ne := binary.NativeEndian
		ne.PutUint32(req[0:], uint32(len(req)))
		ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
		ne.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
		ne.PutUint32(req[8:], uint32(seq+1))
		r := req[unix.NLMSG_HDRLEN:]
		r[0] = family
		r[1] = unix.IPPROTO_TCP
		ne.PutUint32(r[4:], 1<<tcpListenState)
		if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return nil, err
		}
	recv:
		for {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return nil, err
			}
			msgs, err := parseNetlink(buf[:n])
			if err != nil {
				return nil, err
			}
			for _, m := range msgs {
				switch m.typ {
				case unix.NLMSG_DONE:
					break recv
				case unix.NLMSG_ERROR:
					if family == unix.AF_INET6 {
						break recv // no IPv6: fine
					}
					return nil, errors.New("sock_diag: netlink error")
				case unix.SOCK_DIAG_BY_FAMILY:
					if len(m.data) < diagMsgLen || m.data[1] != tcpListenState {
						continue
					}
					port := int(binary.BigEndian.Uint16(m.data[4:6]))
					inode := uint64(ne.Uint32(m.data[68:72]))
					if inode != 0 && (want == nil || want[port]) {
						out[port] = inode
					}
				}
			}
		}
	}
	return out, nil
}

type nlmsg struct {
	typ  uint16
	data []byte
}

func parseNetlink(b []byte) ([]nlmsg, error) {
	var out []nlmsg
	ne := binary.NativeEndian
	for len(b) >= unix.NLMSG_HDRLEN {
		l := int(ne.Uint32(b[0:4]))
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			return nil, fmt.Errorf("sock_diag: bad netlink length %d", l)
		}
		out = append(out, nlmsg{typ: ne.Uint16(b[4:6]), data: b[unix.NLMSG_HDRLEN:l]})
		adv := (l + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1)
		if adv >= len(b) {
			break
		}
		b = b[adv:]
	}
	return out, nil
}
