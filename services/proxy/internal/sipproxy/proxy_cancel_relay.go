package sipproxy

import (
	"context"
	"fmt"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/nats-io/nats.go"
)

// A CANCEL matches its INVITE's server transaction by the branch the caller
// put in the INVITE's Via: nothing in it names the replica holding that
// transaction, and the load balancer in front of the replicas may hand it
// to any of them. A proxy that finds no transaction must still get the
// CANCEL to the INVITE (RFC 3261 16.10). The flows relay (flows.go) cannot
// carry it: it sends a request to a replica a signed alias names, and a
// CANCEL names none. So the replica that got it offers it, as it came, to
// every replica on the bus. Only the one holding the INVITE answers: it
// cancels the transaction exactly as sipgo does a local CANCEL (487
// upstream, the branches cancelled by forward), and once it says so the
// asking replica answers the CANCEL 200, hop by hop. The others keep quiet,
// so no replica waits for a count of refusals it cannot know; no answer
// within cancel_relay_timeout means nobody holds the INVITE: 481. Nothing is
// kept per call: the lookup is sipgo's own transaction, found by its key in
// inviteTxs, which forgets it when it ends. Only the answers to the CANCELs
// offered are kept, for a transaction linger, so that retransmissions get
// the same (proxy_cancel_answers.go).
//
// Each replica offers and takes CANCELs over a connection of its own that
// the server echoes nothing back to: a replica is then no listener to its
// own offers, and one that no other replica listens to is told so by the
// server at once (no responders) and answers 481 without waiting.
//
// What a flood of CANCELs matching nothing costs is bounded on both sides:
// a replica has at most cancel_relay_max_pending of them asking at once, and
// answers the rest 481 without asking; a replica handles the offers it gets
// one at a time, from a queue of bounded length, which drops what overflows.

// cancelRelaySubject is where the replicas offer each other CANCELs, in the
// bus's subject scheme (callgrid.v1...). The payload is the CANCEL itself
// in SIP's wire format, which every replica parses as it parses SIP from
// the network; the reply of the replica holding the INVITE is
// cancelRelayAccepted.
const cancelRelaySubject = "callgrid.v1.proxy.cancel"

// maxCancelRelayTimeout keeps the wait well inside the caller's patience:
// Timer F (32s) on the CANCEL, and a user who hung up.
const maxCancelRelayTimeout = 5 * time.Second

// cancelRelayDrain bounds, at shutdown, the wait for the offers already
// queued: each is a map lookup.
const cancelRelayDrain = time.Second

// cancelRelayQueue is how many offered CANCELs a replica keeps waiting for
// its handler; NATS drops what comes beyond (a slow consumer), and their
// senders answer 481 once their wait ends.
const cancelRelayQueue = 1024

// Results of a CANCEL offered to the other replicas (cancelRelays) and of
// one another replica offered (cancelsRelayed).
const (
	cancelRelayAccepted    = "accepted"
	cancelRelayUnmatched   = "unmatched"
	cancelRelayLimited     = "limited"
	cancelRelayUnavailable = "unavailable"
	cancelRelayCancelled   = "cancelled"
	cancelRelayMalformed   = "malformed"
	cancelRelayRepeated    = "repeated"
)

// relaysCancels reports whether this replica offers the CANCELs it cannot
// match to the others.
func (s *Server) relaysCancels() bool { return s.bus != nil && s.cfg.CancelRelayTimeout > 0 }

