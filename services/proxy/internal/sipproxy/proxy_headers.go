package sipproxy

import (
	"encoding/binary"
	"encoding/hex"
	"hash/fnv"
	"net"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// branchPrefix marks Via branches this proxy generated: the RFC 3261 magic
// cookie, our tag, then the loop-detection hash (RFC 3261 16.6 step 8).
const branchPrefix = sip.RFC3261BranchMagicCookie + "cg"

// loopHash is the loop-detection part of our branch. It covers what RFC 3261
// 16.6 step 8 lists except the top Via: a request that comes back to us has a
// different top Via, so including it would hide every real loop. A spiral
// (the Request-URI was retargeted, or the route set has taken the request
// further along: a dialog record-routed through us twice) hashes
// differently and is let through. Every field is followed by a zero byte,
// and the hash is FNV-1a 64.
func loopHash(req *sip.Request) string {
	h := newLoopHasher()
	req.Recipient.StringWrite(h)
	h.end()
	if f := req.From(); f != nil {
		h.field(f.Params.GetOr("tag", ""))
	}
	if t := req.To(); t != nil {
		h.field(t.Params.GetOr("tag", ""))
	}
	if c := req.CallID(); c != nil {
		h.field(c.Value())
	}
	if c := req.CSeq(); c != nil {
		var seq [20]byte
		h.write(strconv.AppendUint(seq[:0], uint64(c.SeqNo), 10))
		h.end()
	}
	// The Route entries as received: an in-dialog request keeps its
	// Request-URI, and only its Routes tell its second pass from a loop.
	for _, hd := range req.Headers() {
		if r, ok := hd.(*sip.RouteHeader); ok {
			r.Address.StringWrite(h)
			h.end()
		}
	}
	for _, name := range [...]string{"Proxy-Require", "Proxy-Authorization"} {
		for _, hd := range req.Headers() {
			if strings.EqualFold(hd.Name(), name) {
				h.field(hd.Value())
			}
		}
	}
	var sum [8]byte
	return hex.EncodeToString(binary.BigEndian.AppendUint64(sum[:0], uint64(*h)))
}

// loopHasher is FNV-1a 64 fed with strings, so hashing a request's
// fields copies none of them.
type loopHasher uint64

const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
)

func newLoopHasher() *loopHasher {
	h := loopHasher(fnvOffset64)
	return &h
}

// WriteString makes the hasher an io.StringWriter for Uri.StringWrite.
func (h *loopHasher) WriteString(s string) (int, error) {
	for i := 0; i < len(s); i++ {
		*h = (*h ^ loopHasher(s[i])) * fnvPrime64
	}
	return len(s), nil
}

func (h *loopHasher) write(b []byte) {
	for _, c := range b {
		*h = (*h ^ loopHasher(c)) * fnvPrime64
	}
}

// end closes a field.
func (h *loopHasher) end() { *h *= fnvPrime64 }

func (h *loopHasher) field(s string) {
	_, _ = h.WriteString(s)
	h.end()
}

// loopOf is the loop hash this replica marks its branches with. Replicas
// behind one service address put the same host and port in their Vias, so
// with ReplicaAddr set each salts the hash with it: a request passed from
// one replica to another (a relay to a held connection) is no loop, while
// one that comes back to the same replica still is.
func (s *Server) loopOf(req *sip.Request) string {
	loop := loopHash(req)
	if !s.holdsFlows() {
		return loop
	}
	h := newLoopHasher()
	h.field(loop)
	h.field(s.cfg.ReplicaAddr)
	var sum [8]byte
	return hex.EncodeToString(binary.BigEndian.AppendUint64(sum[:0], uint64(*h)))
}

// statelessBranch derives the branch for a statelessly forwarded request from
// the incoming one, so retransmissions get the same branch (RFC 3261 16.11).
func statelessBranch(req *sip.Request, loop string) string {
	h := fnv.New64a()
	if v := req.Via(); v != nil {
		h.Write([]byte(v.Params.GetOr("branch", "")))
	}
	h.Write([]byte(req.Method))
	return branchPrefix + loop + "." + hex.EncodeToString(h.Sum(nil))
}

