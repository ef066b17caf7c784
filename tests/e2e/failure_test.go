package e2e

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// dialRaw sends an INVITE with body and returns the final response of a
// failed attempt (nil when it was answered).
func dialRaw(t *testing.T, p *phone, proxy, to string, body []byte) *sip.Response {
	t.Helper()
	ctx := withTimeout(t, 10*time.Second)
	sess, err := p.clients.WriteInvite(ctx, p.inviteRequest(proxy, to, body))
	if err != nil {
		t.Fatalf("invite: %v", err)
	}
	err = sess.WaitAnswer(ctx, sipgo.AnswerOptions{Username: p.user.name, Password: p.user.password})
	var de *sipgo.ErrDialogResponse
	if errors.As(err, &de) {
		return de.Res
	}
	if err != nil {
		t.Fatalf("invite: %v", err)
	}
	_ = sess.Ack(ctx)
	_ = sess.Bye(ctx)
	return nil
}

// TestMediaRefusalsMapToSIP: what the node refuses in the SDP is the
// caller's problem (488, with Warning 305 for codecs), and leaves nothing
// behind.
func TestMediaRefusalsMapToSIP(t *testing.T) {
	s := startStack(t, proxyOpts{}, mediaOpts{})
	callee := newPhone(t, bob, pcmuCodec(), 0, 101, calleeHz)
	callee.register(t, s.proxy.sipAddr)
	caller := newPhone(t, alice, pcmuCodec(), 0, 101, callerHz)
	g729 := strings.ReplaceAll(string(caller.localSDP("sendrecv")), "PCMU/8000", "G729/8000")
	g729 = strings.ReplaceAll(g729, "RTP/AVP 0 101", "RTP/AVP 18 101")
	g729 = strings.ReplaceAll(g729, "rtpmap:0 ", "rtpmap:18 ")
	cases := []struct {
		name        string
		body        string
		wantWarning string
	}{
		{name: "unsupported codec", body: g729, wantWarning: "305"},
		{name: "unparsable sdp", body: "this is not sdp\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := dialRaw(t, caller, s.proxy.sipAddr, "bob", []byte(tc.body))
			if res == nil || res.StatusCode != sip.StatusNotAcceptableHere {
				t.Fatalf("got %v, want 488", res)
			}
			if tc.wantWarning != "" {
				w := res.GetHeader("Warning")
				if w == nil || !strings.HasPrefix(w.Value(), tc.wantWarning) {
					t.Errorf("warning %v, want code %s", w, tc.wantWarning)
				}
			}
			s.node.waitIdle(t)
		})
	}
	select {
	case <-callee.invites:
		t.Error("a refused call reached the callee")
	default:
	}
}

// TestFullFleetAnswers503AndRecovers: with the node's one unit taken, a
// new call gets 503 with Retry-After at once; when the unit is free again
// calls go through.
func TestFullFleetAnswers503AndRecovers(t *testing.T) {
	s := startStack(t, proxyOpts{}, mediaOpts{capacity: 1})
	// PCMU on both sides: a relayed call costs the one unit.
	caller := newPhone(t, alice, pcmuCodec(), 0, 101, callerHz)
	callee := newPhone(t, bob, pcmuCodec(), 0, 101, calleeHz)
	callee.register(t, s.proxy.sipAddr)
	first := connect(t, caller, callee, s.proxy.sipAddr)

	other := newPhone(t, carol, pcmuCodec(), 0, 101, callerHz)
	start := time.Now()
	res := dialRaw(t, other, s.proxy.sipAddr, "bob", other.localSDP("sendrecv"))
	if res == nil || res.StatusCode != sip.StatusServiceUnavailable {
		t.Fatalf("got %v, want 503", res)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("503 took %v", took)
	}
	if ra := res.GetHeader("Retry-After"); ra == nil || ra.Value() != "7" {
		t.Errorf("Retry-After %v, want 7 (media.retry_after)", ra)
	}

	if err := first.out.Bye(withTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("bye: %v", err)
	}
	s.node.waitIdle(t)
	// The proxy's view learns of the free unit at the node's next heartbeat.
	waitFor(t, 5*time.Second, "a call after the fleet freed up", func() bool {
		return dialRaw(t, other, s.proxy.sipAddr, "bob", other.localSDP("sendrecv")) == nil
	})
	s.node.waitIdle(t)
}
