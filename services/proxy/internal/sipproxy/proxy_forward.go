package sipproxy

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/rs/zerolog"
)

// branchResult is how one branch of a forwarded request ended.
type branchResult struct {
	// res is the upstream-ready final non-2xx response, if the branch got one.
	res *sip.Response
	// err is set when the branch ended without a response (timeout, transport).
	err error
	// answered means a 2xx went upstream: the request is done.
	answered bool
	// cancelled means the caller CANCELled: sipgo already sent 487 upstream.
	cancelled bool
	// stop forbids trying further targets (Timer C fired: the callee rang).
	stop bool
	// silent means the next hop sent nothing back at all, not even a 100.
	silent bool
}

// forwardOutcome is how a forwarded request ended upstream.
type forwardOutcome struct {
	answered  bool
	cancelled bool
	// code is the final status sent upstream when neither.
	code int
}

// mediaCause is the cause a media session of an unanswered call ends with.
func (o forwardOutcome) mediaCause() string {
	if o.cancelled {
		return "cancel"
	}
	return strconv.Itoa(o.code)
}

// forward relays a request statefully to targets in turn (serial failover)
// and sends the best final response upstream (RFC 3261 16.6-16.7).
func (s *Server) forward(c *call, base *sip.Request, targets []target, recordRoute bool) forwardOutcome {
	cancelled := make(chan struct{})
	if c.req.IsInvite() {
		s.sendTrying(c)
		var once sync.Once
		// sipgo answers the CANCEL (200, then 487 on the INVITE) and calls this
		// under its transaction lock, so it only signals the branch loop.
		if !c.tx.OnCancel(func(*sip.Request) { once.Do(func() { close(cancelled) }) }) {
			return forwardOutcome{cancelled: true}
		}
	}
	var (
		finals      []branchResult
		earlyDialog bool
	)
	for _, t := range targets {
		select {
		case <-cancelled:
			return forwardOutcome{cancelled: true}
		default:
		}
		var gatewayGen uint64
		if t.gateway != nil {
			gatewayGen = t.gateway.gen.Load()
		}
		r := s.runBranch(c, base, t, recordRoute, cancelled, &earlyDialog)
		if t.gateway != nil {
			s.judgeGateway(c, t.gateway, gatewayGen, r)
		}
		if r.answered || r.cancelled {
			return forwardOutcome{answered: r.answered, cancelled: r.cancelled}
		}
		if r.err != nil {
			c.logger().Debug().Err(r.err).Str("dest", t.dest).Msg("branch failed")
		}
		finals = append(finals, r)
		if r.stop || earlyDialog || !failoverAllowed(r) {
			break
		}
	}
	best := bestResponse(finals)
	switch {
	case best.res != nil:
		res := best.res
		if res.StatusCode == sip.StatusServiceUnavailable {
			// A 503 would make the caller think this proxy is overloaded
			// (RFC 3261 16.7 step 6): the failure belongs to the branch.
			res.StatusCode, res.Reason = sip.StatusInternalServerError, "Server Internal Error"
		}
		s.respond(c, res)
		return forwardOutcome{code: res.StatusCode}
	case best.err != nil:
		err := best.err
		if errors.Is(err, sip.ErrTransactionTransport) {
			// A branch the transport failed counts as a 503 (RFC 3261
			// 16.9), which is not forwarded as one either: our own 503
			// would tell the caller that this proxy is out of service.
			err = fmt.Errorf("%w: %w", errNextHopUnreachable, err)
		}
		s.fail(c, err)
		return forwardOutcome{code: s.classify(err).code}
	default:
		s.fail(c, errNoRoute)
		return forwardOutcome{code: s.classify(errNoRoute).code}
	}
}

// sendTrying answers 100 once per INVITE transaction: before a media claim,
// so the caller stops retransmitting while the fleet is asked.
func (s *Server) sendTrying(c *call) {
	if !c.tryingSent {
		c.tryingSent = true
		s.respond(c, s.tryingResponse(c.req))
	}
}

