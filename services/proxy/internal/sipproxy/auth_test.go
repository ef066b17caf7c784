package sipproxy

import (
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// answerChallenge resends req with credentials for the first challenge res
// carries. tweak may change the challenge or the options before the
// response is computed, to build credentials a conforming client would not.
func (p *peer) answerChallenge(t *testing.T, proxyAddr string, req *sip.Request, res *sip.Response, password string, tweak func(*digest.Challenge, *digest.Options)) *sip.Response {
	t.Helper()
	challengeName, credsName := "WWW-Authenticate", "Authorization"
	if res.StatusCode == sip.StatusProxyAuthRequired {
		challengeName, credsName = "Proxy-Authenticate", "Proxy-Authorization"
	}
	h := res.GetHeader(challengeName)
	if h == nil {
		t.Fatalf("%d without %s", res.StatusCode, challengeName)
	}
	chal, err := digest.ParseChallenge(h.Value())
	if err != nil {
		t.Fatalf("parse challenge %q: %v", h.Value(), err)
	}
	opts := digest.Options{
		Method:   string(req.Method),
		URI:      req.Recipient.Addr(),
		Username: req.From().Address.User,
		Password: password,
		Count:    1,
		Cnonce:   "0a4f113b",
	}
	if tweak != nil {
		tweak(chal, &opts)
	}
	creds, err := digest.Digest(chal, opts)
	if err != nil {
		t.Fatal(err)
	}
	req.RemoveHeader(credsName)
	req.AppendHeader(sip.NewHeader(credsName, creds.String()))
	req.CSeq().SeqNo++
	req.RemoveHeader("Via")
	return p.do(t, proxyAddr, req)
}

func TestRegisterDigestChecks(t *testing.T) {
	tests := []struct {
		name       string
		algorithms []string
		tweak      func(*digest.Challenge, *digest.Options)
		wantStatus int
		wantReason string
	}{
		{name: "conforming credentials", wantStatus: 200},
		{
			// The response was computed for another Request-URI (RFC 2617
			// 3.2.2.5, RFC 7616 3.4.6 ask for 400): credentials lifted from
			// a request to somewhere else must not authorise this one.
			name:       "digest uri differs from request-uri",
			tweak:      func(_ *digest.Challenge, o *digest.Options) { o.URI = "sip:elsewhere.example" },
			wantStatus: 400,
		},
		{
			name:       "digest uri with another port",
			tweak:      func(_ *digest.Challenge, o *digest.Options) { o.URI = "sip:localhost:5070" },
			wantStatus: 400,
		},
		{
			// With only SHA-256 offered, an MD5 answer is the downgrade RFC
			// 8760's security considerations warn of: the user's MD5 HA1,
			// still provisioned, must not count.
			name:       "algorithm that was not offered",
			algorithms: []string{"SHA-256"},
			tweak:      func(c *digest.Challenge, _ *digest.Options) { c.Algorithm = "MD5" },
			wantStatus: 401,
			wantReason: "algorithm_not_offered",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Auth = authConfig("bob")
			cfg.Auth.Algorithms = tc.algorithms
			p := startProxy(t, cfg)
			phone := newPeer(t, "phone")
			req := phone.registerReq("bob", 300)
			res := phone.do(t, p.Addr("udp"), req)
			if res.StatusCode != sip.StatusUnauthorized {
				t.Fatalf("first register: %d, want 401", res.StatusCode)
			}
			res = phone.answerChallenge(t, p.Addr("udp"), req, res, testPassword, tc.tweak)
			if res.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d", res.StatusCode, tc.wantStatus)
			}
			wantBound := 0
			if tc.wantStatus == 200 {
				wantBound = 1
			}
			if got := p.loc.Count(); got != wantBound {
				t.Errorf("bindings %d, want %d", got, wantBound)
			}
			if tc.wantReason != "" {
				if got := testutil.ToFloat64(p.m.authFailures.WithLabelValues(tc.wantReason)); got != 1 {
					t.Errorf("auth failures %q = %v, want 1", tc.wantReason, got)
				}
			}
		})
	}
}

// TestInviteFromMustBeAuthenticatedAOR: the authenticated user vouches for
// the From of their own AOR, not for the same user name at a domain we do
// not serve.
func TestInviteFromMustBeAuthenticatedAOR(t *testing.T) {
	tests := []struct {
		name       string
		fromHost   string
		wantStatus int
	}{
		{name: "own domain", fromHost: "localhost", wantStatus: 404},
		{name: "foreign domain", fromHost: "bank.example", wantStatus: 403},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Auth = authConfig("alice")
			p := startProxy(t, cfg)
			caller := newPeer(t, "caller")
			invite := caller.request(sip.INVITE, "sip:nobody@localhost", "alice")
			invite.From().Address.Host = tc.fromHost
			res := caller.do(t, p.Addr("udp"), invite)
			if res.StatusCode != sip.StatusProxyAuthRequired {
				t.Fatalf("first invite: %d, want 407", res.StatusCode)
			}
			// The ACK for the 407 is sipgo's business; the retry is a new transaction.
			res = caller.answerChallenge(t, p.Addr("udp"), invite, res, testPassword, nil)
			if res.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d", res.StatusCode, tc.wantStatus)
			}
		})
	}
}