// cancelElsewhere handles a CANCEL that matched no INVITE transaction of
// this replica: another replica may hold it. It answers 200 when one
// cancelled it; an error (481) when none did in time, or when it was not
// asked. A retransmission of a CANCEL it asked about gets the same answer
// without asking again.
func (s *Server) cancelElsewhere(c *call) error {
	if !s.relaysCancels() {
		return errNoTransaction
	}
	key := cancelKey(c.req)
	if accepted, ok := s.cancelAnswers.lookup(key); ok {
		s.m.cancelRelays.WithLabelValues(cancelRelayRepeated).Inc()
		if !accepted {
			return fmt.Errorf("offer cancel to the other replicas: answered so before: %w", errNoTransaction)
		}
		s.reply(c, sip.StatusOK, "OK")
		return nil
	}
	select {
	case s.cancelSlots <- struct{}{}:
		defer func() { <-s.cancelSlots }()
	default:
		s.m.cancelRelays.WithLabelValues(cancelRelayLimited).Inc()
		return fmt.Errorf("offer cancel to the other replicas: %d pending already: %w", cap(s.cancelSlots), errNoTransaction)
	}
	if !s.cancelConn.IsConnected() {
		s.m.cancelRelays.WithLabelValues(cancelRelayUnavailable).Inc()
		return fmt.Errorf("offer cancel to the other replicas: bus away: %w", errNoTransaction)
	}
	err := s.offerCancel(c.req)
	if !sip.IsReliable(c.req.Transport()) {
		// Before the answer leaves, so a retransmission it crosses finds it.
		s.cancelAnswers.remember(key, err == nil)
	}
	if err != nil {
		s.m.cancelRelays.WithLabelValues(cancelRelayUnmatched).Inc()
		return fmt.Errorf("offer cancel to the other replicas: %w: %w", errNoTransaction, err)
	}
	s.m.cancelRelays.WithLabelValues(cancelRelayAccepted).Inc()
	c.logger().Debug().Msg("cancel taken by the replica holding the invite")
	s.reply(c, sip.StatusOK, "OK")
	return nil
}

// offerCancel asks the other replicas to cancel the INVITE req cancels; it
// returns nil once one did, and why none did otherwise.
func (s *Server) offerCancel(req *sip.Request) error {
	msg := nats.NewMsg(cancelRelaySubject)
	msg.Data = []byte(req.String())
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.CancelRelayTimeout)
	defer cancel()
	reply, err := s.cancelConn.RequestMsgWithContext(ctx, msg)
	if err != nil {
		// A timeout, or no other replica listening: nobody holds the INVITE.
		return err
	}
	if string(reply.Data) != cancelRelayAccepted {
		return fmt.Errorf("reply %q", reply.Data)
	}
	return nil
}

// openCancelRelay opens the connection the CANCEL relay goes over and
// subscribes it to the CANCELs other replicas offer. The connection is the
// bus client's, cloned with echo off (the package comment says why), and
// with handlers of its own instead of the bus client's, which keep the
// client's state: while it is away every CANCEL this replica cannot match
// is answered 481 (cancelRelayUnavailable), so its losses are logged here.
func (s *Server) openCancelRelay() (*nats.Conn, *nats.Subscription, error) {
	opts := s.bus.Conn().Opts
	opts.Name += " cancel relay"
	opts.NoEcho = true
	// The bus client's connection is up; should this one not come up at
	// once, CANCELs are answered 481 until it does rather than the replica
	// failing to start.
	opts.RetryOnFailedConnect = true
	opts.ClosedCB, opts.ConnectedCB, opts.DisconnectedCB, opts.ReconnectedCB, opts.DiscoveredServersCB, opts.LameDuckModeHandler = nil, nil, nil, nil, nil, nil
	opts.DisconnectedErrCB, opts.ReconnectErrCB = nil, nil
	log := s.log.With().Str("subject", cancelRelaySubject).Logger()
	opts.AsyncErrorCB = func(_ *nats.Conn, _ *nats.Subscription, err error) {
		log.Warn().Err(err).Msg("cancel relay connection")
	}
	opts.DisconnectedErrCB = func(_ *nats.Conn, err error) {
		// NATS reports our own Close as a disconnect too.
		if s.cancelConnClosing.Load() {
			return
		}
		log.Warn().Err(err).Msg("cancel relay disconnected, cancels for other replicas answered 481 until it reconnects")
	}
	// Also the first connection when the one at start failed
	// (RetryOnFailedConnect).
	opts.ReconnectedCB = func(nc *nats.Conn) {
		log.Info().Str("url", nc.ConnectedUrlRedacted()).Msg("cancel relay reconnected")
	}
	opts.ClosedCB = func(nc *nats.Conn) {
		if s.cancelConnClosing.Load() {
			log.Debug().Msg("cancel relay closed")
			return
		}
		// NATS gave up reconnecting, or the server refused the connection
		// for good: no CANCEL reaches another replica until a restart.
		log.Warn().Err(nc.LastError()).Msg("cancel relay closed, cancels for other replicas answered 481 until restart")
	}
	nc, err := opts.Connect()
	if err != nil {
		return nil, nil, fmt.Errorf("connect the cancel relay: %w", err)
	}
	sub, err := nc.Subscribe(cancelRelaySubject, s.takeOfferedCancel)
	if err != nil {
		s.closeCancelRelay(nc)
		return nil, nil, fmt.Errorf("subscribe %s: %w", cancelRelaySubject, err)
	}
	if err := sub.SetPendingLimits(cancelRelayQueue, cancelRelayQueue*s.cfg.MaxMessageSize); err != nil {
		s.closeCancelRelay(nc)
		return nil, nil, fmt.Errorf("bound the queue of %s: %w", cancelRelaySubject, err)
	}
	return nc, sub, nil
}

