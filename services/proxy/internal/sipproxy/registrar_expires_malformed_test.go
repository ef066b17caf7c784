package sipproxy

import (
	"strconv"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// TestRegisterMalformedExpires: a malformed expires, as a Contact
// parameter or as the Expires header, counts as 3600 seconds (RFC 3261
// 20.10, 20.19), capped by max_expires like any other value. It used to be
// skipped: a malformed parameter fell back to the header, a malformed
// header to the default.
func TestRegisterMalformedExpires(t *testing.T) {
	const maxExpires, defaultExpires = 7200, 600
	tests := []struct {
		name string
		// param is the Contact's expires parameter ("" for none), header
		// the Expires header's value ("" for none).
		param, header string
		maxExpires    int
		want          int
	}{
		{name: "well-formed parameter", param: "300", header: "120", want: 300},
		{name: "parameter not a number", param: "soon", header: "120", want: 3600},
		{name: "negative parameter", param: "-5", header: "120", want: 3600},
		{name: "signed parameter", param: "+300", header: "120", want: 3600},
		{name: "malformed parameter capped", param: "soon", header: "120", maxExpires: 1800, want: 1800},
		{name: "parameter beyond 2**32-1 is capped", param: "99999999999999999999999", header: "120", want: maxExpires},
		{name: "well-formed header", header: "120", want: 120},
		{name: "header not a number", header: "soon", want: 3600},
		{name: "header an RFC 2543 date", header: "Thu, 01 Dec 2026 16:00:00 GMT", want: 3600},
		{name: "empty header", header: " ", want: 3600},
		{name: "neither", want: defaultExpires},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Auth = authConfig("bob")
			cfg.Registrar.MaxExpires = maxExpires
			if tc.maxExpires != 0 {
				cfg.Registrar.MaxExpires = tc.maxExpires
			}
			cfg.Registrar.DefaultExpires = defaultExpires
			p := startProxy(t, cfg)
			phone := newPeer(t, "phone")
			req := phone.registerReq("bob", 0)
			req.RemoveHeader("Expires")
			if tc.header != "" {
				req.AppendHeader(sip.NewHeader("Expires", tc.header))
			}
			if tc.param != "" {
				req.Contact().Params = sip.HeaderParams{{K: "expires", V: tc.param}}
			}
			res := phone.register(t, p.Addr("udp"), req, testPassword)
			if res.StatusCode != sip.StatusOK {
				t.Fatalf("status %d %s", res.StatusCode, res.Reason)
			}
			ct := res.Contact()
			if ct == nil {
				t.Fatal("200 lists no binding")
			}
			got, err := strconv.Atoi(ct.Params.GetOr("expires", ""))
			if err != nil {
				t.Fatalf("200's contact %s: %v", ct.Value(), err)
			}
			// The 200 gives the seconds left, rounded: a second may pass.
			if got != tc.want && got != tc.want-1 {
				t.Errorf("granted %d s, want %d", got, tc.want)
			}
		})
	}
}
