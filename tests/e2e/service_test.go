package e2e

import (
	"testing"
	"time"
)

// serviceRules are the dialplan rules of the local stack's media services.
const serviceRules = "  dialplan:\n" +
	"    - {name: echo, prefix: \"9196\", service: echo}\n" +
	"    - {name: tone, prefix: \"9197\", service: tone}\n"

// TestMediaServices: 9196 answers with the node's echo (the caller hears
// its own tone), 9197 with its 1 kHz tone; a BYE ends the session.
func TestMediaServices(t *testing.T) {
	s := startStack(t, proxyOpts{extra: serviceRules}, mediaOpts{})
	cases := []struct {
		name   string
		number string
		sendHz float64
		wantHz float64
	}{
		{name: "echo", number: "9196", sendHz: calleeHz, wantHz: calleeHz},
		{name: "tone", number: "9197", sendHz: calleeHz, wantHz: 1000},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			caller := newPhone(t, alice, opusCodec(t), 111, 101, tc.sendHz)
			out, err := caller.dial(withTimeout(t, 10*time.Second), s.proxy.sipAddr, tc.number)
			if err != nil {
				t.Fatalf("call %s: %v", tc.number, err)
			}
			caller.rtp.waitTone(t, "caller", tc.wantHz)
			if err := caller.reinvite(withTimeout(t, 10*time.Second), out, "sendrecv"); err != nil {
				t.Fatalf("re-invite to the service: %v", err)
			}
			caller.rtp.reset()
			caller.rtp.waitTone(t, "caller after re-invite", tc.wantHz)
			if err := out.Bye(withTimeout(t, 10*time.Second)); err != nil {
				t.Fatalf("bye: %v", err)
			}
			s.node.waitIdle(t)
		})
	}
}
