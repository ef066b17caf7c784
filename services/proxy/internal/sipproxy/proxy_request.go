package sipproxy

import (
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/rs/zerolog"
)

// call is one incoming request being handled. It lives as long as its server
// transaction's handler runs and no longer.
type call struct {
	req *sip.Request
	tx  sip.ServerTransaction
	// log is built from serverLog by logger() on first use: most requests
	// log nothing, and attaching the call's fields allocates.
	log       zerolog.Logger
	logBuilt  bool
	serverLog *zerolog.Logger
	start     time.Time
	loop      string
	// finalSent records that a final response went upstream, for the histogram.
	finalSent bool
	// tryingSent records that 100 Trying went upstream.
	tryingSent bool
	// dialTimed records that the call's first response past 100 Trying went
	// upstream, timed or not, for the post-dial delay histogram.
	dialTimed bool
	// media is the transaction's anchored media, nil when bypassed.
	media *callMedia
	// relayed: another replica sent the request to a flow this one holds.
	relayed bool
}

// logger returns the call's logger, with call_id, method and src attached.
func (c *call) logger() *zerolog.Logger {
	if !c.logBuilt {
		callID := ""
		if h := c.req.CallID(); h != nil {
			callID = h.Value()
		}
		c.log = c.serverLog.With().Str("call_id", callID).Str("method", string(c.req.Method)).Str("src", c.req.Source()).Logger()
		c.logBuilt = true
	}
	return &c.log
}

// handleRequest is sipgo's handler for every method. sipgo runs it on the
// goroutine that created the server transaction and terminates the
// transaction when it returns; the work runs on the handler pool meanwhile.
func (s *Server) handleRequest(req *sip.Request, tx sip.ServerTransaction) {
	if !s.active.enter() {
		return
	}
	defer s.active.leave()
	if req.IsInvite() {
		s.trackInvite(tx)
	}
	s.handlers.run(func() { s.serve(req, tx) })
}

// serve handles one request; tx is nil for the ACKs takeACK forwards, which
// no transaction carries. The caller holds an active-tracker entry.
func (s *Server) serve(req *sip.Request, tx sip.ServerTransaction) {
	s.m.inflight.Inc()
	defer s.m.inflight.Dec()

	s.m.requests.WithLabelValues(methodLabel(req.Method)).Inc()
	c := &call{req: req, tx: tx, serverLog: &s.log, start: time.Now()}
	defer func() {
		// A bug in one request must not take the replica down.
		if r := recover(); r != nil {
			s.m.dropped.WithLabelValues("panic").Inc()
			c.logger().Error().Interface("panic", r).Bytes("stack", debug.Stack()).Msg("request handler panicked")
			if !req.IsAck() {
				s.fail(c, fmt.Errorf("handler panic: %v", r))
			}
		}
	}()
	if err := s.process(c); err != nil {
		s.fail(c, err)
	}
}

// process validates the request and routes it. Errors it returns become the
// final response; a nil return means a response was sent or none is due.
func (s *Server) process(c *call) error {
	req := c.req
	if err := validateRequest(req); err != nil {
		s.m.dropped.WithLabelValues("malformed").Inc()
		if req.IsAck() {
			return nil
		}
		return err
	}
	if s.blockedAgent(req) {
		// Scanners get silence: an answer only confirms a SIP server is here.
		s.m.dropped.WithLabelValues("blocked_user_agent").Inc()
		return nil
	}
	if mf := req.MaxForwards(); mf != nil && mf.Val() == 0 && !s.addressedToUs(req) {
		return errTooManyHops
	}
	c.loop = s.loopOf(req)
	if !req.IsAck() && s.isLoop(req, c.loop) {
		return errLoop
	}

	if req.Method == sip.CANCEL {
		// sipgo answers CANCELs matching a live INVITE transaction of this
		// replica itself; another replica may hold this one's. That holds
		// for the CANCEL of a re-INVITE, which carries the dialog's To tag,
		// or of an INVITE whose 1xx tag the caller copied, so this comes
		// before the in-dialog routing. A CANCEL forwarded as a request of
		// its own would get a fresh branch and match nothing downstream
		// (RFC 3261 9.2, 16.10): it only ever cancels the INVITE it names.
		return s.cancelElsewhere(c)
	}
	if a, relayMAC, ok := s.flowRelay(req); ok {
		return s.relayToFlow(c, a, relayMAC)
	}
	if req.To().Params.Has("tag") {
		return s.routeInDialog(c)
	}
	if req.IsAck() {
		// An out-of-dialog ACK with no transaction acknowledges a response we
		// never sent statefully: nothing to do.
		return nil
	}
	if s.draining.Load() {
		return errDraining
	}
	if s.addressedToUs(req) || (req.Method == sip.REGISTER && s.self.isLocalDomain(req.Recipient.Host)) {
		return s.handleLocal(c)
	}
	return s.routeNewRequest(c)
}

