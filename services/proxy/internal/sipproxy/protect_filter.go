package sipproxy

import (
	"bytes"
	"net"
	"net/netip"

	"github.com/emiago/sipgo/sip"
)

var responsePrefix = []byte("SIP/2.0 ")

// readFilter runs on raw bytes before sipgo parses them: oversize datagrams
// and sources over their rate are dropped here, at the cheapest point, and
// the ACKs takeACK relays itself never reach sipgo. It never returns an
// error, because sipgo stops reading a socket whose filter fails.
func (s *Server) readFilter(info sip.TransportReadProps, data []byte) ([]byte, error) {
	if info.Transport == "UDP" && len(data) > s.cfg.MaxMessageSize {
		s.m.dropped.WithLabelValues("too_large").Inc()
		return nil, nil
	}
	if s.limiter != nil && !bytes.HasPrefix(data, responsePrefix) {
		ip := sourceIPOf(info.RemoteAddr)
		if ip.IsValid() && !s.isTrusted(ip) && !s.limiter.allow(ip) {
			s.m.rateLimited.Inc()
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
