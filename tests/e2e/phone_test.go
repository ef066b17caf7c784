package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// calleeBehaviour is how a phone answers an INVITE.
type calleeBehaviour struct {
	// ringFor delays the answer.
	ringFor time.Duration
	// reject answers with this final status instead.
	reject int
	// noRinging skips the 180 (a gateway refusing at once).
	noRinging bool
	// neverAnswer keeps ringing until cancelled.
	neverAnswer bool
	// silentEarlyMedia sends the answer in a 183 first and no RTP until
	// the 200: a callee whose early media stays silent while it rings.
	silentEarlyMedia bool
	// bodilessFinal, with silentEarlyMedia, sends the 200 without SDP: the
	// 183 carried the answer, as with reliable provisional responses.
	bodilessFinal bool
}

// phone is a SIP user agent with one RTP endpoint and one codec.
type phone struct {
	t       *testing.T
	user    user
	ua      *sipgo.UserAgent
	cli     *sipgo.Client
	port    int
	contact sip.ContactHeader
	clients *sipgo.DialogClientCache
	servers *sipgo.DialogServerCache
	rtp     *rtpEndpoint
	codec   *audioCodec
	audioPT uint8
	eventPT uint8
	// transport is what the phone sends its own requests over ("" is
	// UDP, the transport layer's default).
	transport string

	behaviour atomic.Pointer[calleeBehaviour]
	// rejectReinvites, when not 0, is the final status re-INVITEs get.
	rejectReinvites atomic.Int32
	invites         chan *sip.Request
	reinvites       chan *sip.Request
	answered        chan *sipgo.DialogServerSession
	cancelled       chan struct{}
	// cancels are the CANCEL requests that ended ringing INVITEs.
	cancels  chan *sip.Request
	byes     chan *sip.Request
	messages chan *sip.Request
}

// newPhone starts a phone on a UDP port of its own; hooks may replace its
// server's handlers before it serves.
func newPhone(t *testing.T, u user, codec *audioCodec, audioPT, eventPT uint8, toneHz float64, hooks ...func(*phone, *sipgo.Server)) *phone {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	port := conn.LocalAddr().(*net.UDPAddr).Port
	ua, err := sipgo.NewUA(sipgo.WithUserAgent(u.name), sipgo.WithUserAgentHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	cli, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"), sipgo.WithClientConnectionAddr(addr))
	if err != nil {
		t.Fatal(err)
	}
	contact := sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: u.name, Host: "127.0.0.1", Port: port}}
	p, srv := newPhoneOn(t, u, ua, cli, contact, codec, audioPT, eventPT, toneHz)
	p.port = port
	for _, hook := range hooks {
		hook(p, srv)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.ServeUDP(conn)
	}()
	t.Cleanup(func() {
		_ = conn.Close()
		<-served
		_ = ua.Close()
	})
	waitFor(t, 5*time.Second, "phone listener", func() bool { return ua.TransportLayer().Pool("udp").Size() > 0 })
	return p
}

// newPhoneOn builds a phone on ua and cli: requests reaching ua's transport
// layer go to the returned server, which the caller serves and cleans up.
func newPhoneOn(t *testing.T, u user, ua *sipgo.UserAgent, cli *sipgo.Client, contact sip.ContactHeader,
	codec *audioCodec, audioPT, eventPT uint8, toneHz float64) (*phone, *sipgo.Server) {
	t.Helper()
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	p := &phone{
		t: t, user: u, ua: ua, cli: cli, contact: contact,
		clients: sipgo.NewDialogClientCache(cli, contact),
		servers: sipgo.NewDialogServerCache(cli, contact),
		rtp:     newRTPEndpoint(t, codec, toneHz),
		codec:   codec, audioPT: audioPT, eventPT: eventPT,
		invites:   make(chan *sip.Request, 16),
		reinvites: make(chan *sip.Request, 16),
		answered:  make(chan *sipgo.DialogServerSession, 16),
		cancelled: make(chan struct{}, 16),
		cancels:   make(chan *sip.Request, 16),
		byes:      make(chan *sip.Request, 16),
		messages:  make(chan *sip.Request, 16),
	}
	p.behaviour.Store(&calleeBehaviour{ringFor: 50 * time.Millisecond})
	srv.OnInvite(p.onInvite)
	srv.OnAck(func(req *sip.Request, tx sip.ServerTransaction) {
		if len(req.Body()) > 0 {
			// The answer to the offer this phone made in its 2xx.
			_ = p.useAnswer(req.Body())
		}
		_ = p.servers.ReadAck(req, tx)
	})
	srv.OnBye(p.onBye)
	srv.OnMessage(p.onMessage)
	return p, srv
}

