package sipproxy

import (
	"fmt"
	"strings"

	"github.com/emiago/sipgo/sip"
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

// handleStrayResponse gets responses no client transaction matches: 2xx
// retransmissions after the transaction ended, or answers to a stateless
// ACK. If the top Via is ours it is relayed statelessly by the next Via.
func (s *Server) handleStrayResponse(res *sip.Response) {
	via := res.Via()
	if via == nil || !strings.HasPrefix(via.Params.GetOr("branch", ""), branchPrefix) || !s.self.isSelf(via.Host, via.Port) {
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

// hangUpLateAnswer ACKs and BYEs a 2xx that arrived after the caller was
// given a final answer (CANCEL race, Timer C), so the callee is not left in
// a call nobody is on; a re-INVITE's is only acknowledged.
func (s *Server) hangUpLateAnswer(c *call, inv *sip.Request, res *sip.Response) {
	contact := res.Contact()
	if contact == nil {
		c.logger().Warn().Msg("late 2xx without contact, cannot hang up callee")
		return
	}
	build := func(method sip.RequestMethod, seq uint32) *sip.Request {
		req := sip.NewRequest(method, *contact.Address.Clone())
		req.Recipient.UriParams.Remove(aliasParam)
		// The callee's side of the route set: Record-Route entries above ours.
		for _, h := range res.GetHeaders("Record-Route") {
			rr, ok := h.(*sip.RecordRouteHeader)
			if !ok || s.self.isSelf(rr.Address.Host, rr.Address.Port) {
				break
			}
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
		if alias, ok := contact.Address.UriParams.Get(aliasParam); ok && req.Route() == nil {
			if a, ok := parseFlowAlias(alias); ok {
				dest, transport = a.dest, a.transport
				if s.relaysVia(contact.Address, callIDOf(inv), a) {
					// The holder of the callee's connection relays.
					req.Recipient.UriParams.Add(aliasParam, alias)
					dest, transport = a.holder, "TCP"
				}
			}
		}
		req.PrependHeader(s.ourVia(transport, newBranch(s.loopOf(req))))
		s.address(req, target{dest: dest, transport: transport})
		return req
	}
	seq := inv.CSeq().SeqNo
	if err := s.tpl.WriteMsg(build(sip.ACK, seq)); err != nil {
		c.logger().Warn().Err(fmt.Errorf("ack late answer: %w", err)).Msg("hang up callee")
	}
	if inv.To().Params.Has("tag") {
		// A re-INVITE's: its CANCEL or Timer C ended that request only
		// (RFC 3261 9.1), not the dialog both phones are still in.
		c.logger().Info().Msg("acknowledged a re-INVITE's answer that arrived after the caller gave up")
		return
	}
	s.runDetached(*c.logger(), build(sip.BYE, seq+1))
	c.logger().Info().Msg("hung up answer that arrived after the caller gave up")
}