// tryingResponse is the 100 for an INVITE (RFC 3261 8.2.6.1), sent on every
// call. sipgo's NewResponseFromRequest clones each header it copies; the
// 100 shares From, To, Call-ID, CSeq and Timestamp with the request, which
// nothing edits, and clones only the top Via, which gets received/rport.
func (s *Server) tryingResponse(req *sip.Request) *sip.Response {
	res := sip.NewResponse(sip.StatusTrying, "Trying")
	res.SipVersion = "SIP/2.0"
	first := true
	for _, h := range req.Headers() {
		switch h.Name() {
		case "Via":
			if v, ok := h.(*sip.ViaHeader); ok && first {
				first = false
				top := v.Clone()
				if rport, ok := top.Params.Get("rport"); ok && rport == "" {
					host, port, _ := net.SplitHostPort(req.Source())
					top.Params.Add("rport", port)
					top.Params.Add("received", host)
				}
				res.AppendHeader(top)
				continue
			}
			res.AppendHeader(h)
		case "From", "To", "Call-ID", "CSeq":
			res.AppendHeader(h)
		default:
			if strings.EqualFold(h.Name(), "Timestamp") {
				res.AppendHeader(h)
			}
		}
	}
	res.SetBody(nil)
	res.AppendHeader(sip.NewHeader("Server", s.cfg.UserAgent))
	res.SetTransport(req.Transport())
	// Where the request came from (RFC 3581), as reply answers.
	res.SetDestination(req.Source())
	return res
}

// failoverAllowed reports whether a failed branch lets the next target be tried:
// no response, 408, or any 5xx.
func failoverAllowed(r branchResult) bool {
	if r.res == nil {
		return true
	}
	code := r.res.StatusCode
	return code == sip.StatusRequestTimeout || (code >= 500 && code < 600)
}

// bestResponse picks the final response to send upstream (RFC 3261 16.7 step
// 6): any 6xx, else the lowest class. A branch that timed out counts as a
// 408 and one the transport failed as a 503 (16.9). Within a class the
// first received wins, except that what says something about the callee
// beats what only says a branch failed: a 408 is the branch's timeout, not
// the callee's answer, so a later 486 or 404 is the one the caller needs;
// a 503 speaks of its own hop and is forwarded only when nothing else came;
// and the 4xx that tell the caller how to resubmit come first.
func bestResponse(finals []branchResult) branchResult {
	var best branchResult
	bestRank := math.MaxInt
	for _, r := range finals {
		if rk := responseRank(branchCode(r)); rk < bestRank {
			best, bestRank = r, rk
		}
	}
	return best
}

// branchCode is the status a branch ended with, as 16.7 and 16.9 count it.
func branchCode(r branchResult) int {
	switch {
	case r.res != nil:
		return r.res.StatusCode
	case errors.Is(r.err, errBranchTimeout), errors.Is(r.err, sip.ErrTransactionTimeout), errors.Is(r.err, errInviteTimeout):
		return sip.StatusRequestTimeout
	}
	return sip.StatusServiceUnavailable
}

// responseRank orders final responses for bestResponse: lower is better.
func responseRank(code int) int {
	class := code / 100
	if class >= 6 {
		return 0
	}
	sub := 1
	switch code {
	case sip.StatusUnauthorized, sip.StatusProxyAuthRequired, sip.StatusUnsupportedMediaType, sip.StatusBadExtension, sip.StatusAddressIncomplete:
		sub = 0
	case sip.StatusRequestTimeout, sip.StatusServiceUnavailable:
		sub = 2
	}
	return class*10 + sub
}

