package sipproxy

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"

	"callgrid.dev/services/proxy/internal/location"
)

// target is one destination a request can be forwarded to.
type target struct {
	// uri becomes the Request-URI of the branch.
	uri sip.Uri
	// dest is the "host:port" the branch is sent to.
	dest string
	// transport is "UDP", "TCP" or "TLS".
	transport string
	// gateway is set when the target is a gateway.
	gateway *gatewayState
	// holder, when set, is the replica holding the connection the
	// Request-URI's alias names: the branch goes to it, behind a signed
	// Route (relayRoute).
	holder string
	// mayTryTCP: the target is reached over UDP but takes TCP at the same
	// address too, as far as it says, so a request too large for UDP may
	// go over TCP (sendBranch).
	mayTryTCP bool
	// fork: the target is a registered contact, rung at once with the
	// others of its q-value (forkGroupLen).
	fork bool
	// q is the contact's q-value in thousandths, 1000 for one registered
	// without.
	q int
}

// routeNewRequest applies the policy to an out-of-dialog request and
// forwards it statefully with Record-Route.
func (s *Server) routeNewRequest(c *call) error {
	req := c.req
	src := sourceIP(req.Source())
	trusted := s.isTrusted(src)
	if !trusted && !s.self.isLocalDomain(req.Recipient.Host) {
		return errRelayDenied
	}
	if !trusted {
		out := s.auth.check(req, true)
		if !out.ok {
			s.challenge(c, true, out)
			return nil
		}
		if from := req.From(); !s.ownAOR(from.Address, out.user) {
			return fmt.Errorf("from %s authenticated as %q: %w", from.Address.Addr(), out.user, errIdentityMismatch)
		}
		c.log = c.logger().With().Str("user", out.user).Logger()
	}
	ctx, cancel := context.WithTimeout(context.Background(), defaultConnectTimeout)
	targets, rule, err := s.resolveTargets(ctx, req)
	cancel()
	if err != nil {
		return err
	}
	if rule != nil && rule.Service != "" {
		return s.answerWithService(c, rule.Service)
	}
	if err := checkProxyRequire(req); err != nil {
		return err
	}
	base, _ := s.prepareForward(c)
	// Credentials for us must not travel on (RFC 3261 22.3 lets a proxy
	// remove what it consumed).
	if !trusted {
		base.RemoveHeader("Proxy-Authorization")
	}
	if req.IsInvite() && s.mediaMode(rule) == MediaModeAnchor {
		s.sendTrying(c)
		if err := s.anchorInvite(c, base); err != nil {
			return err
		}
	}
	outcome := s.forward(c, base, targets, true)
	if !outcome.answered {
		s.endMedia(c, outcome.mediaCause())
	}
	return nil
}

// challenge answers 401/407 with our digest challenges. Credentials for
// another Request-URI get 400 instead (RFC 7616 3.4.6): a fresh challenge
// would not make them fit, unless another header was merely stale.
func (s *Server) challenge(c *call, proxy bool, out authOutcome) {
	if out.failure != "" {
		s.m.authFailures.WithLabelValues(out.failure).Inc()
		c.logger().Info().Str("reason", out.failure).Msg("authentication failed")
	}
	if out.uriMismatch && !out.stale {
		var hdrs []sip.Header
		if c.req.Method == sip.REGISTER {
			hdrs = append(hdrs, sip.NewHeader("P-Registrar-Error", regErrDigestURI))
		}
		s.reply(c, sip.StatusBadRequest, "Digest URI Mismatch", hdrs...)
		return
	}
	code, phrase := sip.StatusUnauthorized, "Unauthorized"
	if proxy {
		code, phrase = sip.StatusProxyAuthRequired, "Proxy Authentication Required"
	}
	s.reply(c, code, phrase, s.auth.challengeHeaders(proxy, out.stale)...)
}

// resolveTargets finds where an out-of-dialog request goes: the registered
// contacts of a local user (highest q-value first, newest first within
// one), else the first matching dialplan
// rule's gateway group or service, else nowhere. The rule is nil for a
// registered user; a service rule has no targets.
func (s *Server) resolveTargets(ctx context.Context, req *sip.Request) ([]target, *compiledRule, error) {
	uri := req.Recipient
	if s.self.isLocalDomain(uri.Host) && uri.User != "" {
		bindings, err := s.loc.Lookup(ctx, s.self.aor(uri))
		if err != nil {
			return nil, nil, fmt.Errorf("look up %s: %w", uri.User, err)
		}
		targets := make([]target, 0, len(bindings))
		for _, b := range bindings {
			t, err := s.bindingTarget(b, callIDOf(req))
			if err != nil {
				continue
			}
			t.fork, t.q = true, b.Q.Milli()
			targets = append(targets, t)
		}
		// Stable: Lookup's newest-first order stays within a q-value.
		slices.SortStableFunc(targets, func(a, b target) int { return b.q - a.q })
		if len(targets) > 0 {
			return targets, nil, nil
		}
	}
	rule, user, ok := s.dialplan.match(uri.User)
	if !ok {
		return nil, nil, fmt.Errorf("user %q: %w", uri.User, errNoRoute)
	}
	if rule.Service != "" {
		return nil, rule, nil
	}
	group := s.groups[rule.Group]
	callID := req.CallID().Value()
	gws := group.candidates(callID)
	if len(gws) == 0 {
		return nil, rule, fmt.Errorf("group %s: %w", group.name, errNoGateway)
	}
	targets := make([]target, 0, len(gws))
	for _, gw := range gws {
		targets = append(targets, gw.target(user))
	}
	return targets, rule, nil
}

