package sipproxy

import (
	"net/netip"
	"slices"
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

// contactURIs holds the stored contacts of one REGISTER's comparisons in
// their compared form, each made once however often it is compared.
type contactURIs map[string]*contactForm

// form is contact in its compared form.
func (c contactURIs) form(contact string) *contactForm {
	if f, ok := c[contact]; ok {
		return f
	}
	f := parseContactForm(contact)
	c[contact] = f
	return f
}

// contactForm is a contact URI as RFC 3261 19.1.4 compares it, its escapes
// decoded and its parameters folded and sorted, so that comparing two
// costs no parsing and no allocation: a REGISTER's contacts are compared
// pairwise, and the largest message holds hundreds of them.
type contactForm struct {
	// raw is the contact as written: equal strings are equal URIs.
	raw string
	// parsed is false for a contact that does not parse (a binding
	// written by an older release, say): it is only the same as itself,
	// character for character.
	parsed bool
	// scheme is lower-case. A URI of another scheme than sip or sips
	// (tel, urn) has rules of its own, which a registrar need not know:
	// foreign, it is compared as uri, the URI as written, alone.
	scheme  string
	foreign bool
	uri     string
	// wildcard is the "*" of a removal of every binding.
	wildcard bool
	user     string
	password string
	host     string
	// ip is host as an address, when it is one.
	ip      netip.Addr
	port    int
	params  []foldedParam
	headers []foldedParam
	// mustHave has a bit for each of paramsMustMatch that params holds.
	mustHave uint8
}

// foldedParam is a URI parameter or header with its name in lower case and
// its value unescaped (and, for a parameter, in lower case).
type foldedParam struct{ name, value string }

// parseContactForm parses and folds a stored contact.
func parseContactForm(contact string) *contactForm {
	var u sip.Uri
	if err := sip.ParseUri(contact, &u); err != nil {
		return &contactForm{raw: contact}
	}
	return newContactForm(contact, &u)
}

// newContactForm is u, written raw, in its compared form.
func newContactForm(raw string, u *sip.Uri) *contactForm {
	f := &contactForm{raw: raw, parsed: true, scheme: uriScheme(u)}
	if f.scheme != "sip" && f.scheme != "sips" {
		f.foreign, f.uri = true, u.Raw()
		return f
	}
	f.wildcard = u.Wildcard
	f.user, f.password = unescapeURI(u.User), unescapeURI(u.Password)
	f.host, f.port = u.Host, u.Port
	if ip, err := netip.ParseAddr(strings.Trim(u.Host, "[]")); err == nil {
		f.ip = ip
	}
	f.params = foldedParams(u.UriParams, true)
	f.headers = foldedParams(u.Headers, false)
	for _, p := range f.params {
		if i := slices.Index(paramsMustMatch[:], p.name); i >= 0 {
			f.mustHave |= 1 << i
		}
	}
	return f
}

// uriEqual reports whether a and b are equal SIP or SIPS URIs by RFC 3261
// 19.1.4 (see sameForm).
func uriEqual(a, b *sip.Uri) bool {
	return sameForm(newContactForm("", a), newContactForm("", b))
}

// sameContact reports whether contacts a and b are the same URI: written
// alike, or equal by sameForm.
func sameContact(a, b *contactForm) bool {
	return a.raw == b.raw || sameForm(a, b)
}

// sameForm reports whether a and b are equal by RFC 3261 19.1.4:
// scheme and host compare without case, user and password with it; a port
// present in one must be in the other (an absent port is not 5060, it may
// resolve to another); the user, ttl, method, maddr and transport
// parameters must match when either has them, any other only when both
// do; headers must all match; and an escaped character other than a
// reserved one equals the character. Order of parameters and of headers
// does not matter.
func sameForm(a, b *contactForm) bool {
	if !a.parsed || !b.parsed || a.scheme != b.scheme {
		return false
	}
	if a.foreign {
		return a.uri == b.uri
	}
	if a.wildcard || b.wildcard {
		return a.wildcard == b.wildcard
	}
	if a.user != b.user || a.password != b.password || a.port != b.port || a.mustHave != b.mustHave {
		return false
	}
	if a.host != b.host && !strings.EqualFold(a.host, b.host) && !(a.ip.IsValid() && a.ip == b.ip) {
		return false
	}
	return paramsAgree(a.params, b.params) && slices.Equal(a.headers, b.headers)
}

// paramsAgree reports whether every parameter named in both a and b has
// the same value in each; a and b are sorted by name.
func paramsAgree(a, b []foldedParam) bool {
	for i, j := 0, 0; i < len(a) && j < len(b); {
		switch {
		case a[i].name == b[j].name:
			if a[i].value != b[j].value {
				return false
			}
			i++
			j++
		case a[i].name < b[j].name:
			i++
		default:
			j++
		}
	}
	return true
}

// uriScheme is the URI's scheme in lower case; sipgo leaves it empty on a
// Uri built without one, which it writes as sip.
func uriScheme(u *sip.Uri) string {
	if u.Scheme == "" {
		return "sip"
	}
	return strings.ToLower(u.Scheme)
}

// paramsMustMatch are the URI parameters that, present in one URI, make
// it differ from one without them, whatever their value (19.1.4).
var paramsMustMatch = [...]string{"user", "ttl", "method", "maddr", "transport"}

// foldedParams is p with names in lower case and values unescaped (in
// lower case too with foldValues), sorted by name. Of a name given twice
// the first counts, as a parser reading the first match would use it.
func foldedParams(p sip.HeaderParams, foldValues bool) []foldedParam {
	if len(p) == 0 {
		return nil
	}
	out := make([]foldedParam, 0, len(p))
	for _, kv := range p {
		name := asciiLower(unescapeURI(kv.K))
		if slices.ContainsFunc(out, func(f foldedParam) bool { return f.name == name }) {
			continue
		}
		v := unescapeURI(kv.V)
		if foldValues {
			v = asciiLower(v)
		}
		out = append(out, foldedParam{name: name, value: v})
	}
	slices.SortFunc(out, func(a, b foldedParam) int { return strings.Compare(a.name, b.name) })
	return out
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