// validateRequest checks what RFC 3261 16.3 needs before a request can be
// proxied; sipgo already rejected requests without Via or CSeq.
func validateRequest(req *sip.Request) error {
	switch {
	case req.SipVersion != "SIP/2.0":
		return fmt.Errorf("version %q: %w", req.SipVersion, errVersion)
	case req.From() == nil, req.To() == nil, req.CallID() == nil, req.CSeq() == nil, req.Via() == nil:
		return fmt.Errorf("missing mandatory header: %w", errMalformed)
	case req.CSeq().MethodName != req.Method && !(req.IsAck() || req.IsCancel()):
		return fmt.Errorf("cseq method %s differs: %w", req.CSeq().MethodName, errMalformed)
	case req.Recipient.Scheme != "sip" && req.Recipient.Scheme != "sips":
		return fmt.Errorf("request-uri scheme %q: %w", req.Recipient.Scheme, errUnsupportedURI)
	case req.Recipient.Host == "":
		return fmt.Errorf("request-uri without host: %w", errMalformed)
	case contentLengths(req) > 1:
		return fmt.Errorf("several content-length values: %w", errMalformed)
	}
	return nil
}

// checkProxyRequire refuses a request to proxy whose Proxy-Require names an
// extension this proxy lacks, with 420 listing them (RFC 3261 16.3 step 5);
// it supports none. ACK and CANCEL carry no Proxy-Require of their own and
// cannot be refused for one. A request the proxy answers itself is not
// proxied, and Proxy-Require does not concern it.
func checkProxyRequire(req *sip.Request) error {
	if req.IsAck() || req.IsCancel() {
		return nil
	}
	var tags []string
	for _, h := range req.Headers() {
		if !strings.EqualFold(h.Name(), "Proxy-Require") {
			continue
		}
		for tag := range strings.SplitSeq(h.Value(), ",") {
			if tag = strings.TrimSpace(tag); tag != "" {
				tags = append(tags, tag)
			}
		}
	}
	if len(tags) == 0 {
		return nil
	}
	return &badExtensionError{tags: tags}
}

// addressedToUs reports requests for the proxy itself rather than a user.
// Route entries of ours do not change that: with them popped (RFC 3261
// 16.4) the Request-URI is still ours, which is how a phone with this proxy
// as its outbound proxy sends its OPTIONS keep-alives.
func (s *Server) addressedToUs(req *sip.Request) bool {
	return req.Recipient.User == "" && s.onlyOurRoutes(req) &&
		(s.self.isSelf(req.Recipient.Host, req.Recipient.Port) || s.self.isLocalDomain(req.Recipient.Host))
}

// onlyOurRoutes reports whether every Route entry of req, if any, is ours.
func (s *Server) onlyOurRoutes(req *sip.Request) bool {
	if req.Route() == nil {
		return true
	}
	for _, h := range req.Headers() {
		if r, ok := h.(*sip.RouteHeader); ok && !s.self.isSelf(r.Address.Host, r.Address.Port) {
			return false
		}
	}
	return true
}