// isLoop reports whether one of the request's Vias is ours with the same loop hash.
func (s *Server) isLoop(req *sip.Request, loop string) bool {
	for _, h := range req.GetHeaders("Via") {
		v, ok := h.(*sip.ViaHeader)
		if !ok {
			continue
		}
		branch := v.Params.GetOr("branch", "")
		if !strings.HasPrefix(branch, branchPrefix) || !s.self.isSelf(v.Host, v.Port) {
			continue
		}
		rest := strings.TrimPrefix(branch, branchPrefix)
		if i := strings.IndexByte(rest, '.'); i > 0 && rest[:i] == loop {
			return true
		}
	}
	return false
}

// ourVia builds the Via this proxy puts on a forwarded request.
func (s *Server) ourVia(transport, branch string) *sip.ViaHeader {
	return &sip.ViaHeader{
		ProtocolName:    "SIP",
		ProtocolVersion: "2.0",
		Transport:       transport,
		Host:            s.cfg.AdvertiseHost,
		Port:            s.port(transport),
		Params:          sip.HeaderParams{{K: "branch", V: branch}, {K: "rport", V: ""}},
	}
}

// port returns our listening port for a transport, falling back to UDP's.
func (s *Server) port(transport string) int {
	if p, ok := s.ports[lowerTransport(transport)]; ok {
		return p
	}
	for _, tp := range []string{"udp", "tcp", "tls"} {
		if p, ok := s.ports[tp]; ok {
			return p
		}
	}
	return sip.DefaultUdpPort
}

// lowerTransport is the lower-case transport name; the names in use come
// back as constants, so the lookups on every forwarded message allocate nothing.
func lowerTransport(transport string) string {
	switch transport {
	case "UDP", "udp":
		return "udp"
	case "TCP", "tcp":
		return "tcp"
	case "TLS", "tls":
		return "tls"
	}
	return strings.ToLower(transport)
}

// recordRoute builds our Record-Route entry for the side facing transport,
// with extra URI parameters (the call's media session) when given.
func (s *Server) recordRoute(transport string, extra sip.HeaderParams) *sip.RecordRouteHeader {
	params := make(sip.HeaderParams, 0, 2+len(extra))
	params = append(params, sip.HeaderKV{K: "transport", V: lowerTransport(transport)}, sip.HeaderKV{K: "lr", V: ""})
	params = append(params, extra...)
	return &sip.RecordRouteHeader{Address: sip.Uri{
		Scheme:    "sip",
		Host:      s.cfg.AdvertiseHost,
		Port:      s.port(transport),
		UriParams: params,
	}}
}

// addRecordRoute inserts our Record-Route; when the request changes transport
// it inserts two (RFC 5658 double record-routing), the upper one facing the
// next hop, so each side's route set reaches us over its own transport. Both
// carry the media parameters: either may be the one a request pops.
func (s *Server) addRecordRoute(req *sip.Request, inTransport, outTransport string, extra sip.HeaderParams) {
	req.PrependHeader(s.recordRoute(inTransport, extra))
	if !strings.EqualFold(inTransport, outTransport) {
		req.PrependHeader(s.recordRoute(outTransport, extra))
	}
}

// markReceived applies RFC 3261 18.2.1 and RFC 3581 to the sender's Via of
// a request about to be forwarded. rport is always filled (Kamailio's
// force_rport) because phones behind NAT often forget to ask for it. A
// received the sender wrote itself is replaced even when its sent-by is
// right: only we know where the request came from, and a stateless relay
// of a response goes where the Via says.
func markReceived(via *sip.ViaHeader, source string) {
	host, port, err := net.SplitHostPort(source)
	if err != nil {
		return
	}
	if via.Host != host || via.Params.Has("received") {
		via.Params.Add("received", host)
	}
	via.Params.Add("rport", port)
}

// ownRoute is what our leading Route entries of a request said.
type ownRoute struct {
	popped bool
	// transport is the last entry's: the side facing the next hop.
	transport string
	// media is the dialog's media session, when it is anchored.
	media    mediaSession
	hasMedia bool
}

// take records what one of our entries, popped, carried.
func (own *ownRoute) take(params sip.HeaderParams) {
	own.transport = params.GetOr("transport", own.transport)
	if m, ok := mediaSessionFrom(params); ok {
		own.media, own.hasMedia = m, true
	}
	own.popped = true
}

