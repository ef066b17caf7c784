package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/emiago/sipgo"
)

// finalStatus is the status of a failed call attempt, or 0.
func finalStatus(err error) int {
	var de *sipgo.ErrDialogResponse
	if errors.As(err, &de) {
		return de.Res.StatusCode
	}
	return 0
}

// TestUnansweredCallsReleaseTheirSession: whatever ends a call before it
// is answered (the callee refuses, the caller cancels, nobody answers)
// leaves the node with no session and no port, and the call-ended event
// names the cause.
func TestUnansweredCallsReleaseTheirSession(t *testing.T) {
	s := startStack(t, proxyOpts{}, mediaOpts{})
	ended := s.nats.callEnded(t)
	callee := newPhone(t, bob, pcmuCodec(), 0, 101, calleeHz)
	callee.register(t, s.proxy.sipAddr)
	caller := newPhone(t, alice, opusCodec(t), 111, 101, callerHz)

	cases := []struct {
		name      string
		behaviour calleeBehaviour
		// cancelAfter cancels the call from the caller's side.
		cancelAfter time.Duration
		wantStatus  int
		wantCause   string
	}{
		{name: "busy", behaviour: calleeBehaviour{reject: 486}, wantStatus: 486, wantCause: "486"},
		{name: "declined", behaviour: calleeBehaviour{reject: 603}, wantStatus: 603, wantCause: "603"},
		{name: "cancelled", behaviour: calleeBehaviour{neverAnswer: true}, cancelAfter: 400 * time.Millisecond, wantCause: "cancel"},
		// The proxy's Timer C is 3 s in these tests.
		{name: "no answer", behaviour: calleeBehaviour{neverAnswer: true}, wantStatus: 408, wantCause: "408"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			callee.behaviour.Store(&tc.behaviour)
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			if tc.cancelAfter > 0 {
				var stop context.CancelFunc
				ctx, stop = context.WithTimeout(ctx, tc.cancelAfter)
				defer stop()
			}
			sess, err := caller.dial(ctx, s.proxy.sipAddr, "bob")
			if err == nil {
				t.Fatal("call was answered")
			}
			if tc.wantStatus != 0 && finalStatus(err) != tc.wantStatus {
				t.Fatalf("caller got %v, want %d", err, tc.wantStatus)
			}
			if sess != nil {
				callID := sess.InviteRequest.CallID().Value()
				if ev := waitCallEnded(t, ended, callID); ev.GetCause() != tc.wantCause {
					t.Errorf("cause %q, want %q", ev.GetCause(), tc.wantCause)
				}
			}
			s.node.waitIdle(t)
		})
	}
}

// TestGatewayFailoverKeepsTheSession: the first gateway answers 503, the
// second takes the call with the very same SDP (one session on the node),
// and audio flows.
func TestGatewayFailoverKeepsTheSession(t *testing.T) {
	gw1 := newPhone(t, user{"gw1", ""}, pcmuCodec(), 0, 101, calleeHz)
	// Refused before ringing: once a branch has an early dialog the
	// proxy does not fail over (the caller may have heard ringback).
	gw1.behaviour.Store(&calleeBehaviour{reject: 503, noRinging: true})
	gw2 := newPhone(t, user{"gw2", ""}, pcmuCodec(), 0, 101, calleeHz)
	extra := fmt.Sprintf("  gateway_groups:\n    - name: pstn\n      policy: round_robin\n      gateways:\n"+
		"        - {name: gw1, addr: \"127.0.0.1:%d\"}\n        - {name: gw2, addr: \"127.0.0.1:%d\"}\n"+
		"  dialplan:\n    - {name: pstn, prefix: \"555\", group: pstn}\n", gw1.port, gw2.port)
	s := startStack(t, proxyOpts{extra: extra}, mediaOpts{})
	caller := newPhone(t, alice, opusCodec(t), 111, 101, callerHz)

	out, err := caller.dial(withTimeout(t, 15*time.Second), s.proxy.sipAddr, "5550100")
	if err != nil {
		t.Fatalf("call through failover: %v", err)
	}
	first := receiveWithin(t, "invite at gw1", gw1.invites, 5*time.Second)
	second := receiveWithin(t, "invite at gw2", gw2.invites, 5*time.Second)
	if !bytes.Equal(first.Body(), second.Body()) {
		t.Errorf("failover changed the SDP:\n%s\nvs\n%s", first.Body(), second.Body())
	}
	receiveWithin(t, "answer at gw2", gw2.answered, 5*time.Second)
	gw2.rtp.waitTone(t, "gw2", callerHz)
	caller.rtp.waitTone(t, "caller", calleeHz)
	if got := s.node.gauge(t, "callgrid_media_sessions_active"); got != 1 {
		t.Errorf("node holds %v sessions, want 1", got)
	}
	if err := out.Bye(withTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("bye: %v", err)
	}
	s.node.waitIdle(t)
}