// handleLocal answers requests addressed to the proxy: REGISTER and OPTIONS.
func (s *Server) handleLocal(c *call) error {
	switch c.req.Method {
	case sip.REGISTER:
		return s.register(c)
	case sip.OPTIONS:
		s.reply(c, sip.StatusOK, "OK", sip.NewHeader("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, MESSAGE, INFO, UPDATE, PRACK, SUBSCRIBE, NOTIFY, REFER"))
		return nil
	}
	return errNotAllowed
}

// reply sends a response the proxy generates itself. An ACK is never
// answered (RFC 3261 17.1.1.3): its failures are only counted and logged.
func (s *Server) reply(c *call, code int, phrase string, hdrs ...sip.Header) {
	if c.req.IsAck() {
		return
	}
	res := sip.NewResponseFromRequest(c.req, code, phrase, nil)
	res.SipVersion = "SIP/2.0"
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	res.AppendHeader(sip.NewHeader("Server", s.cfg.UserAgent))
	if !sip.IsReliable(c.req.Transport()) {
		// Answer where the request came from (RFC 3581 symmetric response),
		// whatever its Via claims: phones behind NAT depend on it.
		res.SetDestination(c.req.Source())
	}
	s.respond(c, res)
}

// respond sends res upstream on the server transaction and counts it.
func (s *Server) respond(c *call, res *sip.Response) {
	if err := c.tx.Respond(res); err != nil {
		c.logger().Debug().Err(err).Int("status", res.StatusCode).Msg("send response upstream")
		return
	}
	s.m.responses.WithLabelValues(statusClass(res.StatusCode)).Inc()
	if res.StatusCode > 100 && !c.dialTimed {
		c.dialTimed = true
		s.timePostDial(c, res.StatusCode)
	}
	if res.StatusCode >= 200 && !c.finalSent {
		c.finalSent = true
		s.m.txDuration.WithLabelValues(methodLabel(c.req.Method)).Observe(time.Since(c.start).Seconds())
	}
}

// Outcomes of the post-dial delay histogram.
const (
	dialProgress = "progress"
	dialAnswered = "answered"
	dialFailed   = "failed"
)

// timePostDial observes the post-dial delay of a new call whose first
// response past 100 Trying, status, is going upstream. In-dialog INVITEs
// (re-INVITEs) are no dialling, and a 487 ends a call the caller gave up
// on, which says nothing of how fast the network answers.
func (s *Server) timePostDial(c *call, status int) {
	if !c.req.IsInvite() || status == sip.StatusRequestTerminated {
		return
	}
	if to := c.req.To(); to != nil && to.Params.Has("tag") {
		return
	}
	outcome := dialFailed
	switch {
	case status < 200:
		outcome = dialProgress
	case status < 300:
		outcome = dialAnswered
	}
	s.m.postDialDelay.WithLabelValues(outcome).Observe(time.Since(c.start).Seconds())
}

// fail answers the request with the status its error maps to.
func (s *Server) fail(c *call, err error) {
	f := s.classify(err)
	s.m.forwardFailures.WithLabelValues(f.reason).Inc()
	ev := c.logger().Debug()
	if f.code >= 500 {
		ev = c.logger().Warn()
	}
	ev.Err(err).Int("status", f.code).Str("reason", f.reason).Msg("request failed")
	var hdrs []sip.Header
	if f.retryAfter > 0 {
		hdrs = append(hdrs, sip.NewHeader("Retry-After", strconv.Itoa(max(1, int(f.retryAfter.Seconds())))))
	}
	if f.warning != "" {
		hdrs = append(hdrs, sip.NewHeader("Warning", f.warning))
	}
	if f.registrarError != "" {
		hdrs = append(hdrs, sip.NewHeader("P-Registrar-Error", f.registrarError))
	}
	var brief *intervalTooBriefError
	if asIntervalTooBrief(err, &brief) {
		hdrs = append(hdrs, sip.NewHeader("Min-Expires", strconv.Itoa(brief.min)))
	}
	var ext *badExtensionError
	if errors.As(err, &ext) {
		hdrs = append(hdrs, sip.NewHeader("Unsupported", strings.Join(ext.tags, ", ")))
	}
	s.reply(c, f.code, f.phrase, hdrs...)
}
