package sipproxy

import (
	"fmt"
	"strings"

	"github.com/emiago/sipgo/sip"
	"github.com/rs/zerolog"
)

// forwardStateless relays an ACK for a 2xx along the route set. It has no
// transaction: the branch is derived from the incoming one so that every
// retransmission is forwarded identically (RFC 3261 16.11).
func (s *Server) forwardStateless(c *call, base *sip.Request, t target) error {
	out := base
	out.Recipient = t.uri
	out.PrependHeader(s.ourVia(t.transport, statelessBranch(c.req, c.loop)))
	s.address(out, t)
	if err := s.tpl.WriteMsg(out); err != nil {
		s.m.dropped.WithLabelValues("stateless_send_failed").Inc()
		c.logger().Debug().Err(err).Str("dest", t.dest).Msg("forward ack")
	}
	return nil
}

// handleStrayResponse gets responses no client transaction matches. Such a
// response is not forwarded (RFC 6026 8.9): a final one from a branch the
// proxy abandoned would end a call another branch still rings, and anyone
// can write a response with our address in its top Via. Only a 2xx to an
// INVITE is relayed, statelessly by the next Via: the callee repeats it
// past the transaction linger until it is ACKed, and the caller needs it to
// send the ACK again. Its branch must carry our signature, so nobody can
// have the proxy deliver what they wrote to whoever they name.
func (s *Server) handleStrayResponse(res *sip.Response) {
	via := res.Via()
	if via == nil || !res.IsSuccess() || res.CSeq() == nil || res.CSeq().MethodName != sip.INVITE ||
		!s.self.isSelf(via.Host, via.Port) || !s.signedBranch(via.Params.GetOr("branch", ""), callIDOf(res)) {
		s.m.dropped.WithLabelValues("stray_response").Inc()
		return
	}
	if b, first, ok := s.abandoned.answered(via.Params.GetOr("branch", "")); ok {
		// The proxy gave this branch up: the caller has moved on to
		// another or has its final response.
		if first {
			s.hangUpLateAnswer(&b.log, b.inv, res)
			return
		}
		s.m.dropped.WithLabelValues("stray_response").Inc()
		return
	}
	up := withoutTopVia(res)
	if up.Via() == nil {
		s.m.dropped.WithLabelValues("stray_response").Inc()
		return
	}
	if !s.anchorStray2xx(via, up) {
		s.m.dropped.WithLabelValues("stray_response").Inc()
		return
	}
	up.SetTransport(strings.ToUpper(up.Via().Transport))
	if err := s.tpl.WriteMsg(up); err != nil {
		s.m.dropped.WithLabelValues("stray_response").Inc()
		s.log.Debug().Err(err).Int("status", res.StatusCode).Msg("relay stray response")
	}
}

// hangUpLateAnswer ACKs and BYEs a 2xx the caller is not to get (it
// cancelled, the branch was abandoned, or the call cannot be carried), so
// the callee is not left in a call nobody is on; a re-INVITE's is only
// acknowledged. log carries the call's fields.
func (s *Server) hangUpLateAnswer(log *zerolog.Logger, inv *sip.Request, res *sip.Response) {
	contact := res.Contact()
	if contact == nil {
		log.Warn().Msg("late 2xx without contact, cannot hang up callee")
		return
	}
	// The callee's Contact as the caller would have got it: behind a NAT
	// it names an address nobody reaches, and the alias of the flow the
	// answer came over is what leads back to the callee.
	remote, _ := s.aliased(contact.Address, callIDOf(inv), res.Source(), res.Transport())
	routeSet := s.calleeRouteSet(res)
	build := func(method sip.RequestMethod, seq uint32) *sip.Request {
		req := sip.NewRequest(method, *remote.Clone())
		req.Recipient.UriParams.Remove(aliasParam)
		for _, rr := range routeSet {
			req.AppendHeader(&sip.RouteHeader{Address: *rr.Address.Clone()})
		}
		mf := sip.MaxForwardsHeader(defaultMaxForwardsAdded)
		req.AppendHeader(&mf)
		req.AppendHeader(sip.HeaderClone(inv.From()))
		req.AppendHeader(sip.HeaderClone(res.To()))
		req.AppendHeader(sip.HeaderClone(inv.CallID()))
		req.AppendHeader(&sip.CSeqHeader{SeqNo: seq, MethodName: method})
		req.SetBody(nil)
		dest, transport := nextHop(req, inv.Transport())
		if alias, ok := remote.UriParams.Get(aliasParam); ok && req.Route() == nil {
			if a, ok := parseFlowAlias(alias); ok {
				dest, transport = a.dest, a.transport
				if s.relaysVia(remote, callIDOf(inv), a) {
					// The holder of the callee's connection relays.
					req.Recipient.UriParams.Add(aliasParam, alias)
					dest, transport = a.holder, "TCP"
				}
			}
		}
		req.PrependHeader(s.ourVia(transport, s.newBranch(s.loopOf(req), callIDOf(req))))
		s.address(req, target{dest: dest, transport: transport})
		return req
	}
	seq := inv.CSeq().SeqNo
	if err := s.tpl.WriteMsg(build(sip.ACK, seq)); err != nil {
		log.Warn().Err(fmt.Errorf("ack late answer: %w", err)).Msg("hang up callee")
	}
	if inv.To().Params.Has("tag") {
		// A re-INVITE's: its CANCEL or abandonment ended that request only
		// (RFC 3261 9.1), not the dialog both phones are still in.
		log.Info().Msg("acknowledged a re-INVITE's answer the caller is not to get")
		return
	}
	s.runDetached(*log, build(sip.BYE, seq+1))
	log.Info().Msg("hung up an answer the caller is not to get")
}