// popOwnRoutes removes our leading Route entries (RFC 3261 16.4) and
// returns what they carried. An in-dialog request whose Request-URI is our
// Record-Route entry comes from a strict router (RFC 2543), which moved the
// remote target to the end of the Route list: 16.4 puts it back into the
// Request-URI first, and the entry counts as one of ours popped.
func (s *Server) popOwnRoutes(req *sip.Request) ownRoute {
	var own ownRoute
	if last, ok := s.strictRoutedHere(req); ok {
		own.take(req.Recipient.UriParams)
		routes := req.GetHeaders("Route")
		req.Recipient = *last.Address.Clone()
		setRoutes(req, routes[:len(routes)-1])
	}
	for {
		r := req.Route()
		if r == nil || !s.self.isSelf(r.Address.Host, r.Address.Port) {
			return own
		}
		own.take(r.Address.UriParams)
		req.RemoveHeader("Route")
	}
}

// strictRoutedHere reports an in-dialog request whose Request-URI is an
// entry we record-route with (ours, no user part, lr) and returns its last
// Route entry, the remote target a strict router put there.
func (s *Server) strictRoutedHere(req *sip.Request) (*sip.RouteHeader, bool) {
	u := req.Recipient
	if u.User != "" || !hasParamFold(u.UriParams, "lr") || !s.self.isSelf(u.Host, u.Port) {
		return nil, false
	}
	if to := req.To(); to == nil || !to.Params.Has("tag") {
		return nil, false
	}
	routes := req.GetHeaders("Route")
	if len(routes) == 0 {
		return nil, false
	}
	last, ok := routes[len(routes)-1].(*sip.RouteHeader)
	return last, ok
}

// strictNextHop readies a request whose next hop is a strict router, its
// Route entry without lr (RFC 3261 16.6 step 6): that entry becomes the
// Request-URI and the Request-URI the last Route entry, which is how a
// strict router expects to find both. The destination stays the router's.
func strictNextHop(req *sip.Request) {
	r := req.Route()
	if r == nil || hasParamFold(r.Address.UriParams, "lr") {
		return
	}
	routes := req.GetHeaders("Route")
	remote := &sip.RouteHeader{Address: *req.Recipient.Clone()}
	req.Recipient = *r.Address.Clone()
	setRoutes(req, append(routes[1:], remote))
}

// setRoutes replaces the request's Route entries with routes, in order.
// They go to the top of the message, where proxies look for them first;
// the headers themselves may be shared with another message and are not
// edited.
func setRoutes(req *sip.Request, routes []sip.Header) {
	for req.RemoveHeader("Route") {
	}
	if len(routes) == 0 {
		return
	}
	req.PrependHeader(routes...)
	// sipgo's PrependHeader leaves Route() naming the last entry it added;
	// replacing the first entry by itself points it back at the top.
	req.ReplaceHeader(routes[0])
}

// hasParamFold reports a URI parameter by name in any case (RFC 3261 19.1.4).
func hasParamFold(params sip.HeaderParams, name string) bool {
	for _, kv := range params {
		if strings.EqualFold(kv.K, name) {
			return true
		}
	}
	return false
}

// relaysVia reports whether a request to uri in the call callID goes to the
// holder its alias a names: another replica, with a signature that holds.
func (s *Server) relaysVia(uri sip.Uri, callID string, a flowAlias) bool {
	return s.holdsFlows() && a.holder != "" && !s.isHolder(a.holder) && s.verified(uri, callID, a)
}

// nextHop is the package's nextHop, except that a request whose flow
// another replica holds goes to that replica, alias and all.
func (s *Server) nextHop(req *sip.Request, fallbackTransport string) (dest, transport string) {
	if req.Route() == nil {
		if v, ok := req.Recipient.UriParams.Get(aliasParam); ok {
			if a, ok := parseFlowAlias(v); ok && s.relaysVia(req.Recipient, callIDOf(req), a) {
				return a.holder, "TCP"
			}
		}
	}
	return nextHop(req, fallbackTransport)
}

