//go:build linux && !udpio_portable

package udpio

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Socket is one bound, non-blocking UDP socket. Writes are safe from any
// goroutine; reads happen only in the loop the socket is added to.
type Socket struct {
	fd     int
	family int
	port   int

	mu     sync.RWMutex // held for reading across a write, for writing by Close
	closed bool

	// The loop reading the socket: set by Add, cleared once that loop has
	// let go of it. Only Add and Remove touch it, never the packet path.
	loop atomic.Pointer[Loop]
}

// Listen binds a UDP socket to addr. An IPv4 address gives an IPv4
// socket; an IPv6 one an IPv6 socket, dual-stack when it is the
// unspecified address.
func Listen(addr netip.AddrPort) (*Socket, error) {
	ip := addr.Addr().Unmap()
	family := unix.AF_INET
	if ip.Is6() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	if family == unix.AF_INET6 {
		v6only := 1
		if ip.IsUnspecified() {
			v6only = 0
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v6only); err != nil {
			_ = unix.Close(fd)
			return nil, fmt.Errorf("set IPV6_V6ONLY: %w", err)
		}
	}
	if family == unix.AF_INET {
		// Don't-fragment without path MTU discovery, as RTP stacks send:
		// media is far below any MTU, and an IPv4 packet with DF set skips
		// the kernel's shared IP ID generator, a contended cache line on
		// every send.
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_PROBE); err != nil {
			_ = unix.Close(fd)
			return nil, fmt.Errorf("set IP_MTU_DISCOVER: %w", err)
		}
	}
	var sa unix.Sockaddr
	if family == unix.AF_INET {
		sa = &unix.SockaddrInet4{Port: int(addr.Port()), Addr: ip.As4()}
	} else {
		sa = &unix.SockaddrInet6{Port: int(addr.Port()), Addr: ip.As16()}
	}
	if err := unix.Bind(fd, sa); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("bind %s: %w", addr, err)
	}
	bound, err := unix.Getsockname(fd)
	if err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("getsockname: %w", err)
	}
	s := &Socket{fd: fd, family: family}
	switch b := bound.(type) {
	case *unix.SockaddrInet4:
		s.port = b.Port
	case *unix.SockaddrInet6:
		s.port = b.Port
	}
	return s, nil
}

// Port is the local port the socket is bound to.
func (s *Socket) Port() int { return s.port }

// WriteTo sends one datagram to dst. It never blocks: when the socket's
// send buffer is full the datagram is dropped and an error returned, as a
// relay must rather than queue audio that would arrive late.
func (s *Socket) WriteTo(pkt []byte, dst netip.AddrPort) error {
	if len(pkt) == 0 {
		return nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	var (
		sa4 unix.RawSockaddrInet4
		sa6 unix.RawSockaddrInet6
		sa  unsafe.Pointer
		n   uintptr
	)
	ip := dst.Addr().Unmap()
	switch {
	case s.family == unix.AF_INET && ip.Is4():
		sa4.Family = unix.AF_INET
		sa4.Addr = ip.As4()
		putPort(&sa4.Port, dst.Port())
		sa, n = unsafe.Pointer(&sa4), unix.SizeofSockaddrInet4
	case s.family == unix.AF_INET6:
		sa6.Family = unix.AF_INET6
		sa6.Addr = ip.As16() // an IPv4 address becomes v4-mapped
		putPort(&sa6.Port, dst.Port())
		sa, n = unsafe.Pointer(&sa6), unix.SizeofSockaddrInet6
	default:
		return fmt.Errorf("send to %s from an IPv4 socket: %w", dst, syscall.EAFNOSUPPORT)
	}
	for {
		// Raw: the socket is non-blocking, so the call never parks the
		// thread and the scheduler need not hear of it.
		_, _, errno := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(s.fd), uintptr(unsafe.Pointer(&pkt[0])), uintptr(len(pkt)), 0, uintptr(sa), n)
		switch errno {
		case 0:
			return nil
		case unix.EINTR:
			continue
		default:
			return errno
		}
	}
}

// recvFrom reads one datagram from descriptor fd into buf without
// blocking. ok is false when the socket had nothing to read. The loop reads
// by descriptor, which the ready event already names, so the packet path
// does not load the Socket at all. A datagram longer than buf is consumed
// and reported as ErrTruncated: what fitted is not the packet that was
// sent.
func recvFrom(fd int, buf []byte, rsa *unix.RawSockaddrAny) (n int, src netip.AddrPort, ok bool, err error) {
	for {
		alen := uint32(unix.SizeofSockaddrAny)
		// MSG_TRUNC makes a UDP receive return the datagram's full length
		// rather than what was copied, so a cut one costs no extra call
		// to notice.
		r, _, errno := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), unix.MSG_TRUNC, uintptr(unsafe.Pointer(rsa)), uintptr(unsafe.Pointer(&alen)))
		switch errno {
		case 0:
			if int(r) > len(buf) {
				return 0, netip.AddrPort{}, false, ErrTruncated
			}
			return int(r), sourceAddr(rsa), true, nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, netip.AddrPort{}, false, nil
		default:
			return 0, netip.AddrPort{}, false, errno
		}
	}
}

// Close closes the socket. Remove it from its loop first: a loop must not
// poll a descriptor that may already belong to a new socket.
func (s *Socket) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return unix.Close(s.fd)
}

func putPort(dst *uint16, port uint16) {
	b := (*[2]byte)(unsafe.Pointer(dst))
	b[0], b[1] = byte(port>>8), byte(port)
}

func getPort(src *uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(src))
	return uint16(b[0])<<8 | uint16(b[1])
}

// sourceAddr decodes a received sender address; v4-mapped IPv6 addresses
// come back as IPv4.
func sourceAddr(rsa *unix.RawSockaddrAny) netip.AddrPort {
	switch rsa.Addr.Family {
	case unix.AF_INET:
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(rsa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), getPort(&sa.Port))
	case unix.AF_INET6:
		sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(rsa))
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), getPort(&sa.Port))
	}
	return netip.AddrPort{}
}
