package sipproxy

import (
	"net"
	"testing"

	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// A hang-up none of whose BYEs can be sent says so, so that the media
// timeout goes to another replica; one whose BYE went out does not.
func TestHangUpReportsWhetherAByeLeft(t *testing.T) {
	p := startProxy(t, testConfig())
	// Run takes the UDP socket up on its own goroutine; a BYE sent before
	// that finds no UDP connection of ours and fails to bind a second one.
	waitFor(t, "the proxy serving UDP", func() bool {
		_, err := p.ua.TransportLayer().GetConnection("udp", p.Addr("udp"))
		return err == nil
	})
	dialog := func(contact string) *callgridv1.Dialog {
		return &callgridv1.Dialog{
			CallId: "hangup-1", CallerUri: "sip:alice@localhost", CallerTag: "a1", CalleeUri: "sip:bob@localhost", CalleeTag: "b1",
			CallerContact: contact,
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	_ = ln.Close() // nothing listens there now
	if p.hangUpDialog(testLogger(), dialog("sip:alice@"+closed+";transport=tcp"), "media_timeout") {
		t.Fatal("a hang-up whose only BYE could not be sent reported success")
	}
	if !p.hangUpDialog(testLogger(), dialog("sip:alice@127.0.0.1:9;transport=udp"), "media_timeout") {
		t.Fatal("a hang-up whose BYE went out reported failure")
	}
	if !p.hangUpDialog(testLogger(), nil, "media_timeout") {
		t.Fatal("a call without a dialog, which no replica can hang up, asked for a retry")
	}
}