// runBranch sends one branch and relays its responses until it ends.
func (s *Server) runBranch(c *call, base *sip.Request, t target, recordRoute bool, cancelled <-chan struct{}, earlyDialog *bool) branchResult {
	// Each branch gets its own copy: base stays as it was for the next
	// target, and the client transaction keeps out until it ends.
	out := forwardCopy(base)
	out.Recipient = t.uri
	if t.holder != "" {
		alias, _ := t.uri.UriParams.Get(aliasParam)
		out.PrependHeader(s.relayRoute(out, t.holder, alias))
	}
	via := s.ourVia(t.transport, s.newBranch(c.loop, callIDOf(c.req)))
	if out.IsInvite() {
		c.media.markVia(via)
	}
	out.PrependHeader(via)
	if recordRoute {
		s.addRecordRoute(out, c.req.Transport(), t.transport, c.recordRouteParams())
	}
	s.address(out, t)

	tx, err := s.sendBranch(c, out, t)
	if err != nil {
		return branchResult{err: fmt.Errorf("send to %s: %w", t.dest, errors.Join(sip.ErrTransactionTransport, err)), silent: true}
	}
	isInvite := out.IsInvite()
	if isInvite {
		// After the first 2xx sipgo hands retransmitted 2xx only to this hook;
		// they must reach the caller until it ACKs (RFC 6026).
		tx.OnRetransmission(func(r *sip.Response) {
			if r.IsSuccess() {
				up := s.upstreamResponse(c.req, r)
				if c.media.rewriteRetransmitted2xx(s, up) {
					_ = c.tx.Respond(up)
				}
			}
		})
	}

	noAnswer := time.NewTimer(s.cfg.BranchTimeout)
	defer noAnswer.Stop()
	var timerC <-chan time.Time
	var timerCTimer *time.Timer
	if isInvite {
		timerCTimer = time.NewTimer(s.cfg.InviteTimeout)
		defer timerCTimer.Stop()
		timerC = timerCTimer.C
	}
	var (
		giveUp      <-chan time.Time
		provisional bool
		cancelSent  bool
		callerGone  bool
		timerCFired bool
	)
	sendCancel := func() {
		if !cancelSent {
			cancelSent = true
			s.cancelBranch(c, out)
		}
	}
	// abandon ends a branch the proxy gives up on. An INVITE's callee may
	// answer it yet; that answer finds no transaction and is hung up.
	abandon := func() {
		if isInvite {
			s.abandoned.remember(c.logger(), out)
		}
		tx.Terminate()
	}
	for {
		select {
		case res := <-tx.Responses():
			noAnswer.Stop()
			switch {
			case res.IsProvisional():
				provisional = true
				if callerGone || timerCFired {
					sendCancel()
					continue
				}
				if res.StatusCode == sip.StatusTrying {
					continue
				}
				if timerCTimer != nil {
					timerCTimer.Reset(s.cfg.InviteTimeout)
				}
				if res.To() != nil && res.To().Params.Has("tag") {
					*earlyDialog = true
				}
				up := s.upstreamResponse(c.req, res)
				s.mediaProvisional(c, res, up)
				s.respond(c, up)
			case res.IsSuccess():
				if callerGone {
					// The caller already has its final answer; this answer
					// would leave the callee in a call nobody is on.
					s.hangUpLateAnswer(c.logger(), out, res)
					return branchResult{cancelled: true, err: errInviteTimeout, stop: true}
				}
				// After Timer C the caller still waits: its CANCEL lost the
				// race, and the answer goes upstream like any other
				// (RFC 3261 16.7 step 5, 16.8).
				up := s.upstreamResponse(c.req, res)
				if err := s.mediaAnswered(c, res, up); err != nil {
					// The callee answered but the call cannot be carried:
					// it is hung up, and the caller gets the error.
					s.hangUpLateAnswer(c.logger(), out, res)
					return branchResult{err: err, stop: true}
				}
				s.respond(c, up)
				return branchResult{answered: true}
			default:
				if callerGone {
					return branchResult{cancelled: true}
				}
				if timerCFired {
					return branchResult{err: fmt.Errorf("branch to %s: %w", t.dest, errInviteTimeout), stop: true}
				}
				return branchResult{res: s.upstreamResponse(c.req, res)}
			}
		case <-tx.Done():
			if callerGone {
				return branchResult{cancelled: true}
			}
			err := tx.Err()
			if err == nil {
				err = sip.ErrTransactionTerminated
			}
			return branchResult{err: fmt.Errorf("branch to %s: %w", t.dest, err), stop: timerCFired, silent: !provisional}
		case <-noAnswer.C:
			abandon()
			if callerGone {
				return branchResult{cancelled: true}
			}
			return branchResult{err: fmt.Errorf("branch to %s: %w", t.dest, errBranchTimeout), silent: true}
		case <-timerC:
			timerC = nil
			timerCFired = true
			c.logger().Info().Str("dest", t.dest).Msg("timer c expired, cancelling branch")
			if !provisional {
				// Nothing came back, not even a 100: as good as a 408
				// (RFC 3261 16.8), after which the next target is tried.
				// Nobody rang, so nothing stops the failover.
				abandon()
				return branchResult{err: fmt.Errorf("branch to %s: %w", t.dest, errInviteTimeout), silent: true}
			}
			sendCancel()
			giveUp = time.After(s.cfg.CancelWait)
		case <-cancelled:
			cancelled = nil
			callerGone = true
			// A CANCEL may only follow a provisional response (RFC 3261 9.1);
			// without one the branch is abandoned when it answers or times out.
			if provisional {
				sendCancel()
			}
			giveUp = time.After(s.cfg.CancelWait)
		case <-giveUp:
			abandon()
			if callerGone {
				return branchResult{cancelled: true}
			}
			return branchResult{err: fmt.Errorf("branch to %s: %w", t.dest, errInviteTimeout), stop: true}
		}
	}
}