// nextHop returns the destination "host:port" and transport of a request
// from its top Route or, without one, its Request-URI. A NAT alias on the
// Request-URI (set by addContactAlias) wins and is removed.
func nextHop(req *sip.Request, fallbackTransport string) (dest, transport string) {
	uri := &req.Recipient
	if r := req.Route(); r != nil {
		uri = &r.Address
	} else if alias, ok := req.Recipient.UriParams.Get(aliasParam); ok {
		if d, tp, ok := parseAlias(alias); ok {
			req.Recipient.UriParams.Remove(aliasParam)
			return d, tp
		}
	}
	transport = strings.ToUpper(uri.UriParams.GetOr("transport", fallbackTransport))
	if transport == "" {
		transport = "UDP"
	}
	if uri.IsEncrypted() && transport == "TCP" {
		transport = "TLS"
	}
	port := uri.Port
	if port == 0 {
		port = sip.DefaultPort(transport)
	}
	return net.JoinHostPort(strings.Trim(uri.Host, "[]"), strconv.Itoa(port)), transport
}

// setMaxForwards replaces Max-Forwards; a forwarded copy shares that header
// with the original, so it is never changed in place.
func setMaxForwards(req *sip.Request, v uint32) {
	mf := sip.MaxForwardsHeader(v)
	if req.MaxForwards() == nil {
		req.AppendHeader(&mf)
		return
	}
	req.ReplaceHeader(&mf)
}

// forwardCopy returns a copy of req to forward that shares req's header
// values. Forwarding adds, removes and replaces whole headers but never
// edits a shared one in place (what it must edit, the sender's Via, is
// cloned first), so sipgo's deep Clone, which copies every header and every
// parameter list, would allocate for nothing on every message. The
// Request-URI's parameters are copied: nextHop edits them.
func forwardCopy(req *sip.Request) *sip.Request {
	out := sip.NewRequest(req.Method, req.Recipient)
	out.SipVersion = req.SipVersion
	for _, h := range req.Headers() {
		out.AppendHeader(h)
	}
	out.SetBody(req.Body())
	out.SetTransport(req.Transport())
	out.SetSource(req.Source())
	// Only a destination set explicitly: Request.Destination would format
	// one from the Route or Request-URI, and address sets the branch's own.
	out.SetDestination(req.MessageData.Destination())
	out.Laddr = req.Laddr
	return out
}

// withoutTopVia returns a response carrying res's status, headers and body
// without its first Via (ours: RFC 3261 16.7 step 3). Header values are
// shared with res, as in forwardCopy; the caller sets where it goes. Of
// several Content-Length values only the first goes on, and SetBody makes
// it the body's: a second one would frame the stream differently at a
// previous hop that reads it, which a response cannot be refused for.
func withoutTopVia(res *sip.Response) *sip.Response {
	up := sip.NewResponse(res.StatusCode, res.Reason)
	up.SipVersion = res.SipVersion
	skipped, length := false, false
	for _, h := range res.Headers() {
		if !skipped && h.Name() == "Via" {
			skipped = true
			continue
		}
		if isContentLength(h) {
			if length {
				continue
			}
			length = true
		}
		up.AppendHeader(h)
	}
	up.SetBody(res.Body())
	return up
}

// upstreamResponse turns a response received on a branch into the one sent
// to the previous hop: our Via removed and the destination taken from the
// next Via's received/rport.
func (s *Server) upstreamResponse(req *sip.Request, res *sip.Response) *sip.Response {
	up := withoutTopVia(res)
	up.SetTransport(req.Transport())
	if !sip.IsReliable(req.Transport()) {
		up.SetDestination(req.Source())
	}
	if res.StatusCode > 100 && res.StatusCode < 300 && createsDialog(req.Method) {
		s.addContactAlias(up, res.Source(), res.Transport())
	}
	return up
}

// createsDialog reports methods whose Contact becomes a dialog's remote target.
func createsDialog(m sip.RequestMethod) bool {
	switch m {
	case sip.INVITE, sip.SUBSCRIBE, sip.REFER, sip.NOTIFY, sip.UPDATE:
		return true
	}
	return false
}

// removeHeaderFold removes every header named name from res, whatever the
// case the sender wrote it in (RFC 3261 7.3.1): sipgo keeps the name of a
// header it does not know as it came, and removes by exact name, one at a
// time.
func removeHeaderFold(res *sip.Response, name string) {
	var names []string
	for _, h := range res.Headers() {
		if strings.EqualFold(h.Name(), name) {
			names = append(names, h.Name())
		}
	}
	for _, n := range names {
		res.RemoveHeader(n)
	}
}
