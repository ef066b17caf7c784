package sipproxy

import (
	"bytes"
	"net"
	"net/netip"
	"strings"

	"github.com/emiago/sipgo/sip"
)

var ackPrefix = []byte("ACK ")

// takeACK forwards an ACK read from the UDP socket on the reading goroutine,
// before sipgo's transaction layer sees it, and reports whether it did. The
// ACK for a 2xx matches no transaction (RFC 3261 17.1.1.3) and is relayed
// statelessly anyway; through sipgo it would cost a server transaction, its
// timers and a goroutine, only to be dropped once the handler returned.
//
// Left to sipgo: an ACK matching a live INVITE server transaction (it
// acknowledges a non-2xx answer, hop by hop), one with a body (an anchored
// call's media answer asks the fleet, which must not block the socket's
// reader), one whose next hop needs a name resolved, and anything that does
// not parse (sipgo counts and logs it).
func (s *Server) takeACK(data []byte, remote net.Addr) bool {
	if !bytes.HasPrefix(data, ackPrefix) || remote == nil {
		return false
	}
	msg, err := s.parser.ParseSIP(data)
	if err != nil {
		return false
	}
	req, ok := msg.(*sip.Request)
	if !ok || !req.IsAck() || len(req.Body()) > 0 || !s.routedByAddress(req) {
		return false
	}
	key, err := sip.ServerTxKeyMake(req)
	if err != nil {
		return false
	}
	if _, live := s.inviteTxs.Load(key); live {
		return false
	}
	req.SetTransport("UDP")
	req.SetSource(remote.String())
	// On the reader itself: its stack is grown already, and a hand-off to
	// the handler pool would cost more than the forwarding.
	if s.active.enter() {
		s.serve(req, nil)
		s.active.leave()
	}
	return true
}

// trackInvite records a live INVITE server transaction until it ends.
func (s *Server) trackInvite(tx sip.ServerTransaction) {
	keyed, ok := tx.(interface{ Key() string })
	if !ok {
		return
	}
	key := keyed.Key()
	s.inviteTxs.Store(key, tx)
	if !tx.OnTerminate(func(string, error) { s.inviteTxs.Delete(key) }) {
		s.inviteTxs.Delete(key)
	}
}

// routedByAddress reports whether forwarding req resolves no name: every
// Route entry that is not ours, and the Request-URI, name an IP address.
func (s *Server) routedByAddress(req *sip.Request) bool {
	for _, h := range req.GetHeaders("Route") {
		r, ok := h.(*sip.RouteHeader)
		if !ok {
			return false
		}
		if !s.self.isSelf(r.Address.Host, r.Address.Port) && !isIPHost(r.Address.Host) {
			return false
		}
	}
	return isIPHost(req.Recipient.Host)
}

func isIPHost(host string) bool {
	_, err := netip.ParseAddr(strings.Trim(host, "[]"))
	return err == nil
}
