package sipproxy

import (
	"encoding/hex"
	"hash/fnv"
	"strconv"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// referenceLoopHash is the loop hash as the standard library's FNV-1a
// computes it over the same fields: replicas of different versions must
// agree on it to detect a loop between them.
func referenceLoopHash(req *sip.Request) string {
	h := fnv.New64a()
	write := func(s string) {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	write(req.Recipient.String())
	write(req.From().Params.GetOr("tag", ""))
	write(req.To().Params.GetOr("tag", ""))
	write(req.CallID().Value())
	write(strconv.FormatUint(uint64(req.CSeq().SeqNo), 10))
	for _, name := range []string{"Proxy-Require", "Proxy-Authorization"} {
		for _, hd := range req.GetHeaders(name) {
			write(hd.Value())
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// benchInviteWith parses the benchmark INVITE with r's replacements made.
func benchInviteWith(t *testing.T, r *strings.Replacer) *sip.Request {
	t.Helper()
	msg, err := sip.ParseMessage([]byte(r.Replace(benchInvite)))
	if err != nil {
		t.Fatal(err)
	}
	return msg.(*sip.Request)
}

func TestLoopHash(t *testing.T) {
	tests := []struct {
		name    string
		replace *strings.Replacer
	}{
		{name: "benchmark invite", replace: strings.NewReplacer()},
		{name: "uri parameters and to tag", replace: strings.NewReplacer(
			"INVITE sip:15550001@127.0.0.1:5060", "INVITE sip:15550001@127.0.0.1:5060;user=phone;transport=udp",
			"To: <sip:15550001@127.0.0.1:5060>", "To: <sip:15550001@127.0.0.1:5060>;tag=xyz")},
		{name: "proxy headers", replace: strings.NewReplacer(
			"Subject: Performance Test", "Proxy-Require: foo\r\nProxy-Authorization: Digest username=\"a\"\r\nproxy-require: bar")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := benchInviteWith(t, tc.replace)
			if got, want := loopHash(req), referenceLoopHash(req); got != want {
				t.Errorf("loop hash %s, want %s", got, want)
			}
		})
	}
}

func TestLoopHashAllocations(t *testing.T) {
	req := benchInviteWith(t, strings.NewReplacer())
	// The hex string, the hasher the URI writes into and sipgo's text of
	// the URI's port; the old hash.Hash version made 8.
	if n := testing.AllocsPerRun(100, func() { loopHash(req) }); n > 3 {
		t.Errorf("loopHash allocates %v times, want at most 3", n)
	}
}

// The 100 the proxy builds itself says what sipgo's NewResponseFromRequest
// (with our Server header) would.
func TestTryingResponse(t *testing.T) {
	s := benchServer(t)
	tests := []struct {
		name    string
		replace *strings.Replacer
	}{
		{name: "benchmark invite", replace: strings.NewReplacer()},
		{name: "rport and timestamp", replace: strings.NewReplacer(
			"branch=z9hG4bK-4242-1-0", "branch=z9hG4bK-4242-1-0;rport\r\nVia: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK-upstream",
			"Subject: Performance Test", "Timestamp: 54")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := benchInviteWith(t, tc.replace)
			req.SetTransport("UDP")
			req.SetSource("192.0.2.7:40000")
			want := sip.NewResponseFromRequest(req, sip.StatusTrying, "Trying", nil)
			want.AppendHeader(sip.NewHeader("Server", s.cfg.UserAgent))
			got := s.tryingResponse(req)
			if got.String() != want.String() {
				t.Errorf("100:\n%s\nwant:\n%s", got, want)
			}
			if got.Destination() != req.Source() {
				t.Errorf("100 goes to %s, want the source %s", got.Destination(), req.Source())
			}
			if v := req.Via(); v.Params.Has("received") {
				t.Errorf("the request's own Via was edited: %s", v)
			}
		})
	}
}
