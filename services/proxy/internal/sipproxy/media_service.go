package sipproxy

import (
	"strings"

	"github.com/emiago/sipgo/sip"

	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// A call to a built-in media service (echo, tone) is answered by the proxy
// itself as a UAS, with the node's SDP. Our Contact carries the node and
// session, so the caller's ACK, BYE and re-INVITE come back to any replica
// with everything needed to serve them statelessly.

// serviceOf maps a dialplan service name onto the node's service.
func serviceOf(name string) callgridv1.MediaService {
	switch name {
	case ServiceEcho:
		return callgridv1.MediaService_MEDIA_SERVICE_ECHO
	case ServiceTone:
		return callgridv1.MediaService_MEDIA_SERVICE_TONE
	}
	return callgridv1.MediaService_MEDIA_SERVICE_UNSPECIFIED
}

// answerWithService answers a new INVITE with a node's built-in service.
func (s *Server) answerWithService(c *call, service string) error {
	if !c.req.IsInvite() {
		return errNotAllowed
	}
	if s.media == nil {
		return errMediaDisabled
	}
	if hasForeignBody(c.req) {
		return errForeignBody
	}
	sdp := sdpBody(c.req)
	if sdp == nil {
		// The node answers offers; it cannot make one.
		return errNoOffer
	}
	s.sendTrying(c)
	sess := mediaSession{session: sessionIDFor(c.req), callerTag: tagHash(fromTag(c.req)), service: service}
	aliased := c.req.Clone()
	s.addContactAlias(aliased, c.req.Source(), c.req.Transport())
	d := callerDialog(c.req, aliased)
	// We are the callee: the dialog has no callee contact to hang up.
	d.CalleeTag = serviceTag(sess.session)
	reply, err := s.claim(&callgridv1.OfferRequest{
		CallId: d.GetCallId(), Sdp: sdp, Service: serviceOf(service), Dialog: d, SessionId: sess.session,
	})
	if err != nil {
		return err
	}
	sess.node = reply.GetNodeId()
	c.log = c.logger().With().Str("node_id", sess.node).Str("session_id", sess.session).Str("service", service).Logger()
	res := s.serviceResponse(c, sess, reply.GetSdp())
	res.To().Params.Add("tag", d.CalleeTag)
	s.respond(c, res)
	c.logger().Debug().Msg("answered with media service")
	s.publishCallStarted(sess, d)
	s.publishCallAnswered(sess, d.GetCallId(), false)
	return nil
}

// serviceTag is the To tag of a service dialog. Derived from the session so
// that the answer to a retransmitted INVITE carries the same tag.
func serviceTag(sessionID string) string {
	return "cg" + sessionID[:min(16, len(sessionID))]
}

// serviceResponse is a 200 from the service side of a dialog.
func (s *Server) serviceResponse(c *call, sess mediaSession, sdp []byte) *sip.Response {
	res := sip.NewResponseFromRequest(c.req, sip.StatusOK, "OK", nil)
	res.SipVersion = "SIP/2.0"
	res.AppendHeader(&sip.ContactHeader{Address: s.serviceContact(c.req.Transport(), sess)})
	res.AppendHeader(sip.NewHeader("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE"))
	res.AppendHeader(sip.NewHeader("Server", s.cfg.UserAgent))
	if sdp != nil {
		setSDPBody(res, sdp)
	}
	if !sip.IsReliable(c.req.Transport()) {
		res.SetDestination(c.req.Source())
	}
	return res
}

// serviceContact is our Contact in a service dialog.
func (s *Server) serviceContact(transport string, sess mediaSession) sip.Uri {
	params := sip.HeaderParams{{K: "transport", V: strings.ToLower(transport)}}
	params = append(params, sess.params()...)
	return sip.Uri{Scheme: "sip", User: sess.service, Host: s.cfg.AdvertiseHost, Port: s.port(transport), UriParams: params}
}

// serviceDialog reports an in-dialog request addressed to our service
// Contact.
func (s *Server) serviceDialog(req *sip.Request) (mediaSession, bool) {
	uri := req.Recipient
	if !uri.UriParams.Has(paramService) || !s.self.isSelf(uri.Host, uri.Port) {
		return mediaSession{}, false
	}
	sess, ok := mediaSessionFrom(uri.UriParams)
	if !ok || sess.node == "" || sess.service == "" {
		return mediaSession{}, false
	}
	return sess, true
}

// serviceInDialog serves the caller's requests in a service dialog.
func (s *Server) serviceInDialog(c *call, sess mediaSession) error {
	if s.media == nil {
		return errMediaDisabled
	}
	c.log = c.logger().With().Str("node_id", sess.node).Str("session_id", sess.session).Str("service", sess.service).Logger()
	switch c.req.Method {
	case sip.ACK:
		return nil
	case sip.BYE:
		if err := s.release(sess, "bye"); err != nil {
			c.logger().Warn().Err(err).Msg("release media service session")
		}
		s.reply(c, sip.StatusOK, "OK")
		return nil
	case sip.INVITE, sip.UPDATE:
		if hasForeignBody(c.req) {
			return errForeignBody
		}
		sdp := sdpBody(c.req)
		if sdp == nil {
			return errNoOffer
		}
		out, err := s.update(sess, callgridv1.Leg_LEG_A, sdp, false)
		if err != nil {
			return err
		}
		s.respond(c, s.serviceResponse(c, sess, out))
		return nil
	case sip.OPTIONS, sip.INFO:
		s.reply(c, sip.StatusOK, "OK")
		return nil
	case sip.CANCEL:
		return errNoTransaction
	}
	return errNotAllowed
}
