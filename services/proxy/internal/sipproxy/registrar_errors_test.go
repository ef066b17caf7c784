package sipproxy

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"callgrid.dev/services/proxy/internal/location"
)

// failingStore is a location store whose every update fails with err.
type failingStore struct {
	*location.MemoryStore
	err error
}

func (f failingStore) Update(context.Context, string, location.Change) ([]location.Binding, error) {
	return nil, fmt.Errorf("update bindings: %w", f.err)
}

// TestRegistrarRefusalsSayWhy: every refusal of a REGISTER carries
// P-Registrar-Error with its reason, as Kamailio's registrar sends it,
// and keeps its status and phrase; a 200, a challenge and a refusal of
// another request carry none.
func TestRegistrarRefusalsSayWhy(t *testing.T) {
	tests := []struct {
		name string
		// store, when set, replaces the in-memory location store.
		store       location.Store
		maxContacts int
		// send sends the REGISTER (or other request) and returns its answer.
		send       func(t *testing.T, p *runningProxy, phone *peer) *sip.Response
		wantStatus int
		wantPhrase string
		// wantReason is the P-Registrar-Error, "" for none.
		wantReason string
	}{
		{
			name: "too many contacts", maxContacts: 1,
			send: func(t *testing.T, p *runningProxy, phone *peer) *sip.Response {
				return phone.register(t, p.Addr("udp"), devicesReq(phone, "a", "b"), testPassword)
			},
			wantStatus: 503, wantPhrase: "Too Many Registered Contacts", wantReason: "Too many registered contacts",
		},
		{
			name: "out of order cseq",
			send: func(t *testing.T, p *runningProxy, phone *peer) *sip.Response {
				if res := phone.register(t, p.Addr("udp"), registerFrom(phone, "ooo@test", 10, "a", 600), testPassword); res.StatusCode != 200 {
					t.Fatalf("first register: %d", res.StatusCode)
				}
				return phone.register(t, p.Addr("udp"), registerFrom(phone, "ooo@test", 5, "a", 600), testPassword)
			},
			wantStatus: 400, wantPhrase: "Bad Request", wantReason: "Out of order CSeq",
		},
		{
			name: "expires below the minimum",
			send: func(t *testing.T, p *runningProxy, phone *peer) *sip.Response {
				return phone.register(t, p.Addr("udp"), phone.registerReq("bob", 10), testPassword)
			},
			wantStatus: 423, wantPhrase: "Interval Too Brief", wantReason: "Expires below the minimum",
		},
		{
			name: "wildcard with expires",
			send: func(t *testing.T, p *runningProxy, phone *peer) *sip.Response {
				req := wildcardReq(phone)
				exp := sip.ExpiresHeader(600)
				req.ReplaceHeader(&exp)
				return phone.register(t, p.Addr("udp"), req, testPassword)
			},
			wantStatus: 400, wantPhrase: "Bad Request", wantReason: "Invalid expires with * contact",
		},
		{
			name: "wildcard among contacts",
			send: func(t *testing.T, p *runningProxy, phone *peer) *sip.Response {
				req := wildcardReq(phone)
				req.AppendHeader(phone.contact("bob", "a", 0))
				return phone.register(t, p.Addr("udp"), req, testPassword)
			},
			wantStatus: 400, wantPhrase: "Bad Request", wantReason: "* contact among others",
		},
		{
			name: "location unavailable", store: failingStore{location.NewMemoryStore(nil), location.ErrUnavailable},
			send: func(t *testing.T, p *runningProxy, phone *peer) *sip.Response {
				return phone.register(t, p.Addr("udp"), phone.registerReq("bob", 600), testPassword)
			},
			wantStatus: 503, wantPhrase: "Service Unavailable", wantReason: "Location service unavailable",
		},
		{
			name: "lost to concurrent registrations", store: failingStore{location.NewMemoryStore(nil), location.ErrConflict},
			send: func(t *testing.T, p *runningProxy, phone *peer) *sip.Response {
				return phone.register(t, p.Addr("udp"), phone.registerReq("bob", 600), testPassword)
			},
			wantStatus: 500, wantPhrase: "Server Internal Error", wantReason: "Concurrent registrations, retry",
		},
		{
			name: "too large to store", store: failingStore{location.NewMemoryStore(nil), location.ErrTooLarge},
			send: func(t *testing.T, p *runningProxy, phone *peer) *sip.Response {
				return phone.register(t, p.Addr("udp"), phone.registerReq("bob", 600), testPassword)
			},
			wantStatus: 413, wantPhrase: "Request Entity Too Large", wantReason: "Registration too large to store",
		},
		{
			name: "domain not served",
			send: func(t *testing.T, p *runningProxy, phone *peer) *sip.Response {
				req := phone.registerReq("bob", 600)
				req.To().Address.Host = "elsewhere.example"
				return phone.register(t, p.Addr("udp"), req, testPassword)
			},
			wantStatus: 404, wantPhrase: "Not Found", wantReason: "Domain not served here",
		},
		{
			name: "another user's aor",
			send: func(t *testing.T, p *runningProxy, phone *peer) *sip.Response {
				req := phone.registerReq("alice", 600)
				res := phone.do(t, p.Addr("udp"), req)
				if res.StatusCode != sip.StatusUnauthorized {
					t.Fatalf("no challenge: %d", res.StatusCode)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				res, err := phone.cli.DoDigestAuth(ctx, req, res, sipgo.DigestAuth{Username: "bob", Password: testPassword})
				if err != nil {
					t.Fatalf("digest register: %v", err)
				}
				return res
			},
			wantStatus: 403, wantPhrase: "Forbidden", wantReason: "AOR not of the authenticated user",
		},
		{
			name: "registered",
			send: func(t *testing.T, p *runningProxy, phone *peer) *sip.Response {
				return phone.register(t, p.Addr("udp"), phone.registerReq("bob", 600), testPassword)
			},
			wantStatus: 200, wantPhrase: "OK",
		},
		{
			name: "challenged",
			send: func(t *testing.T, p *runningProxy, phone *peer) *sip.Response {
				return phone.do(t, p.Addr("udp"), phone.registerReq("bob", 600))
			},
			wantStatus: 401, wantPhrase: "Unauthorized",
		},
		{
			name: "another request refused",
			send: func(t *testing.T, p *runningProxy, phone *peer) *sip.Response {
				return phone.do(t, p.Addr("udp"), phone.request(sip.PUBLISH, "sip:"+p.Addr("udp"), "bob"))
			},
			wantStatus: 405, wantPhrase: "Method Not Allowed",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Auth = authConfig("bob", "alice")
			if tc.maxContacts > 0 {
				cfg.Registrar.MaxContacts = tc.maxContacts
			}
			var opts []Option
			if tc.store != nil {
				opts = append(opts, WithLocationStore(tc.store))
			}
			p := startProxy(t, cfg, opts...)
			phone := newPeer(t, "phone")
			res := tc.send(t, p, phone)
			if res.StatusCode != tc.wantStatus || res.Reason != tc.wantPhrase {
				t.Fatalf("answer %d %q, want %d %q", res.StatusCode, res.Reason, tc.wantStatus, tc.wantPhrase)
			}
			got := ""
			if h := res.GetHeader("P-Registrar-Error"); h != nil {
				got = h.Value()
			}
			if got != tc.wantReason {
				t.Errorf("P-Registrar-Error %q, want %q", got, tc.wantReason)
			}
		})
	}
}
