package sipproxy

import (
	"bytes"
	"errors"
	"net"
	"net/netip"

	"github.com/emiago/sipgo/sip"
)

var responsePrefix = []byte("SIP/2.0 ")

// errStreamRateLimited ends a TCP or TLS connection whose source is over
// its rate.
var errStreamRateLimited = errors.New("source over its rate on a stream connection")

// readFilter runs on raw bytes before sipgo parses them: oversize (or cut)
// datagrams and sources over their rate are dropped here, at the cheapest
// point, and the ACKs takeACK relays itself never reach sipgo. For a
// datagram it never returns an error, because sipgo stops reading the UDP
// socket, everyone's, whose filter fails.
//
// On TCP and TLS the data is one read of a stream, which need not begin or
// end where a message does: dropping it would leave the parser to join
// what came before with what comes after, a message inside another's body
// (RFC 3261 7.5 frames a stream by Content-Length alone). A source over its
// rate gets its connection closed instead, which sipgo does for that one
// connection when the filter fails.
func (s *Server) readFilter(info sip.TransportReadProps, data []byte) ([]byte, error) {
	// A datagram that filled the read buffer may have been cut short by it,
	// and without a Content-Length the rest would parse as a whole message.
	if info.Transport == "UDP" && (len(data) > s.cfg.MaxMessageSize || cutByReadBuffer(len(data))) {
		s.m.dropped.WithLabelValues("too_large").Inc()
		return nil, nil
	}
	if s.limiter != nil && !bytes.HasPrefix(data, responsePrefix) {
		ip := sourceIPOf(info.RemoteAddr)
		if ip.IsValid() && !s.isTrusted(ip) && !s.limiter.allow(ip) {
			s.m.rateLimited.Inc()
			if sip.IsReliable(info.Transport) {
				return nil, errStreamRateLimited
			}
			return nil, nil
		}
	}
	if info.Transport == "UDP" && s.takeACK(data, info.RemoteAddr) {
		return nil, nil
	}
	return data, nil
}

func sourceIPOf(a net.Addr) (ip netip.Addr) {
	switch v := a.(type) {
	case *net.UDPAddr:
		return v.AddrPort().Addr().Unmap()
	case *net.TCPAddr:
		return v.AddrPort().Addr().Unmap()
	}
	if a == nil {
		return ip
	}
	return sourceIP(a.String())
}
