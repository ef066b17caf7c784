package sipproxy

import (
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// TestForkTimerCOnRingingContactRingsNextQGroup: Timer C on a contact that
// rang is a 408 of its branch (RFC 3261 16.8), a failure of its q group
// like a 486, after which the next group rings (16.6 lets the proxy go on
// to the next targets; Kamailio's t_next_contacts does so on the timeout,
// which is how a user's phone falls over to voicemail). It differs from
// gateway failover, which never rings a second callee once one rang.
func TestForkTimerCOnRingingContactRingsNextQGroup(t *testing.T) {
	cfg := trustedConfig()
	cfg.InviteTimeout = time.Second
	cfg.BranchTimeout = 5 * time.Second
	p := startProxy(t, cfg)
	desk, voicemail := newForkPhone(t, "desk"), newForkPhone(t, "voicemail")
	desk.registerQ(t, p, "1")
	voicemail.registerQ(t, p, "0.5")

	caller := newPeer(t, "caller")
	invite := caller.request(sip.INVITE, "sip:bob@localhost", "alice")
	tx, done := inviteUntil(t, caller, p.Addr("udp"), invite, sip.StatusRinging)
	receive(t, "invite at desk", desk.invites)
	nothing(t, "invite at voicemail while the desk rings", voicemail.invites, 300*time.Millisecond)
	if got := reasonOf(receive(t, "timer c cancel at desk", desk.cancels)); got != "" {
		t.Errorf("the Timer C CANCEL has Reason %q, want none", got)
	}
	receive(t, "invite at voicemail", voicemail.invites)
	voicemail.answer <- sip.StatusOK
	if got := finalStatus(t, tx, done); got != sip.StatusOK {
		t.Fatalf("caller got %d, want voicemail's 200", got)
	}
	noPumpsLeft(t, p)
}
