package sipproxy

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"callgrid.dev/services/proxy/internal/location"
)

// TestForkSlowContactIsCancelledAfterAnswerElsewhere: a forked branch
// whose phone is slow to send its first provisional (here 1.5 s, within
// BranchTimeout) when another contact answers still gets a CANCEL once
// that provisional arrives (RFC 3261 9.1, 16.7 step 10; Kamailio keeps
// such a branch and cancels it on its first reply), and does not ring on
// after the call was answered elsewhere.
func TestForkSlowContactIsCancelledAfterAnswerElsewhere(t *testing.T) {
	cfg := trustedConfig()
	cfg.BranchTimeout = 10 * time.Second
	store := location.NewMemoryStore(nil)
	p := startProxy(t, cfg, WithLocationStore(store))
	phone := newForkPhone(t, "phone")
	phone.registerQ(t, p, "")
	slow := newUDPEnd(t)
	addr := "127.0.0.1:" + strconv.Itoa(slow.port)
	now := time.Now()
	if _, err := store.Update(context.Background(), "bob@localhost", func(live []location.Binding) ([]location.Binding, error) {
		return append(live, location.Binding{
			AOR: "bob@localhost", Contact: "sip:bob@" + addr, Received: addr, Transport: "UDP",
			CallID: "slow-phone", CSeq: 1, Expires: now.Add(time.Hour), UpdatedAt: now,
		}), nil
	}); err != nil {
		t.Fatal(err)
	}

	caller := newPeer(t, "caller")
	invite := caller.request(sip.INVITE, "sip:bob@localhost", "alice")
	tx, done := inviteUntil(t, caller, p.Addr("udp"), invite, sip.StatusRinging)
	m := slow.next(t, 2*time.Second, func(m sip.Message) bool { r, ok := m.(*sip.Request); return ok && r.IsInvite() })
	if m == nil {
		t.Fatal("the slow contact got no INVITE")
	}
	atSlow := m.(*sip.Request)
	receive(t, "invite at phone", phone.invites)
	phone.answer <- sip.StatusOK
	if got := finalStatus(t, tx, done); got != sip.StatusOK {
		t.Fatalf("caller got %d, want 200", got)
	}
	// The slow phone's 180 comes 1.5 s after the answer elsewhere.
	time.Sleep(1500 * time.Millisecond)
	ringing := sip.NewResponseFromRequest(atSlow, sip.StatusRinging, "Ringing", nil)
	ringing.To().Params.Add("tag", "slow1")
	slow.send(t, p.Addr("udp"), []byte(ringing.String()))
	if c := slow.next(t, 2*time.Second, func(m sip.Message) bool { r, ok := m.(*sip.Request); return ok && r.IsCancel() }); c == nil {
		t.Fatal("the slow contact rang after the call was answered elsewhere and never got a CANCEL")
	}
}
