package sipproxy

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"callgrid.dev/services/proxy/internal/digestauth"
)

const (
	testRealm    = "callgrid.test"
	testPassword = "secret"
)

func testUser(name string) User {
	return User{
		Username:  name,
		HA1MD5:    digestauth.HA1(digestauth.AlgorithmMD5, name, testRealm, testPassword),
		HA1SHA256: digestauth.HA1(digestauth.AlgorithmSHA256, name, testRealm, testPassword),
	}
}

func authConfig(users ...string) AuthConfig {
	a := AuthConfig{Realm: testRealm}
	for _, u := range users {
		a.Users = append(a.Users, testUser(u))
	}
	return a
}

// registerReq builds a REGISTER for user from p with the given expires.
func (p *peer) registerReq(user string, expires int) *sip.Request {
	req := sip.NewRequest(sip.REGISTER, sip.Uri{Scheme: "sip", Host: "localhost"})
	aor := sip.Uri{Scheme: "sip", User: user, Host: "localhost"}
	from := &sip.FromHeader{Address: aor, Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(8))
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: aor, Params: sip.NewParams()})
	req.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: user, Host: "127.0.0.1", Port: p.port}})
	exp := sip.ExpiresHeader(expires)
	req.AppendHeader(&exp)
	return req
}

// register runs REGISTER with digest and returns the final response.
func (p *peer) register(t *testing.T, proxyAddr string, req *sip.Request, password string) *sip.Response {
	t.Helper()
	res := p.do(t, proxyAddr, req)
	if res.StatusCode != sip.StatusUnauthorized {
		return res
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	user := req.To().Address.User
	res, err := p.cli.DoDigestAuth(ctx, req, res, sipgo.DigestAuth{Username: user, Password: password})
	if err != nil {
		t.Fatalf("digest register: %v", err)
	}
	return res
}

func TestRegisterDigest(t *testing.T) {
	tests := []struct {
		name       string
		algorithms []string
		password   string
		expires    int
		wantStatus int
		wantBound  int
	}{
		{name: "sha-256", algorithms: []string{"SHA-256"}, password: testPassword, expires: 300, wantStatus: 200, wantBound: 1},
		{name: "md5", algorithms: []string{"MD5"}, password: testPassword, expires: 300, wantStatus: 200, wantBound: 1},
		{name: "wrong password", algorithms: []string{"SHA-256", "MD5"}, password: "nope", expires: 300, wantStatus: 401, wantBound: 0},
		{name: "interval too brief", algorithms: []string{"MD5"}, password: testPassword, expires: 10, wantStatus: 423, wantBound: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Auth = authConfig("bob")
			cfg.Auth.Algorithms = tc.algorithms
			p := startProxy(t, cfg)
			phone := newPeer(t, "phone")
			res := phone.register(t, p.Addr("udp"), phone.registerReq("bob", tc.expires), tc.password)
			if res.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d", res.StatusCode, tc.wantStatus)
			}
			if tc.wantStatus == 423 && res.GetHeader("Min-Expires") == nil {
				t.Errorf("423 without Min-Expires")
			}
			if got := p.loc.Count(); got != tc.wantBound {
				t.Errorf("bindings %d, want %d", got, tc.wantBound)
			}
			if got := testutil.ToFloat64(p.m.registrations); got != float64(tc.wantBound) {
				t.Errorf("registrations gauge %v, want %d", got, tc.wantBound)
			}
			if tc.wantStatus == 401 {
				if got := testutil.ToFloat64(p.m.authFailures.WithLabelValues("wrong_response")); got != 1 {
					t.Errorf("auth failures %v, want 1", got)
				}
			}
		})
	}
}