// bindingTarget addresses a registered contact through the flow its
// REGISTER came on: behind NAT only the observed source reaches the phone.
// A connection another replica holds is reached through that replica: the
// Request-URI names the flow and its holder, signed, and the holder relays.
func (s *Server) bindingTarget(b location.Binding, callID string) (target, error) {
	t, err := bindingTarget(b.Contact, b.Received, b.Transport)
	if err != nil || b.Holder == "" || !s.holdsFlows() || s.isHolder(b.Holder) {
		return t, err
	}
	t.uri = *t.uri.Clone()
	if t.uri.UriParams == nil {
		t.uri.UriParams = sip.NewParams()
	}
	t.uri.UriParams.Add(aliasParam, s.heldAlias(t.uri, callID, t.dest, t.transport, b.Holder))
	t.dest, t.transport, t.holder = b.Holder, "TCP", b.Holder
	return t, nil
}

func bindingTarget(contact, received, transport string) (target, error) {
	var uri sip.Uri
	if err := sip.ParseUri(contact, &uri); err != nil {
		return target{}, fmt.Errorf("parse contact %q: %w", contact, err)
	}
	tp := strings.ToUpper(transport)
	if tp == "" {
		tp = strings.ToUpper(uri.UriParams.GetOr("transport", "UDP"))
	}
	dest := received
	if dest == "" {
		dest = contactAddr(uri, tp)
	}
	// A phone that registered over UDP is reached on that flow. Only if it
	// says it takes TCP, and its Contact is where it registered from (no
	// NAT, which would let no connection in), may a large request go over
	// TCP instead.
	mayTryTCP := tp == "UDP" && strings.EqualFold(uri.UriParams.GetOr("transport", ""), "tcp") && dest == contactAddr(uri, tp)
	return target{uri: uri, dest: dest, transport: tp, mayTryTCP: mayTryTCP}, nil
}

// contactAddr is the "host:port" a Contact URI names, its transport's
// default port when it names none.
func contactAddr(uri sip.Uri, transport string) string {
	port := uri.Port
	if port == 0 {
		port = sip.DefaultPort(transport)
	}
	return net.JoinHostPort(uri.Host, strconv.Itoa(port))
}

// prepareForward copies the incoming request into the base every branch is
// built from (RFC 3261 16.6 steps 1-3): our Routes already gone, Max-Forwards
// decremented, the sender's Via marked with received/rport, a NATed Contact
// aliased. It reports what our popped Route entries carried.
func (s *Server) prepareForward(c *call) (base *sip.Request, own ownRoute) {
	base = forwardCopy(c.req)
	own = s.popOwnRoutes(base)
	mf := uint32(defaultMaxForwardsAdded)
	if h := c.req.MaxForwards(); h != nil {
		mf = h.Val() - 1
	}
	setMaxForwards(base, mf)
	if via := base.Via(); via != nil {
		// The incoming request keeps its Via as received: the server
		// transaction answers with it.
		via = via.Clone()
		markReceived(via, c.req.Source())
		base.ReplaceHeader(via)
	}
	if createsDialog(c.req.Method) && !c.relayed {
		// A relayed request's Contact was aliased by the replica that
		// received it from the phone.
		s.addContactAlias(base, c.req.Source(), c.req.Transport())
	}
	return base, own
}

// routeInDialog forwards a request inside an established dialog along its
// route set. Only requests carrying our Route are relayed: anything else is
// not ours to carry (RFC 3261 16.4 with Kamailio's loose_route policy).
func (s *Server) routeInDialog(c *call) error {
	if svc, ok := s.serviceDialog(c.req); ok {
		return s.serviceInDialog(c, svc)
	}
	base, own := s.prepareForward(c)
	if !own.popped {
		if c.req.IsAck() {
			return nil
		}
		if c.req.IsCancel() {
			return errNoTransaction
		}
		return errNotOurRoute
	}
	if err := checkProxyRequire(c.req); err != nil {
		return err
	}
	routeTransport := own.transport
	if routeTransport == "" {
		routeTransport = "UDP"
	}
	dest, transport := s.nextHop(base, routeTransport)
	strictNextHop(base)
	t := target{uri: base.Recipient, dest: dest, transport: transport}
	if own.hasMedia && s.media != nil {
		if err := s.mediaInDialog(c, base, own.media); err != nil {
			return err
		}
	}
	if c.req.IsAck() {
		return s.forwardStateless(c, base, t)
	}
	s.rejectedOffer(c, s.forward(c, base, []target{t}, false))
	return nil
}