// localSDP is this phone's SDP offer.
func (p *phone) localSDP(direction string) []byte {
	return sdpFor(p.rtp.port(), p.codec, p.audioPT, p.eventPT, direction)
}

func (p *phone) aor() sip.Uri { return sip.Uri{Scheme: "sip", User: p.user.name, Host: "localhost"} }

// register binds the phone at the proxy, answering the digest challenge,
// and unbinds it when the test ends, as a phone does when it shuts down: a
// binding left behind would make later tests' calls to the same user fork
// to an address another phone may have been given since.
func (p *phone) register(t *testing.T, proxy string) {
	t.Helper()
	if err := p.bind(withTimeout(t, 10*time.Second), proxy, 600); err != nil {
		t.Fatalf("register %s: %v", p.user.name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if err := p.bind(ctx, proxy, 0); err != nil {
			t.Logf("unregister %s: %v", p.user.name, err)
		}
	})
}

// bind sends a REGISTER of the phone's contact for expires seconds.
func (p *phone) bind(ctx context.Context, proxy string, expires int) error {
	req := sip.NewRequest(sip.REGISTER, sip.Uri{Scheme: "sip", Host: "localhost"})
	from := &sip.FromHeader{Address: p.aor(), Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(10))
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: p.aor(), Params: sip.NewParams()})
	req.AppendHeader(sip.HeaderClone(&p.contact))
	req.AppendHeader(sip.NewHeader("Expires", strconv.Itoa(expires)))
	p.address(req, proxy)
	res, err := p.cli.Do(ctx, req)
	if err != nil {
		return err
	}
	if res.StatusCode == sip.StatusUnauthorized {
		res, err = p.cli.DoDigestAuth(ctx, req, res, sipgo.DigestAuth{Username: p.user.name, Password: p.user.password})
		if err != nil {
			return fmt.Errorf("with digest: %w", err)
		}
	}
	if res.StatusCode != sip.StatusOK {
		return fmt.Errorf("%d %s", res.StatusCode, res.Reason)
	}
	return nil
}

// inviteRequest builds an INVITE to user@localhost through proxy.
func (p *phone) inviteRequest(proxy, to string, body []byte) *sip.Request {
	req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: to, Host: "localhost"})
	from := &sip.FromHeader{Address: p.aor(), Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(10))
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: to, Host: "localhost"}, Params: sip.NewParams()})
	req.AppendHeader(sip.HeaderClone(&p.contact))
	if body != nil {
		req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		req.SetBody(body)
	}
	p.address(req, proxy)
	return req
}

// address sends a request the phone originates to proxy over the phone's
// transport.
func (p *phone) address(req *sip.Request, proxy string) {
	req.SetDestination(proxy)
	if p.transport != "" {
		req.SetTransport(p.transport)
	}
}

