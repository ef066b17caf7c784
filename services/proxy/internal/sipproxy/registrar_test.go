package sipproxy

import (
	"context"
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