func TestRegisterUnregister(t *testing.T) {
	tests := []struct {
		name   string
		remove func(p *peer) *sip.Request
	}{
		{name: "expires zero", remove: func(p *peer) *sip.Request { return p.registerReq("bob", 0) }},
		{name: "wildcard", remove: func(p *peer) *sip.Request {
			req := p.registerReq("bob", 0)
			req.RemoveHeader("Contact")
			req.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Wildcard: true}})
			return req
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Auth = authConfig("bob")
			p := startProxy(t, cfg)
			phone := newPeer(t, "phone")
			second := newPeer(t, "phone2")
			for _, ph := range []*peer{phone, second} {
				if res := ph.register(t, p.Addr("udp"), ph.registerReq("bob", 600), testPassword); res.StatusCode != 200 {
					t.Fatalf("register: %d", res.StatusCode)
				}
			}
			if got := p.loc.Count(); got != 2 {
				t.Fatalf("bindings %d, want 2 contacts for one aor", got)
			}
			res := phone.register(t, p.Addr("udp"), tc.remove(phone), testPassword)
			if res.StatusCode != 200 {
				t.Fatalf("unregister: %d", res.StatusCode)
			}
			want := 1
			if tc.name == "wildcard" {
				want = 0
			}
			if got := p.loc.Count(); got != want {
				t.Errorf("bindings %d, want %d", got, want)
			}
		})
	}
}

func TestNonceReplayRejected(t *testing.T) {
	cfg := testConfig()
	cfg.Auth = authConfig("bob")
	p := startProxy(t, cfg)
	phone := newPeer(t, "phone")
	req := phone.registerReq("bob", 300)
	if res := phone.register(t, p.Addr("udp"), req, testPassword); res.StatusCode != 200 {
		t.Fatalf("register: %d", res.StatusCode)
	}
	// Resend the same credentials (same nonce and nc) in a new transaction.
	replay := req.Clone()
	replay.RemoveHeader("Via")
	replay.CSeq().SeqNo++
	res := phone.do(t, p.Addr("udp"), replay)
	if res.StatusCode != sip.StatusUnauthorized {
		t.Fatalf("replayed credentials got %d, want 401", res.StatusCode)
	}
	if got := testutil.ToFloat64(p.m.authFailures.WithLabelValues("replayed")); got != 1 {
		t.Errorf("replayed failures %v, want 1", got)
	}
}

// contact is a Contact for another device of p's user, with an expires parameter.
func (p *peer) contact(user, device string, expires int) *sip.ContactHeader {
	uri := sip.Uri{Scheme: "sip", User: user, Host: "127.0.0.1", Port: p.port, UriParams: sip.NewParams()}
	uri.UriParams.Add("dev", device)
	return &sip.ContactHeader{Address: uri, Params: sip.HeaderParams{{K: "expires", V: strconv.Itoa(expires)}}}
}

// TestRegisterAllOrNothing: a REGISTER that is refused changes no binding
// (RFC 3261 10.3 steps 6 and 7 check every Contact before any is applied).
func TestRegisterAllOrNothing(t *testing.T) {
	tests := []struct {
		name       string
		build      func(p *peer) *sip.Request
		wantStatus int
	}{
		{name: "second contact too brief", wantStatus: 423, build: func(p *peer) *sip.Request {
			req := p.registerReq("bob", 600)
			req.AppendHeader(p.contact("bob", "b", 10))
			return req
		}},
		{name: "wildcard after a contact", wantStatus: 400, build: func(p *peer) *sip.Request {
			req := p.registerReq("bob", 0)
			req.RemoveHeader("Contact")
			req.AppendHeader(p.contact("bob", "a", 600))
			req.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Wildcard: true}})
			return req
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Auth = authConfig("bob")
			p := startProxy(t, cfg)
			phone := newPeer(t, "phone")
			res := phone.register(t, p.Addr("udp"), tc.build(phone), testPassword)
			if res.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d", res.StatusCode, tc.wantStatus)
			}
			if got := p.loc.Count(); got != 0 {
				t.Errorf("a refused REGISTER left %d bindings", got)
			}
		})
	}
}

