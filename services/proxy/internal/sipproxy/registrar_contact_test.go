package sipproxy

import (
	"context"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// contactHeader is a Contact of the URI written exactly as raw: the
// REGISTER carries it to the registrar as written, case and escapes kept.
func contactHeader(t *testing.T, raw string) *sip.ContactHeader {
	t.Helper()
	var uri sip.Uri
	if err := sip.ParseUri(raw, &uri); err != nil {
		t.Fatalf("parse %q: %v", raw, err)
	}
	return &sip.ContactHeader{Address: uri}
}

// registerContact registers raw as bob's only Contact with expires.
func registerContact(t *testing.T, p *runningProxy, phone *peer, raw string, expires int) *sip.Response {
	t.Helper()
	req := phone.registerReq("bob", expires)
	req.RemoveHeader("Contact")
	req.AppendHeader(contactHeader(t, raw))
	res := phone.register(t, p.Addr("udp"), req, testPassword)
	if res.StatusCode != sip.StatusOK {
		t.Fatalf("register %s: %d %s", raw, res.StatusCode, res.Reason)
	}
	return res
}

// TestRegisterEqualContactsShareOneBinding: a phone re-registering its
// Contact written differently but equal by RFC 3261 19.1.4 refreshes its
// one binding, which then holds the Contact as last sent, and a removal
// written a third way removes it. Contacts that differ by those rules stay
// apart.
func TestRegisterEqualContactsShareOneBinding(t *testing.T) {
	tests := []struct {
		name string
		// first and then are registered in turn; remove, when set, then
		// unregisters with expires 0.
		first, then, remove string
		// wantBound is the bindings after then.
		wantBound int
	}{
		{name: "transport case",
			first: "sip:alice@192.0.2.1:5060;transport=UDP", then: "sip:alice@192.0.2.1:5060;transport=udp",
			remove: "sip:alice@192.0.2.1:5060;Transport=Udp", wantBound: 1},
		{name: "parameters reordered",
			first: "sip:alice@192.0.2.1:5060;transport=udp;ob", then: "sip:alice@192.0.2.1:5060;ob;transport=udp",
			remove: "sip:alice@192.0.2.1:5060;transport=UDP", wantBound: 1},
		{name: "host case",
			first: "sip:alice@Phone.Example.COM:5062", then: "sip:alice@phone.example.com:5062",
			remove: "sip:alice@PHONE.example.com:5062", wantBound: 1},
		{name: "escaped user",
			first: "sip:%61lice@192.0.2.1:5060", then: "sip:alice@192.0.2.1:5060",
			remove: "sip:%61%6c%69ce@192.0.2.1:5060", wantBound: 1},
		{name: "a parameter only in one is ignored",
			first: "sip:alice@192.0.2.1:5060", then: "sip:alice@192.0.2.1:5060;line=abc",
			remove: "sip:alice@192.0.2.1:5060;rinstance=x", wantBound: 1},
		{name: "removal written otherwise",
			first: "sip:alice@192.0.2.1:5060;transport=UDP", then: "sip:alice@192.0.2.1:5060;transport=UDP",
			remove: "sip:alice@192.0.2.1:5060;transport=udp", wantBound: 1},
		{name: "user case differs",
			first: "sip:alice@192.0.2.1:5060", then: "sip:Alice@192.0.2.1:5060", wantBound: 2},
		{name: "absent port is not 5060",
			first: "sip:alice@192.0.2.1", then: "sip:alice@192.0.2.1:5060", wantBound: 2},
		{name: "transport in one only",
			first: "sip:alice@192.0.2.1:5060", then: "sip:alice@192.0.2.1:5060;transport=udp", wantBound: 2},
		{name: "maddr in one only",
			first: "sip:alice@192.0.2.1:5060", then: "sip:alice@192.0.2.1:5060;maddr=192.0.2.9", wantBound: 2},
		{name: "different headers",
			first: "sip:alice@192.0.2.1:5060", then: "sip:alice@192.0.2.1:5060?subject=x", wantBound: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Auth = authConfig("bob")
			p := startProxy(t, cfg)
			phone := newPeer(t, "phone")
			registerContact(t, p, phone, tc.first, 600)
			res := registerContact(t, p, phone, tc.then, 600)
			if got := p.loc.Count(); got != tc.wantBound {
				t.Fatalf("bindings %d after %s then %s, want %d", got, tc.first, tc.then, tc.wantBound)
			}
			if tc.wantBound == 1 {
				// The binding keeps the Contact as the phone last sent it.
				want := contactHeader(t, tc.then).Address.String()
				if got := res.GetHeaders("Contact"); len(got) != 1 || !strings.HasPrefix(got[0].Value(), "<"+want+">") {
					t.Errorf("200 contacts %v, want <%s>", got, want)
				}
			}
			if tc.remove == "" {
				return
			}
			res = registerContact(t, p, phone, tc.remove, 0)
			if got := p.loc.Count(); got != 0 {
				bs, _ := p.loc.Lookup(context.Background(), "bob@localhost")
				t.Fatalf("removing %s left %d bindings: %+v", tc.remove, got, bs)
			}
			if got := res.GetHeaders("Contact"); len(got) != 0 {
				t.Errorf("200 to the removal lists %v", got)
			}
		})
	}
}

