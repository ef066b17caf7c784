package sipproxy

import (
	"context"
	"net/netip"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/rs/zerolog"
)

// mtuTCPConnectTimeout bounds the TCP connection a request too large for
// UDP tries before it goes over UDP after all: long enough for a lost SYN
// to be sent again, short enough for a caller waiting on a peer that
// silently drops TCP.
const mtuTCPConnectTimeout = 2 * time.Second

// sendBranch starts a branch's client transaction. A request larger than
// udp_mtu to a UDP target that takes TCP as well goes over TCP to the same
// address (RFC 3261 18.1.1, Kamailio's udp_mtu_try_proto): only its top
// Via changes, while the Record-Route keeps the UDP entry it was built
// with, so the dialog's later, smaller requests stay on UDP. When no TCP
// connection can be made there, the request goes over UDP after all, and
// so do the target's next large requests for tcpFailureMemory.
// logger gives the call's logger, built only when there is something to
// log: most requests log nothing, and building it allocates.
func (s *Server) sendBranch(logger func() *zerolog.Logger, out *sip.Request, t target) (sip.ClientTransaction, error) {
	if s.triesTCPFor(out, t) {
		if s.tcpFailures.recent(t.dest) {
			s.m.udpMTUTCPSkips.Inc()
			s.m.udpMTUExceeded.WithLabelValues("udp").Inc()
		} else if tx, ok := s.sendOverTCP(logger, out, t); ok {
			return tx, nil
		}
	}
	ctx, cancel := sendContext(t)
	defer cancel()
	return s.txl.Request(ctx, out)
}

// sendOverTCP tries to send out, bound for t over UDP, over TCP instead;
// when no connection can be made it puts out back as it was, for UDP, and
// remembers the failure.
func (s *Server) sendOverTCP(logger func() *zerolog.Logger, out *sip.Request, t target) (sip.ClientTransaction, bool) {
	viaOver(out, "TCP", s.port("TCP"))
	out.SetTransport("TCP")
	out.Laddr = sip.Addr{}
	ctx, cancel := context.WithTimeout(context.Background(), mtuTCPConnectTimeout)
	tx, err := s.txl.Request(ctx, out)
	cancel()
	if err == nil {
		s.m.udpMTUExceeded.WithLabelValues("tcp").Inc()
		return tx, true
	}
	s.tcpFailures.failed(t.dest)
	s.m.udpMTUExceeded.WithLabelValues("udp").Inc()
	logger().Debug().Err(err).Str("dest", t.dest).Dur("udp_for", tcpFailureMemory).
		Msg("no tcp connection for a request too large for udp, sending it and the next ones over udp")
	viaOver(out, "UDP", s.port("UDP"))
	s.address(out, t)
	return nil, false
}

// sendMayWait reports whether sending out to t may wait: for a
// connection to set up or a name to resolve (sendContext), or for the TCP
// a request too large for UDP tries first.
func (s *Server) sendMayWait(out *sip.Request, t target) bool {
	return !sendsAtOnce(t) || s.triesTCPFor(out, t)
}

// triesTCPFor reports whether out, about to go to t over UDP, is larger
// than udp_mtu and t takes TCP. The size is only measured for such targets,
// so every other request pays nothing for it.
func (s *Server) triesTCPFor(out *sip.Request, t target) bool {
	if t.transport != "UDP" || !t.mayTryTCP || !s.mtuTriesTCP {
		return false
	}
	return requestSize(out) > s.cfg.UDPMTU
}

// viaOver rewrites our top Via for another transport. The Via is the one
// the branch was built with, its own, so it is changed in place.
func viaOver(out *sip.Request, transport string, port int) {
	if via := out.Via(); via != nil {
		via.Transport, via.Port = transport, port
	}
}

// byteCounter is an io.StringWriter that only counts.
type byteCounter int

func (n *byteCounter) WriteString(s string) (int, error) {
	*n += byteCounter(len(s))
	return len(s), nil
}

// requestSize is the length of req as sipgo writes it, without building
// it: the start line and headers are counted as written, the body by its
// length, never copied. Via headers, at least two on every forwarded
// request, are counted from their fields: sipgo formats each into a
// string of its own first, which was most of what counting cost.
func requestSize(req *sip.Request) int {
	var n byteCounter
	req.StartLineWrite(&n)
	for _, h := range req.Headers() {
		if via, ok := h.(*sip.ViaHeader); ok {
			n += byteCounter(viaSize(via))
		} else {
			h.StringWrite(&n)
		}
		n += 2 // CRLF
	}
	// The CRLF after the start line and the empty line before the body.
	return int(n) + 4 + len(req.Body())
}

// viaSize is the length of "Via: " and the header's value as sipgo writes
// them: "SIP/2.0/UDP host:port;params", an IPv6 host in brackets.
func viaSize(v *sip.ViaHeader) int {
	n := len("Via: ") + len(v.ProtocolName) + 1 + len(v.ProtocolVersion) + 1 + len(v.Transport) + 1 + len(v.Host)
	if a, err := netip.ParseAddr(v.Host); err == nil && a.Is6() && !a.Is4In6() && a.Zone() == "" {
		n += 2
	}
	if v.Port > 0 {
		n += 1 + decimalDigits(v.Port)
	}
	if len(v.Params) > 0 {
		var params byteCounter
		v.Params.ToStringWrite(';', &params)
		n += 1 + int(params)
	}
	return n
}

func decimalDigits(v int) int {
	n := 1
	for ; v >= 10; v /= 10 {
		n++
	}
	return n
}
