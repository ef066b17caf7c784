package sipproxy

import (
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
)

// TestDigestURIMismatchSaysWhy: a REGISTER whose credentials were
// computed for another Request-URI is refused with 400 "Digest URI
// Mismatch" (challenge, not fail), and that refusal says why in
// P-Registrar-Error like every other.
func TestDigestURIMismatchSaysWhy(t *testing.T) {
	cfg := testConfig()
	cfg.Auth = authConfig("bob")
	p := startProxy(t, cfg)
	phone := newPeer(t, "phone")
	req := phone.registerReq("bob", 300)
	res := phone.do(t, p.Addr("udp"), req)
	if res.StatusCode != sip.StatusUnauthorized {
		t.Fatalf("first register: %d, want 401", res.StatusCode)
	}
	res = phone.answerChallenge(t, p.Addr("udp"), req, res, testPassword,
		func(_ *digest.Challenge, o *digest.Options) { o.URI = "sip:elsewhere.example" })
	if res.StatusCode != sip.StatusBadRequest {
		t.Fatalf("status %d, want 400", res.StatusCode)
	}
	if h := res.GetHeader("P-Registrar-Error"); h == nil {
		t.Errorf("400 %s refusing the REGISTER carries no P-Registrar-Error", res.Reason)
	}
}