// TestURIEqual: RFC 3261 19.1.4's examples, both ways round, and the rules
// the registrar leans on.
func TestURIEqual(t *testing.T) {
	tests := []struct {
		name string
		a, b string
		want bool
	}{
		// 19.1.4's equivalent URIs.
		{name: "rfc escaped user and case", a: "sip:%61lice@atlanta.com;transport=TCP", b: "sip:alice@AtLanTa.CoM;Transport=tcp", want: true},
		{name: "rfc unknown param", a: "sip:carol@chicago.com", b: "sip:carol@chicago.com;newparam=5", want: true},
		{name: "rfc security param", a: "sip:carol@chicago.com;newparam=5", b: "sip:carol@chicago.com;security=on", want: true},
		{name: "rfc params reordered", a: "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com", b: "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com", want: true},
		{name: "rfc headers reordered", a: "sip:alice@atlanta.com?subject=project%20x&priority=urgent", b: "sip:alice@atlanta.com?priority=urgent&subject=project%20x", want: true},
		// 19.1.4's URIs that are not.
		{name: "rfc user case", a: "SIP:ALICE@AtLanTa.CoM;Transport=udp", b: "sip:alice@AtLanTa.CoM;Transport=UDP"},
		{name: "rfc absent port", a: "sip:bob@biloxi.com", b: "sip:bob@biloxi.com:5060"},
		{name: "rfc absent transport", a: "sip:bob@biloxi.com", b: "sip:bob@biloxi.com;transport=udp"},
		{name: "rfc port and transport", a: "sip:bob@biloxi.com", b: "sip:bob@biloxi.com:6000;transport=tcp"},
		{name: "rfc header in one", a: "sip:carol@chicago.com", b: "sip:carol@chicago.com?Subject=next%20meeting"},
		{name: "rfc name and its address", a: "sip:bob@phone21.boxesbybob.com", b: "sip:bob@192.0.2.4"},
		// The rules one by one.
		{name: "scheme case", a: "SIP:alice@192.0.2.1", b: "sip:alice@192.0.2.1", want: true},
		{name: "sip is not sips", a: "sips:alice@192.0.2.1", b: "sip:alice@192.0.2.1"},
		{name: "password case", a: "sip:alice:Secret@192.0.2.1", b: "sip:alice:secret@192.0.2.1"},
		{name: "user in one only", a: "sip:192.0.2.1", b: "sip:alice@192.0.2.1"},
		{name: "ports differ", a: "sip:alice@192.0.2.1:5060", b: "sip:alice@192.0.2.1:5062"},
		{name: "transport values differ", a: "sip:alice@192.0.2.1;transport=udp", b: "sip:alice@192.0.2.1;transport=tcp"},
		{name: "user param in one", a: "sip:+15551234@192.0.2.1", b: "sip:+15551234@192.0.2.1;user=phone"},
		{name: "ttl param in one", a: "sip:alice@192.0.2.1", b: "sip:alice@192.0.2.1;ttl=15"},
		{name: "method param in one", a: "sip:alice@192.0.2.1;method=INVITE", b: "sip:alice@192.0.2.1"},
		{name: "maddr in one", a: "sip:alice@192.0.2.1", b: "sip:alice@192.0.2.1;maddr=239.255.255.1"},
		{name: "other param values differ", a: "sip:alice@192.0.2.1;ob;line=a", b: "sip:alice@192.0.2.1;line=b"},
		{name: "other param values differ in case", a: "sip:alice@192.0.2.1;line=ABC", b: "sip:alice@192.0.2.1;LINE=abc", want: true},
		{name: "escaped param value", a: "sip:alice@192.0.2.1;line=%61b", b: "sip:alice@192.0.2.1;line=ab", want: true},
		{name: "header values differ", a: "sip:alice@192.0.2.1?subject=a", b: "sip:alice@192.0.2.1?subject=b"},
		{name: "header name case", a: "sip:alice@192.0.2.1?Subject=a", b: "sip:alice@192.0.2.1?subject=a", want: true},
		{name: "escaped hex case", a: "sip:a%2fb@192.0.2.1", b: "sip:a%2Fb@192.0.2.1", want: true},
		{name: "reserved escape is not its character", a: "sip:a%3bb@192.0.2.1", b: "sip:a;b@192.0.2.1"},
		{name: "escaped user stays case-sensitive", a: "sip:%41lice@192.0.2.1", b: "sip:alice@192.0.2.1"},
		{name: "malformed escape as written", a: "sip:a%zz@192.0.2.1", b: "sip:a%zz@192.0.2.1;x=1", want: true},
		{name: "ipv6 written two ways", a: "sip:alice@[2001:db8::1]:5060", b: "sip:alice@[2001:DB8:0::1]:5060", want: true},
		{name: "other scheme as written", a: "tel:+15551234", b: "tel:+15551234", want: true},
		{name: "other scheme differs", a: "tel:+15551234", b: "tel:+15551235"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var a, b sip.Uri
			if err := sip.ParseUri(tc.a, &a); err != nil {
				t.Fatalf("parse %q: %v", tc.a, err)
			}
			if err := sip.ParseUri(tc.b, &b); err != nil {
				t.Fatalf("parse %q: %v", tc.b, err)
			}
			if got := uriEqual(&a, &b); got != tc.want {
				t.Errorf("uriEqual(%s, %s) = %v, want %v", tc.a, tc.b, got, tc.want)
			}
			if got := uriEqual(&b, &a); got != tc.want {
				t.Errorf("uriEqual(%s, %s) = %v, want %v", tc.b, tc.a, got, tc.want)
			}
		})
	}
}