// dial calls to through proxy and returns the dialog once answered; the
// error carries the final status of a failed call.
func (p *phone) dial(ctx context.Context, proxy, to string) (*sipgo.DialogClientSession, error) {
	sess, err := p.clients.WriteInvite(ctx, p.inviteRequest(proxy, to, p.localSDP("sendrecv")))
	if err != nil {
		return nil, err
	}
	var early []byte
	keepEarly := func(res *sip.Response) error {
		if res.StatusCode > 100 && res.StatusCode < 200 && len(res.Body()) > 0 {
			early = res.Body()
		}
		return nil
	}
	if err := sess.WaitAnswer(ctx, sipgo.AnswerOptions{Username: p.user.name, Password: p.user.password, OnResponse: keepEarly}); err != nil {
		return sess, err
	}
	answer := sess.InviteResponse.Body()
	if len(answer) == 0 {
		// Answered in a provisional response already (RFC 3262).
		answer = early
	}
	if err := p.useAnswer(answer); err != nil {
		return sess, err
	}
	return sess, sess.Ack(ctx)
}

// dialLate calls to with an INVITE without SDP: the callee offers in its
// 2xx and this phone answers in the ACK.
func (p *phone) dialLate(ctx context.Context, proxy, to string) (*sipgo.DialogClientSession, error) {
	sess, err := p.clients.WriteInvite(ctx, p.inviteRequest(proxy, to, nil))
	if err != nil {
		return nil, err
	}
	if err := sess.WaitAnswer(ctx, sipgo.AnswerOptions{Username: p.user.name, Password: p.user.password}); err != nil {
		return sess, err
	}
	answer, err := p.answerFor(sess.InviteResponse.Body())
	if err != nil {
		return sess, err
	}
	ack := sip.NewRequest(sip.ACK, sess.InviteResponse.Contact().Address)
	ack.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	ack.SetBody(answer)
	return sess, sess.WriteAck(ctx, ack)
}

// useAnswer points the RTP endpoint at what the far side's SDP says.
func (p *phone) useAnswer(body []byte) error {
	d, err := parseSDP(body)
	if err != nil {
		return err
	}
	audio, ok := d.pt(p.codec.name)
	if !ok {
		return errors.New("answer lacks our codec:\n" + string(body))
	}
	event, _ := d.pt("telephone-event")
	p.rtp.connect(d.addr, audio, event)
	return nil
}

// reinvite re-negotiates the call with direction (hold: sendonly).
func (p *phone) reinvite(ctx context.Context, sess *sipgo.DialogClientSession, direction string) error {
	req := sip.NewRequest(sip.INVITE, sess.InviteResponse.Contact().Address)
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	req.SetBody(p.localSDP(direction))
	res, err := sess.Do(ctx, req)
	if err != nil {
		return err
	}
	if res.StatusCode != sip.StatusOK {
		return errors.New("re-invite: " + res.StartLine())
	}
	if err := p.useAnswer(res.Body()); err != nil {
		return err
	}
	ack := sip.NewRequest(sip.ACK, sess.InviteResponse.Contact().Address)
	return sess.WriteRequest(ack)
}

func (p *phone) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	if req.To().Params.Has("tag") {
		p.onReinvite(req, tx)
		return
	}
	dlg, err := p.servers.ReadInvite(req, tx)
	if err != nil {
		return
	}
	p.invites <- req
	tx.OnCancel(func(cancel *sip.Request) { sendOrDrop(p.cancels, cancel) })
	b := p.behaviour.Load()
	if !b.noRinging {
		_ = dlg.Respond(sip.StatusRinging, "Ringing", nil)
	}
	switch {
	case b.reject != 0:
		_ = dlg.Respond(b.reject, "Rejected", nil)
		return
	case b.neverAnswer:
		<-dlg.Context().Done()
		p.cancelled <- struct{}{}
		return
	}
	var early []byte
	if b.silentEarlyMedia {
		var err error
		if early, err = p.answerFor(req.Body()); err != nil {
			_ = dlg.Respond(sip.StatusNotAcceptableHere, "Not Acceptable Here", nil)
			return
		}
		p.rtp.sending.Store(false)
		if err := dlg.Respond(sip.StatusSessionInProgress, "Session Progress", early, sip.NewHeader("Content-Type", "application/sdp")); err != nil {
			return
		}
	}
	select {
	case <-dlg.Context().Done():
		p.cancelled <- struct{}{}
		return
	case <-time.After(b.ringFor):
	}
	answer, err := p.answerFor(req.Body())
	switch {
	case len(req.Body()) == 0:
		// No offer in the INVITE: ours goes in the 2xx, the answer comes
		// in the ACK.
		answer, err = p.localSDP("sendrecv"), nil
	case early != nil:
		// The 2xx repeats the 183's answer, as phones do.
		answer = early
	}
	if err != nil {
		_ = dlg.Respond(sip.StatusNotAcceptableHere, "Not Acceptable Here", nil)
		return
	}
	if early != nil && b.bodilessFinal {
		if err := dlg.Respond(sip.StatusOK, "OK", nil); err != nil {
			return
		}
		p.answered <- dlg
		return
	}
	if err := dlg.Respond(sip.StatusOK, "OK", answer, sip.NewHeader("Content-Type", "application/sdp")); err != nil {
		return
	}
	p.answered <- dlg
}

