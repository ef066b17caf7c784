package sipproxy

import (
	"net"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// aliasParam is the Contact URI parameter recording a NATed peer's observed
// address, "ip~port~transport". In-dialog requests then carry the public
// address in their Request-URI, so whichever replica receives them reaches
// the phone without any shared table (the idea of Kamailio's nathelper alias).
const aliasParam = "alias"

// addContactAlias marks the Contact of msg when it differs from the address
// the message really came from.
func addContactAlias(msg sip.Message, source, transport string) {
	hs := msg.GetHeaders("Contact")
	if len(hs) == 0 || source == "" {
		return
	}
	c, ok := hs[0].(*sip.ContactHeader)
	if !ok || c.Address.Wildcard {
		return
	}
	alias, ok := contactAlias(c.Address, source, transport)
	if !ok {
		return
	}
	// The header may be shared with the original message: replace, never mutate.
	nc := c.Clone()
	if nc.Address.UriParams == nil {
		nc.Address.UriParams = sip.NewParams()
	}
	nc.Address.UriParams.Add(aliasParam, alias)
	msg.(interface{ ReplaceHeader(sip.Header) }).ReplaceHeader(nc)
}

// contactAlias returns the alias value for a contact reached from source
// over transport, or false when the contact already leads there: same
// address and the same transport. A phone on TLS or TCP whose Contact names
// its connection's address but no transport parameter would otherwise be
// sent requests over UDP, to a port where nothing listens.
func contactAlias(contact sip.Uri, source, transport string) (string, bool) {
	host, port, err := net.SplitHostPort(source)
	if err != nil {
		return "", false
	}
	cport := contact.Port
	if cport == 0 {
		cport = sip.DefaultPort(transport)
	}
	if strings.Trim(contact.Host, "[]") == host && strconv.Itoa(cport) == port &&
		strings.EqualFold(contactTransport(contact), transport) {
		return "", false
	}
	return host + "~" + port + "~" + strings.ToLower(transport), true
}

// contactTransport is the transport a request to contact would use by
// itself (RFC 3263 without DNS): its transport parameter, else TLS for a
// sips URI and UDP for a sip one.
func contactTransport(contact sip.Uri) string {
	if contact.UriParams != nil {
		if tp, ok := contact.UriParams.Get("transport"); ok && tp != "" {
			return tp
		}
	}
	if contact.IsEncrypted() {
		return "TLS"
	}
	return "UDP"
}

// parseAlias reads an alias value back into destination and transport.
func parseAlias(v string) (dest, transport string, ok bool) {
	parts := strings.Split(v, "~")
	if len(parts) != 3 {
		return "", "", false
	}
	if net.ParseIP(parts[0]) == nil {
		return "", "", false
	}
	if p, err := strconv.Atoi(parts[1]); err != nil || p <= 0 || p > 65535 {
		return "", "", false
	}
	tp := strings.ToUpper(parts[2])
	if tp != "UDP" && tp != "TCP" && tp != "TLS" {
		return "", "", false
	}
	return net.JoinHostPort(parts[0], parts[1]), tp, true
}