// closeCancelRelay closes the relay's connection as this replica means to,
// which its handlers then do not report as a loss.
func (s *Server) closeCancelRelay(nc *nats.Conn) {
	s.cancelConnClosing.Store(true)
	nc.Close()
}

// takeOfferedCancel handles a CANCEL another replica offered: when this
// replica holds its INVITE it cancels it and says so; otherwise it keeps
// quiet. NATS runs it for one offer at a time.
func (s *Server) takeOfferedCancel(msg *nats.Msg) {
	parsed, err := s.parser.ParseSIP(msg.Data)
	req, ok := parsed.(*sip.Request)
	if err != nil || !ok || !req.IsCancel() || req.Via() == nil || req.CSeq() == nil {
		s.m.cancelsRelayed.WithLabelValues(cancelRelayMalformed).Inc()
		return
	}
	tx, ok := s.liveInvite(req)
	if !ok {
		s.m.cancelsRelayed.WithLabelValues(cancelRelayUnmatched).Inc()
		return
	}
	log := s.log.With().Str("call_id", callIDOf(req)).Logger()
	// What sipgo's transaction layer does with a CANCEL matching one of its
	// INVITEs, but for the 200, which the replica that got the CANCEL sends:
	// the transaction answers 487 and runs its OnCancel hooks.
	if err := tx.Receive(req); err != nil {
		s.m.cancelsRelayed.WithLabelValues(cancelRelayUnmatched).Inc()
		log.Warn().Err(err).Msg("cancel an invite for another replica")
		return
	}
	s.m.cancelsRelayed.WithLabelValues(cancelRelayCancelled).Inc()
	if err := msg.Respond([]byte(cancelRelayAccepted)); err != nil {
		// The caller gets its 487 all the same; its CANCEL is answered 481.
		log.Debug().Err(err).Msg("tell the replica that got the cancel")
		return
	}
	log.Debug().Msg("invite cancelled for another replica")
}

// cancellable is what of sipgo's server transaction takes a CANCEL.
type cancellable interface {
	Receive(req *sip.Request) error
	Origin() *sip.Request
}

// liveInvite finds the live INVITE server transaction a CANCEL cancels:
// the one with the CANCEL's key taken as an INVITE's (RFC 3261 9.2), and
// whose Request-URI, Call-ID, From tag and CSeq number the CANCEL repeats
// (9.1). The key alone is the caller's branch and sent-by, which every
// hop downstream reads in the Via of the INVITE we forwarded: a callee,
// or a stranger it told, could otherwise cancel someone else's call
// through any replica.
func (s *Server) liveInvite(cancel *sip.Request) (cancellable, bool) {
	cseq := cancel.CSeq()
	cseq.MethodName = sip.INVITE
	key, err := sip.ServerTxKeyMake(cancel)
	cseq.MethodName = sip.CANCEL
	if err != nil {
		return nil, false
	}
	v, ok := s.inviteTxs.Load(key)
	if !ok {
		return nil, false
	}
	tx, ok := v.(cancellable)
	if !ok || !cancelsInvite(cancel, tx.Origin()) {
		return nil, false
	}
	return tx, true
}

// cancelsInvite reports whether cancel repeats what RFC 3261 9.1 has a
// CANCEL copy from the INVITE it cancels, but for the To header, whose tag
// some user agents copy from a provisional response.
func cancelsInvite(cancel, invite *sip.Request) bool {
	if invite == nil || invite.CSeq() == nil || cancel.CSeq().SeqNo != invite.CSeq().SeqNo {
		return false
	}
	cid, icid := cancel.CallID(), invite.CallID()
	if cid == nil || icid == nil || *cid != *icid {
		return false
	}
	from, ifrom := cancel.From(), invite.From()
	if from == nil || ifrom == nil {
		return false
	}
	tag, _ := from.Params.Get("tag")
	itag, _ := ifrom.Params.Get("tag")
	return tag == itag && cancel.Recipient.String() == invite.Recipient.String()
}