// answerFor answers an offer with this phone's codec and starts media.
func (p *phone) answerFor(offer []byte) ([]byte, error) {
	d, err := parseSDP(offer)
	if err != nil {
		return nil, err
	}
	audio, ok := d.pt(p.codec.name + "/" + strconv.Itoa(p.codec.clock))
	if !ok {
		return nil, errors.New("offer lacks our codec")
	}
	event, _ := d.pt("telephone-event/" + strconv.Itoa(p.codec.clock))
	p.rtp.connect(d.addr, audio, event)
	dir := answerDirection(d.direction)
	p.rtp.sending.Store(dir == "sendrecv" || dir == "sendonly")
	return sdpFor(p.rtp.port(), p.codec, audio, event, dir), nil
}

func (p *phone) onReinvite(req *sip.Request, tx sip.ServerTransaction) {
	p.reinvites <- req
	if code := int(p.rejectReinvites.Load()); code != 0 {
		_ = tx.Respond(sip.NewResponseFromRequest(req, code, "Rejected", nil))
		return
	}
	_ = tx.Respond(p.reinviteResponse(req))
}

// reinviteResponse answers a re-INVITE's offer with the phone's SDP, or
// with 488 when it lacks the phone's codec.
func (p *phone) reinviteResponse(req *sip.Request) *sip.Response {
	answer, err := p.answerFor(req.Body())
	if err != nil {
		return sip.NewResponseFromRequest(req, sip.StatusNotAcceptableHere, "Not Acceptable Here", nil)
	}
	res := sip.NewResponseFromRequest(req, sip.StatusOK, "OK", answer)
	res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	res.AppendHeader(sip.HeaderClone(&p.contact))
	return res
}

func (p *phone) onBye(req *sip.Request, tx sip.ServerTransaction) {
	err := p.servers.ReadBye(req, tx)
	if errors.Is(err, sipgo.ErrDialogDoesNotExists) {
		err = p.clients.ReadBye(req, tx)
	}
	if err != nil {
		_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusCallTransactionDoesNotExists, "Call/Transaction Does Not Exist", nil))
	}
	p.rtp.sending.Store(false)
	p.byes <- req
}

// onMessage accepts every out-of-dialog MESSAGE, as a phone showing it would.
func (p *phone) onMessage(req *sip.Request, tx sip.ServerTransaction) {
	_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil))
	p.messages <- req
}

// sendOrDrop sends v on ch unless ch is full: tests read the first few,
// and a handler must never block on a test that stopped reading.
func sendOrDrop[T any](ch chan<- T, v T) {
	select {
	case ch <- v:
	default:
	}
}

func receiveWithin[T any](t *testing.T, what string, ch <-chan T, limit time.Duration) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(limit):
		t.Fatalf("%s not received within %v", what, limit)
		var zero T
		return zero
	}
}