// FuzzURIEqual: equality is reflexive and symmetric on any two URIs that
// parse, and holds between a URI and itself rewritten the ways 19.1.4
// ignores: parameters and headers reversed, names, scheme and host in
// upper case, and unreserved characters of the user escaped.
func FuzzURIEqual(f *testing.F) {
	seeds := [][2]string{
		{"sip:alice@192.0.2.1:5060;transport=UDP", "sip:alice@192.0.2.1:5060;transport=udp"},
		{"sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"},
		{"sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com", "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com"},
		{"sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"},
		{"sips:alice:pw@[2001:db8::1]:5061;maddr=x;lr?h=%2f&g=1", "tel:+1555"},
		{"sip:a%zz%4@h;%41=%", "sip:a@h;a"},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, rawA, rawB string) {
		var a, b sip.Uri
		if sip.ParseUri(rawA, &a) != nil || sip.ParseUri(rawB, &b) != nil {
			return
		}
		if !uriEqual(&a, &a) {
			t.Fatalf("%q not equal to itself", rawA)
		}
		if uriEqual(&a, &b) != uriEqual(&b, &a) {
			t.Fatalf("uriEqual(%q, %q) not symmetric", rawA, rawB)
		}
		if a.Raw() != "" || a.Wildcard {
			return
		}
		other := rewrittenEqual(&a)
		if !uriEqual(&a, other) || !uriEqual(other, &a) {
			t.Fatalf("%q not equal to %q", a.String(), other.String())
		}
	})
}

// rewrittenEqual is u written another way that RFC 3261 19.1.4 makes
// equal to it.
func rewrittenEqual(u *sip.Uri) *sip.Uri {
	w := u.Clone()
	// ASCII only: 19.1.4's case-insensitivity is ASCII's (hosts are
	// ASCII), and Unicode upper-casing is not always undone by lowering.
	// Byte by byte: mapping runes would turn an octet that is not UTF-8
	// into U+FFFD, another name.
	upper := func(s string) string {
		b := []byte(s)
		for i, c := range b {
			if 'a' <= c && c <= 'z' {
				b[i] = c - 'a' + 'A'
			}
		}
		return string(b)
	}
	w.Scheme = upper(uriScheme(u))
	w.Host = upper(u.Host)
	reversed := func(p sip.HeaderParams) sip.HeaderParams {
		var out sip.HeaderParams
		for i := len(p) - 1; i >= 0; i-- {
			out = append(out, sip.HeaderKV{K: upper(p[i].K), V: p[i].V})
		}
		return out
	}
	// A name given twice keeps its first value; reversing the order would
	// change which, so such URIs keep theirs.
	if len(foldedParams(u.UriParams, true)) == len(u.UriParams) {
		w.UriParams = reversed(u.UriParams)
	}
	if len(foldedParams(u.Headers, false)) == len(u.Headers) {
		w.Headers = reversed(u.Headers)
	}
	if strings.Contains(u.User, "%") {
		// An escape next to a new one could read as another.
		return w
	}
	var user strings.Builder
	for i := 0; i < len(u.User); i++ {
		if c := u.User[i]; 'a' <= c && c <= 'z' {
			user.WriteString("%" + strings.ToLower(string(upperHex[c>>4])+string(upperHex[c&15])))
			continue
		}
		user.WriteByte(u.User[i])
	}
	w.User = user.String()
	return w
}
