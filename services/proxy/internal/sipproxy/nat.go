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
// A connection one replica holds adds its holder and a signature (flows.go).
const aliasParam = "alias"

// addContactAlias gives the Contact of msg the alias its source calls
// for (aliased).
func (s *Server) addContactAlias(msg sip.Message, source, transport string) {
	hs := msg.GetHeaders("Contact")
	if len(hs) == 0 || source == "" {
		return
	}
	c, ok := hs[0].(*sip.ContactHeader)
	if !ok || c.Address.Wildcard {
		return
	}
	callID := ""
	if m, ok := msg.(interface{ CallID() *sip.CallIDHeader }); ok {
		callID = callIDOf(m)
	}
	uri, changed := s.aliased(c.Address, callID, source, transport)
	if !changed {
		return
	}
	// The header may be shared with the original message: replace, never mutate.
	nc := c.Clone()
	nc.Address = uri
	msg.(interface{ ReplaceHeader(sip.Header) }).ReplaceHeader(nc)
}

// aliased returns contact, of the call callID and reached from source over
// transport, with the alias that leads there, and whether that changed it.
// It gets one when it differs from the address the message really came
// from, or when it came over a connection this replica holds. An alias a
// replica signed stays: the message was relayed by the holder of the flow
// it names. One a phone wrote itself goes, unless a trusted peer sent it:
// it would steer the dialog's requests wherever it says.
func (s *Server) aliased(contact sip.Uri, callID, source, transport string) (sip.Uri, bool) {
	if s.keepsAlias(contact, callID) {
		return contact, false
	}
	alias, needed := s.aliasFor(contact, callID, source, transport)
	_, sent := contact.UriParams.Get(aliasParam)
	if !needed && (!sent || s.isTrusted(sourceIP(source))) {
		return contact, false
	}
	contact = *contact.Clone()
	if contact.UriParams == nil {
		contact.UriParams = sip.NewParams()
	}
	if needed {
		contact.UriParams.Add(aliasParam, alias)
	} else {
		contact.UriParams.Remove(aliasParam)
	}
	return contact, true
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
	a, ok := parseFlowAlias(v)
	return a.dest, a.transport, ok
}

// flowAlias is an alias value read back.
type flowAlias struct {
	dest, transport string
	// holder is the "host:port" of the replica holding the connection,
	// for a held flow; signed is what mac signs.
	holder, signed, mac string
	raw                 string // the alias as it came
}

// parseFlowAlias reads "ip~port~transport" or, for a held connection,
// "ip~port~transport~holder-host~holder-port~signature".
func parseFlowAlias(v string) (flowAlias, bool) {
	parts := strings.Split(v, "~")
	if len(parts) != 3 && len(parts) != 6 {
		return flowAlias{}, false
	}
	if net.ParseIP(parts[0]) == nil || !validPort(parts[1]) {
		return flowAlias{}, false
	}
	tp := strings.ToUpper(parts[2])
	if tp != "UDP" && tp != "TCP" && tp != "TLS" {
		return flowAlias{}, false
	}
	a := flowAlias{dest: net.JoinHostPort(parts[0], parts[1]), transport: tp, raw: v}
	if len(parts) == 6 {
		if parts[3] == "" || !validPort(parts[4]) || len(parts[5]) != flowMACLen {
			return flowAlias{}, false
		}
		a.holder = net.JoinHostPort(parts[3], parts[4])
		a.signed, a.mac = strings.Join(parts[:5], "~"), parts[5]
	}
	return a, true
}

func validPort(s string) bool {
	p, err := strconv.Atoi(s)
	return err == nil && p > 0 && p <= 65535
}
