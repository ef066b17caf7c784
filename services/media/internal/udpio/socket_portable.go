//go:build !linux || udpio_portable

package udpio

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"
)

// sendWait bounds how long a write waits for room in a full send buffer:
// a packet held up longer is late audio, and a write from a handler holds
// up every other socket of its loop meanwhile.
const sendWait = 5 * time.Millisecond

// Socket is one bound UDP socket. Writes are safe from any goroutine;
// reads happen only in the loop the socket is added to.
type Socket struct {
	conn *net.UDPConn
	port int
	is4  bool // bound to an IPv4 address, so it cannot reach IPv6 ones

	closed atomic.Bool

	// Set while a loop reads the socket: the read deadline that stops one
	// reader would stop a second one as well.
	inLoop atomic.Bool
}

// Listen binds a UDP socket to addr. An IPv4 address gives an IPv4
// socket; an IPv6 one an IPv6 socket, dual-stack when it is the
// unspecified address.
func Listen(addr netip.AddrPort) (*Socket, error) {
	ip := addr.Addr().Unmap()
	network := "udp4"
	switch {
	case ip.Is6() && ip.IsUnspecified():
		network = "udp" // the net package leaves IPV6_V6ONLY off for it
	case ip.Is6():
		network = "udp6"
	}
	conn, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, addr.Port())))
	if err != nil {
		return nil, fmt.Errorf("bind %s: %w", addr, err)
	}
	return &Socket{conn: conn, port: conn.LocalAddr().(*net.UDPAddr).Port, is4: ip.Is4()}, nil
}

// Port is the local port the socket is bound to.
func (s *Socket) Port() int { return s.port }

// WriteTo sends one datagram to dst. It does not block for long: when the
// socket's send buffer stays full the datagram is dropped and an error
// returned, as a relay must rather than queue audio that would arrive late.
func (s *Socket) WriteTo(pkt []byte, dst netip.AddrPort) error {
	if len(pkt) == 0 {
		return nil
	}
	if s.closed.Load() {
		return ErrClosed
	}
	if s.is4 && !dst.Addr().Unmap().Is4() {
		// The error the epoll implementation gives, rather than the net
		// package's own address error.
		return fmt.Errorf("send to %s from an IPv4 socket: %w", dst, syscall.EAFNOSUPPORT)
	}
	if err := s.conn.SetWriteDeadline(time.Now().Add(sendWait)); err != nil {
		return sendError(dst, err)
	}
	if _, err := s.conn.WriteToUDPAddrPort(pkt, dst); err != nil {
		return sendError(dst, err)
	}
	return nil
}

// sendError is ErrClosed for a write that lost the race with Close.
func sendError(dst netip.AddrPort, err error) error {
	if errors.Is(err, net.ErrClosed) {
		return ErrClosed
	}
	return fmt.Errorf("send to %s: %w", dst, err)
}

// Close closes the socket. Remove it from its loop first: a loop holds on
// to a socket until it is removed.
func (s *Socket) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	return s.conn.Close()
}
