package sipproxy

import (
	"net/netip"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// A binding is stored with its Contact as the phone wrote it (location
// keeps an AOR's bindings under one key, each by that string), and it is
// what the registrar hands back in its 200. Which binding a Contact
// refers to is decided here, by RFC 3261 19.1.4 URI equality rather than
// the strings: a phone that writes its Contact another way on a refresh
// (transport=UDP then udp, parameters in another order, an escaped
// character) must refresh or remove its one binding, not add a second.

// contactKey is the contact URI as stored: without our NAT alias, which is
// about the path, not the binding.
func contactKey(ct *sip.ContactHeader) string {
	uri := ct.Address.Clone()
	uri.UriParams.Remove(aliasParam)
	return uri.String()
}

// contactURIs parses stored contacts once for the comparisons of one
// REGISTER, which compare each against every Contact of the request.
type contactURIs map[string]*sip.Uri

// uri is contact parsed, or nil when it does not parse.
func (c contactURIs) uri(contact string) *sip.Uri {
	if u, ok := c[contact]; ok {
		return u
	}
	var u *sip.Uri
	var parsed sip.Uri
	if err := sip.ParseUri(contact, &parsed); err == nil {
		u = &parsed
	}
	c[contact] = u
	return u
}

// same reports whether contacts a and b are the same URI. One that does
// not parse (a binding written by an older release, say) is only the same
// as itself, character for character.
func (c contactURIs) same(a, b string) bool {
	if a == b {
		return true
	}
	ua, ub := c.uri(a), c.uri(b)
	if ua == nil || ub == nil {
		return false
	}
	return uriEqual(ua, ub)
}

// uriEqual reports whether a and b are equal SIP or SIPS URIs by RFC 3261
// 19.1.4: scheme and host compare without case, user and password with
// it; a port present in one must be in the other (an absent port is not
// 5060, it may resolve to another); the user, ttl, method, maddr and
// transport parameters must match when either has them, any other only
// when both do; headers must all match; and an escaped character other
// than a reserved one equals the character. Order of parameters and of
// headers does not matter.
func uriEqual(a, b *sip.Uri) bool {
	sa, sb := uriScheme(a), uriScheme(b)
	if sa != sb {
		return false
	}
	if sa != "sip" && sa != "sips" {
		// Another scheme (tel, urn) has rules of its own, which a
		// registrar need not know: equal only as written.
		return a.Raw() == b.Raw()
	}
	if a.Wildcard || b.Wildcard {
		return a.Wildcard == b.Wildcard
	}
	if unescapeURI(a.User) != unescapeURI(b.User) || unescapeURI(a.Password) != unescapeURI(b.Password) {
		return false
	}
	if !hostEqual(a.Host, b.Host) || a.Port != b.Port {
		return false
	}
	return uriParamsEqual(a.UriParams, b.UriParams) && uriHeadersEqual(a.Headers, b.Headers)
}

// uriScheme is the URI's scheme in lower case; sipgo leaves it empty on a
// Uri built without one, which it writes as sip.
func uriScheme(u *sip.Uri) string {
	if u.Scheme == "" {
		return "sip"
	}
	return strings.ToLower(u.Scheme)
}

// hostEqual compares hosts without case, and IP addresses as addresses,
// so that the same IPv6 address written two ways is one host. A name
// never equals the address it resolves to (19.1.4).
func hostEqual(a, b string) bool {
	if strings.EqualFold(a, b) {
		return true
	}
	ia, errA := netip.ParseAddr(strings.Trim(a, "[]"))
	ib, errB := netip.ParseAddr(strings.Trim(b, "[]"))
	return errA == nil && errB == nil && ia == ib
}

// paramsMustMatch are the URI parameters that, present in one URI, make
// it differ from one without them, whatever their value (19.1.4).
var paramsMustMatch = [...]string{"user", "ttl", "method", "maddr", "transport"}

// uriParamsEqual compares URI parameters by 19.1.4: names and values
// without case, after unescaping.
func uriParamsEqual(a, b sip.HeaderParams) bool {
	ma, mb := foldedParams(a, true), foldedParams(b, true)
	for _, name := range paramsMustMatch {
		_, inA := ma[name]
		_, inB := mb[name]
		if inA != inB {
			return false
		}
	}
	for name, va := range ma {
		if vb, ok := mb[name]; ok && va != vb {
			return false
		}
	}
	return true
}

// uriHeadersEqual compares URI headers: each present in one must be in the
// other with the same value. Names compare without case; values as
// written but for escapes, since how a header's value compares is that
// header's own rule (RFC 3261 section 20) and a registrar treating two
// values as one would merge bindings the phone meant to keep apart.
func uriHeadersEqual(a, b sip.HeaderParams) bool {
	ma, mb := foldedParams(a, false), foldedParams(b, false)
	if len(ma) != len(mb) {
		return false
	}
	for name, va := range ma {
		if vb, ok := mb[name]; !ok || va != vb {
			return false
		}
	}
	return true
}

// foldedParams maps parameter names, in lower case, onto their unescaped
// values (in lower case too with foldValues). Of a name given twice the
// first counts, as a parser reading the first match would use it.
func foldedParams(p sip.HeaderParams, foldValues bool) map[string]string {
	m := make(map[string]string, len(p))
	for _, kv := range p {
		name := asciiLower(unescapeURI(kv.K))
		if _, dup := m[name]; dup {
			continue
		}
		v := unescapeURI(kv.V)
		if foldValues {
			v = asciiLower(v)
		}
		m[name] = v
	}
	return m
}

// unescapeURI decodes the %-escapes of characters outside RFC 2396's
// reserved set, which 19.1.4 makes equal to their escapes; a reserved
// character's escape stays one (it differs from the character), with its
// hex digits in upper case so that %2f and %2F compare equal. A malformed
// escape is left as written.
func unescapeURI(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '%' || i+2 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		hi, okHi := unhex(s[i+1])
		lo, okLo := unhex(s[i+2])
		if !okHi || !okLo {
			b.WriteByte(s[i])
			continue
		}
		c := hi<<4 | lo
		// An escaped % stays escaped too: decoded, the characters after
		// it would read as an escape of their own.
		if c == '%' || strings.IndexByte(reservedURIChars, c) >= 0 {
			b.WriteByte('%')
			b.WriteByte(upperHex[hi])
			b.WriteByte(upperHex[lo])
		} else {
			b.WriteByte(c)
		}
		i += 2
	}
	return b.String()
}

// asciiLower folds the ASCII letters of s only: a decoded value may hold
// any octet, and Unicode folding would turn every invalid one into the
// same replacement character, making %FE equal %FF.
func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// reservedURIChars is RFC 2396's reserved set.
const reservedURIChars = ";/?:@&=+$,"

const upperHex = "0123456789ABCDEF"

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
