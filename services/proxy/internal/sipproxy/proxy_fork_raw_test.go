package sipproxy

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"callgrid.dev/services/proxy/internal/location"
)

// rawContact is a contact of bob on a bare UDP socket: the test reads the
// INVITE that reaches it and writes each of its responses.
type rawContact struct {
	*udpEnd
	// tag is the To tag of its responses.
	tag string
}

// addRawContact binds a raw contact to bob in p's location store.
func addRawContact(t *testing.T, p *runningProxy, tag string) *rawContact {
	t.Helper()
	end := newUDPEnd(t)
	addr := "127.0.0.1:" + strconv.Itoa(end.port)
	now := time.Now()
	if _, err := p.loc.Update(context.Background(), "bob@localhost", func(live []location.Binding) ([]location.Binding, error) {
		return append(live, location.Binding{
			AOR: "bob@localhost", Contact: "sip:bob@" + addr, Received: addr, Transport: "UDP",
			CallID: "raw-" + tag, CSeq: 1, Expires: now.Add(time.Hour), UpdatedAt: now,
		}), nil
	}); err != nil {
		t.Fatal(err)
	}
	return &rawContact{udpEnd: end, tag: tag}
}

// invite waits for the INVITE the proxy sends the contact.
func (rc *rawContact) invite(t *testing.T) *sip.Request {
	t.Helper()
	return rc.request(t, sip.INVITE)
}

// request waits for a request of method at the contact.
func (rc *rawContact) request(t *testing.T, method sip.RequestMethod) *sip.Request {
	t.Helper()
	m := rc.next(t, 3*time.Second, func(m sip.Message) bool { r, ok := m.(*sip.Request); return ok && r.Method == method })
	if m == nil {
		t.Fatalf("no %s at contact %s", method, rc.tag)
	}
	return m.(*sip.Request)
}

// respond answers inv with code and, unless nil, an SDP body.
func (rc *rawContact) respond(t *testing.T, p *runningProxy, inv *sip.Request, code int, sdp []byte) {
	t.Helper()
	res := sip.NewResponseFromRequest(inv, code, "Test", sdp)
	res.To().Params.Add("tag", rc.tag)
	if code >= 200 && code < 300 {
		res.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "bob", Host: "127.0.0.1", Port: rc.port}})
	}
	if sdp != nil {
		ct := sip.ContentTypeHeader("application/sdp")
		res.AppendHeader(&ct)
	}
	rc.send(t, p.Addr("udp"), []byte(res.String()))
}

// callerCall is an INVITE from the caller whose responses the test reads
// later: every 2xx, the final one and those sipgo hands its
// retransmission hook (other forks'), is kept by To tag.
type callerCall struct {
	tx        sip.ClientTransaction
	responses chan *sip.Response
	mu        sync.Mutex
	answers   map[string]*sip.Response
}

// startCall sends invite to addr.
func startCall(t *testing.T, caller *peer, addr string, invite *sip.Request) *callerCall {
	t.Helper()
	invite.SetDestination(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	tx, err := caller.cli.TransactionRequest(ctx, invite)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tx.Terminate)
	cc := &callerCall{tx: tx, responses: make(chan *sip.Response, 32), answers: map[string]*sip.Response{}}
	tx.OnRetransmission(cc.keep)
	go func() {
		for {
			select {
			case r := <-tx.Responses():
				cc.keep(r)
				select {
				case cc.responses <- r:
				default:
				}
			case <-tx.Done():
				return
			}
		}
	}()
	return cc
}

func (cc *callerCall) keep(r *sip.Response) {
	if !r.IsSuccess() {
		return
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if _, ok := cc.answers[toTag(r)]; !ok {
		cc.answers[toTag(r)] = r
	}
}

// answer is the first 2xx from the fork tagged tag, nil before one came.
func (cc *callerCall) answer(tag string) *sip.Response {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.answers[tag]
}

// waitAnswer waits for a 2xx from the fork tagged tag.
func (cc *callerCall) waitAnswer(t *testing.T, tag string) *sip.Response {
	t.Helper()
	waitFor(t, "a 2xx from "+tag+" at the caller", func() bool { return cc.answer(tag) != nil })
	return cc.answer(tag)
}

// waitStatus waits for a response with code at the caller.
func (cc *callerCall) waitStatus(t *testing.T, code int) *sip.Response {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case r := <-cc.responses:
			if r.StatusCode == code {
				return r
			}
		case <-deadline:
			t.Fatalf("no %d at the caller", code)
		}
	}
}