// sendContext bounds what sending a branch may wait for: a connection to
// set up or a name to resolve. A UDP branch to an IP address waits for
// neither, and skips the timer a deadline costs on every forwarded request.
func sendContext(t target) (context.Context, context.CancelFunc) {
	if t.transport == "UDP" {
		if _, err := netip.ParseAddrPort(t.dest); err == nil {
			return context.Background(), func() {}
		}
	}
	return context.WithTimeout(context.Background(), defaultConnectTimeout)
}

// address points a request at its target over the right socket.
func (s *Server) address(out *sip.Request, t target) {
	out.SetTransport(t.transport)
	out.SetDestination(t.dest)
	out.Laddr = sip.Addr{}
	if t.transport == "UDP" && s.udpConn != nil {
		s.udpLaddr.Copy(&out.Laddr)
	}
}

// cancelBranch sends CANCEL for a pending INVITE branch (RFC 3261 16.10)
// and absorbs the CANCEL's own responses on a short transaction goroutine.
func (s *Server) cancelBranch(c *call, inv *sip.Request) {
	cr := sip.NewRequest(sip.CANCEL, *inv.Recipient.Clone())
	cr.SipVersion = inv.SipVersion
	cr.AppendHeader(inv.Via().Clone())
	for _, h := range inv.GetHeaders("Route") {
		cr.AppendHeader(sip.HeaderClone(h))
	}
	mf := sip.MaxForwardsHeader(defaultMaxForwardsAdded)
	cr.AppendHeader(&mf)
	cr.AppendHeader(sip.HeaderClone(inv.From()))
	cr.AppendHeader(sip.HeaderClone(inv.To()))
	cr.AppendHeader(sip.HeaderClone(inv.CallID()))
	cr.AppendHeader(&sip.CSeqHeader{SeqNo: inv.CSeq().SeqNo, MethodName: sip.CANCEL})
	cr.SetBody(nil)
	cr.SetTransport(inv.Transport())
	cr.SetDestination(inv.Destination())
	inv.Laddr.Copy(&cr.Laddr)
	s.runDetached(*c.logger(), cr)
}

// runDetached sends a request the proxy originates (CANCEL, BYE) and waits
// for its final response on a tracked goroutine bounded by BranchTimeout.
func (s *Server) runDetached(log zerolog.Logger, req *sip.Request) bool {
	ctx, cancel := context.WithTimeout(context.Background(), defaultConnectTimeout)
	tx, err := s.txl.Request(ctx, req)
	cancel()
	if err != nil {
		log.Warn().Err(err).Str("request", string(req.Method)).Msg("send proxy-originated request")
		return false
	}
	limit := s.cfg.BranchTimeout
	s.goTracked(func() {
		t := time.NewTimer(limit)
		defer t.Stop()
		for {
			select {
			case res := <-tx.Responses():
				if !res.IsProvisional() {
					return
				}
			case <-tx.Done():
				return
			case <-t.C:
				tx.Terminate()
				return
			}
		}
	})
	return true
}
