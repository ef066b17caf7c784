package sipproxy

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// A phone on TCP or TLS is reachable only over the connection it opened,
// which one replica holds. With Config.ReplicaAddr set, the replicas tell
// each other which: the registrar keeps the holder in the binding (what
// RFC 3327's Path records), and the NAT alias of a contact reached over a
// held connection names its holder too, signed with the secret the
// replicas share. A replica that must send to such a flow sends to its
// holder instead, and the holder relays what carries a valid signature.
// The dialogs' later requests find the holder the same way, through the
// alias in their Request-URI, whichever replica they reach first.

// flowMACLen is the hex digits of a flow signature: 80 bits.
const flowMACLen = 20

// relayParam carries, on the Route a replica puts in front of a request
// it sends to a holder out of any dialog, that request's own signature.
// An alias is signed for one contact in one call, so the other party of
// that call could still send new requests with it, unauthenticated; within
// a dialog the alias is worth what the route set is, which SIP relays
// without authentication anyway.
const relayParam = "cg-relay"

// flowKey is the key of the flow signatures: derived from the replicas'
// shared nonce secret, or random when there is none (a lone replica).
func flowKey(secret string) []byte {
	if secret != "" {
		sum := sha256.Sum256([]byte("callgrid flow signature\x00" + secret))
		return sum[:]
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	return key
}

// holdsFlows reports whether this replica tells the others which
// connections it holds.
func (s *Server) holdsFlows() bool { return s.cfg.ReplicaAddr != "" }

// isHolder reports whether holder ("host:port") is this replica.
func (s *Server) isHolder(holder string) bool { return strings.EqualFold(holder, s.cfg.ReplicaAddr) }

// holderFor is the holder a binding registered over transport keeps: this
// replica for a connection, none otherwise.
func (s *Server) holderFor(transport string) string {
	if !s.holdsFlows() || !sip.IsReliable(transport) {
		return ""
	}
	return s.cfg.ReplicaAddr
}

// heldAlias is the alias, for contact in the call callID, of the flow to
// dest over transport that holder holds:
// "ip~port~transport~holder-host~holder-port~signature". The signature
// covers the contact and the call too: copied onto another URI, or used in
// another call, the alias means nothing.
func (s *Server) heldAlias(contact sip.Uri, callID, dest, transport, holder string) string {
	host, port, _ := net.SplitHostPort(dest)
	hhost, hport, _ := net.SplitHostPort(holder)
	base := host + "~" + port + "~" + strings.ToLower(transport) + "~" + hhost + "~" + hport
	return base + "~" + s.flowMAC(aliasSigned(base, contact, callID))
}

func aliasSigned(base string, contact sip.Uri, callID string) string {
	return base + " " + contactIdentity(contact) + " " + callID
}

// contactIdentity is what of a contact URI its alias is signed with: the
// parts no proxy changes.
func contactIdentity(u sip.Uri) string {
	return u.Scheme + ":" + u.User + "@" + strings.ToLower(u.Host) + ":" + strconv.Itoa(u.Port)
}

func (s *Server) flowMAC(base string) string {
	m := hmac.New(sha256.New, s.flowKey)
	m.Write([]byte(base))
	return hex.EncodeToString(m.Sum(nil))[:flowMACLen]
}

// verified reports whether a held flow's alias on contact was signed by a
// replica, for that contact in the call callID.
func (s *Server) verified(contact sip.Uri, callID string, a flowAlias) bool {
	return a.holder != "" && hmac.Equal([]byte(a.mac), []byte(s.flowMAC(aliasSigned(a.signed, contact, callID))))
}

// callIDOf is a message's Call-ID, "" without one.
func callIDOf(msg interface{ CallID() *sip.CallIDHeader }) string {
	if h := msg.CallID(); h != nil {
		return h.Value()
	}
	return ""
}

// aliasFor is the alias a contact of the call callID reached from source
// over transport gets, or false when it needs none: a connection this
// replica holds always gets one, naming it, since no other replica reaches
// the phone by itself.
func (s *Server) aliasFor(contact sip.Uri, callID, source, transport string) (string, bool) {
	if s.holdsFlows() && sip.IsReliable(transport) {
		if _, _, err := net.SplitHostPort(source); err == nil {
			return s.heldAlias(contact, callID, source, transport, s.cfg.ReplicaAddr), true
		}
	}
	return contactAlias(contact, source, transport)
}

// keepsAlias reports whether uri carries an alias a replica signed, which
// names the flow better than the address the message came from: the
// message was relayed by the flow's holder.
func (s *Server) keepsAlias(uri sip.Uri, callID string) bool {
	v, ok := uri.UriParams.Get(aliasParam)
	if !ok {
		return false
	}
	a, ok := parseFlowAlias(v)
	return ok && s.verified(uri, callID, a)
}

// relayMAC signs one request a replica sends to the holder of a flow,
// named by alias, out of any dialog.
func (s *Server) relayMAC(req *sip.Request, alias string) string {
	return s.flowMAC("relay " + req.CallID().Value() + " " + fromTag(req) + " " +
		strconv.FormatUint(uint64(req.CSeq().SeqNo), 10) + " " + string(req.Method) + " " + alias)
}

// relayRoute is the Route in front of a request sent to holder out of any
// dialog: the holder, and the request's signature.
func (s *Server) relayRoute(req *sip.Request, holder, alias string) *sip.RouteHeader {
	host, portStr, _ := net.SplitHostPort(holder)
	port, _ := strconv.Atoi(portStr)
	params := sip.NewParams()
	params.Add("transport", "tcp")
	params.Add("lr", "")
	params.Add(relayParam, s.relayMAC(req, alias))
	return &sip.RouteHeader{Address: sip.Uri{Scheme: "sip", Host: host, Port: port, UriParams: params}}
}

// flowRelay returns the flow a request is to be relayed to: one this
// replica holds, named by an alias on the Request-URI, in a request
// another replica sent here: within a dialog with no Route of ours left,
// out of one behind our Route carrying the request's signature, which it
// returns too. Signatures are checked by relayToFlow.
func (s *Server) flowRelay(req *sip.Request) (a flowAlias, relayMAC string, ok bool) {
	if !s.holdsFlows() || req.IsCancel() {
		return flowAlias{}, "", false
	}
	v, ok := req.Recipient.UriParams.Get(aliasParam)
	if !ok {
		return flowAlias{}, "", false
	}
	if a, ok = parseFlowAlias(v); !ok || a.holder == "" || !s.isHolder(a.holder) {
		return flowAlias{}, "", false
	}
	r := req.Route()
	ours := r != nil && s.self.isSelf(r.Address.Host, r.Address.Port)
	if req.To().Params.Has("tag") {
		// Behind our Route it is an in-dialog request like any other.
		return a, "", !ours
	}
	if !ours {
		return flowAlias{}, "", false
	}
	relayMAC, ok = r.Address.UriParams.Get(relayParam)
	return a, relayMAC, ok
}

// relayToFlow forwards a request another replica sent to the flow it
// named, which this replica holds. The sender authenticated, routed and
// anchored it already: what is left is the last hop, and for a request that
// starts a dialog the Record-Route that brings the phone's requests back
// over its own connection.
func (s *Server) relayToFlow(c *call, a flowAlias, relayMAC string) error {
	outOfDialog := !c.req.To().Params.Has("tag")
	if !s.verified(c.req.Recipient, callIDOf(c.req), a) || (outOfDialog && !hmac.Equal([]byte(relayMAC), []byte(s.relayMAC(c.req, a.raw)))) {
		s.m.dropped.WithLabelValues("bad_flow_signature").Inc()
		return fmt.Errorf("relay to %s %s: %w", a.transport, a.dest, errRelayDenied)
	}
	c.relayed = true
	base, _ := s.prepareForward(c)
	base.Recipient.UriParams.Remove(aliasParam)
	t := target{uri: base.Recipient, dest: a.dest, transport: a.transport}
	if c.req.IsAck() {
		return s.forwardStateless(c, base, t)
	}
	s.forward(c, base, []target{t}, outOfDialog)
	return nil
}