// TestRegisterToMustBeOurDomain: the AOR is the To URI, and one of a domain
// we do not serve gets 404 (RFC 3261 10.3 step 5), not a binding filed
// under our domain.
func TestRegisterToMustBeOurDomain(t *testing.T) {
	cfg := testConfig()
	cfg.Auth = authConfig("bob")
	p := startProxy(t, cfg)
	phone := newPeer(t, "phone")
	req := phone.registerReq("bob", 600)
	req.To().Address.Host = "elsewhere.example"
	res := phone.register(t, p.Addr("udp"), req, testPassword)
	if res.StatusCode != sip.StatusNotFound {
		t.Fatalf("status %d, want 404", res.StatusCode)
	}
	if got := p.loc.Count(); got != 0 {
		t.Errorf("bindings %d, want 0", got)
	}
}

// TestRegisterCSeqOrdering: a REGISTER with the Call-ID of a binding and a
// CSeq not above it must not change that binding or any other (RFC 3261
// 10.3 steps 6 and 7: the update is aborted), wildcard removals included.
func TestRegisterCSeqOrdering(t *testing.T) {
	tests := []struct {
		name string
		// seqDelta is the CSeq the REGISTER is authenticated with, relative
		// to the stored one.
		seqDelta   int
		build      func(p *peer) *sip.Request
		wantStatus int
		wantBound  int
	}{
		{name: "older wildcard", seqDelta: -1, wantStatus: 400, wantBound: 1, build: wildcardReq},
		{name: "newer wildcard", seqDelta: 1, wantStatus: 200, wantBound: 0, build: wildcardReq},
		{name: "older with a new contact", seqDelta: -1, wantStatus: 400, wantBound: 1, build: func(p *peer) *sip.Request {
			return devicesReq(p, "a", "b")
		}},
		// Equal is the same request again, a retransmission arriving after
		// the transaction was forgotten: it gets 200 and changes nothing.
		{name: "same cseq with a new contact", seqDelta: 0, wantStatus: 200, wantBound: 1, build: func(p *peer) *sip.Request {
			return devicesReq(p, "a", "b")
		}},
		{name: "newer with a new contact", seqDelta: 1, wantStatus: 200, wantBound: 2, build: func(p *peer) *sip.Request {
			return devicesReq(p, "a", "b")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Auth = authConfig("bob")
			p := startProxy(t, cfg)
			phone := newPeer(t, "phone")
			first := devicesReq(phone, "a")
			first.AppendHeader(&sip.CSeqHeader{SeqNo: 10, MethodName: sip.REGISTER})
			if res := phone.register(t, p.Addr("udp"), first, testPassword); res.StatusCode != 200 {
				t.Fatalf("register: %d", res.StatusCode)
			}
			stored := first.CSeq().SeqNo
			req := tc.build(phone)
			callID := sip.CallIDHeader(first.CallID().Value())
			req.AppendHeader(&callID)
			// The digest retry adds one to the CSeq of the challenged request.
			req.AppendHeader(&sip.CSeqHeader{SeqNo: uint32(int(stored) + tc.seqDelta - 1), MethodName: sip.REGISTER})
			res := phone.register(t, p.Addr("udp"), req, testPassword)
			if res.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d", res.StatusCode, tc.wantStatus)
			}
			if got := p.loc.Count(); got != tc.wantBound {
				t.Errorf("bindings %d, want %d", got, tc.wantBound)
			}
		})
	}
}

// devicesReq is a REGISTER of bob's devices devs, one Contact each. A
// Contact without the dev parameter would equal all of them (RFC 3261
// 19.1.4 ignores a parameter only one URI has).
func devicesReq(p *peer, devs ...string) *sip.Request {
	req := p.registerReq("bob", 600)
	req.RemoveHeader("Contact")
	for _, dev := range devs {
		req.AppendHeader(p.contact("bob", dev, 600))
	}
	return req
}

func wildcardReq(p *peer) *sip.Request {
	req := p.registerReq("bob", 0)
	req.RemoveHeader("Contact")
	req.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Wildcard: true}})
	return req
}
