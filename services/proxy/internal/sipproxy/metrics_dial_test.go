package sipproxy

import (
	"maps"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// postDialCounts reads how many calls the post-dial delay histogram timed,
// by outcome, and their summed delay.
func postDialCounts(t *testing.T, p *runningProxy) (counts map[string]uint64, sum float64) {
	t.Helper()
	families, err := p.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts = map[string]uint64{}
	for _, f := range families {
		if f.GetName() != "sip_proxy_post_dial_delay_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" {
					counts[l.GetValue()] += m.GetHistogram().GetSampleCount()
				}
			}
			sum += m.GetHistogram().GetSampleSum()
		}
	}
	return counts, sum
}

// A new call is timed once, at its first response past 100 Trying: a
// ringing call as progress however it ends, a rejected one as failed. A
// re-INVITE is no dialling and is not timed.
func TestPostDialDelayIsTimedOncePerCall(t *testing.T) {
	p := startProxy(t, trustedConfig())
	bob := newCallee(t, 20*time.Millisecond)
	if res := bob.register(t, p.Addr("udp"), bob.registerReq("bob", 600), testPassword); res.StatusCode != 200 {
		t.Fatalf("register: %d", res.StatusCode)
	}
	caller := newPeer(t, "caller")

	invite := caller.request(sip.INVITE, "sip:bob@localhost", "alice")
	res := caller.do(t, p.Addr("udp"), invite)
	if res.StatusCode != 200 {
		t.Fatalf("invite: %d", res.StatusCode)
	}
	ack := inDialog(sip.ACK, invite, res, invite.CSeq().SeqNo)
	ack.SetDestination(routeDestination(ack))
	if err := caller.cli.WriteRequest(ack); err != nil {
		t.Fatal(err)
	}
	reinvite := inDialog(sip.INVITE, invite, res, invite.CSeq().SeqNo+1)
	if res := caller.do(t, routeDestination(reinvite), reinvite); res.StatusCode != 200 {
		t.Fatalf("re-invite: %d", res.StatusCode)
	}
	if res := caller.do(t, p.Addr("udp"), caller.request(sip.INVITE, "sip:nobody@localhost", "alice")); res.StatusCode != 404 {
		t.Fatalf("invite to nobody: %d, want 404", res.StatusCode)
	}

	// Observed once the response is sent, so the caller may read it first.
	want := map[string]uint64{dialProgress: 1, dialAnswered: 0, dialFailed: 1}
	counts, sum := postDialCounts(t, p)
	for deadline := time.Now().Add(2 * time.Second); !maps.Equal(counts, want) && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
		counts, sum = postDialCounts(t, p)
	}
	for outcome, n := range want {
		if counts[outcome] != n {
			t.Errorf("%s: %d calls timed, want %d (all: %v)", outcome, counts[outcome], n, counts)
		}
	}
	if sum <= 0 || sum > 10 {
		t.Errorf("summed delay %.3fs, want the few ms the calls took", sum)
	}
}
