package sdpneg

import (
	"errors"
	"net/netip"
	"testing"
)

// FuzzParse checks that no input panics Parse, that every failure is one of
// the two typed errors, and that whatever parses can be answered with an SDP
// that itself parses and keeps the packet times passed on.
func FuzzParse(f *testing.F) {
	f.Add(offerPCMU)
	f.Add(sdpLines(
		"v=0", "o=- 1 1 IN IP6 2001:db8::1", "s=-", "t=0 0",
		"m=audio 5004 RTP/AVPF 111 0 110", "c=IN IP6 2001:db8::2",
		"a=rtpmap:111 opus/48000/2", "a=fmtp:111 minptime=10;useinbandfec=1",
		"a=rtpmap:110 telephone-event/48000", "a=rtcp:5010 IN IP6 2001:db8::3", "a=rtcp-mux", "a=sendonly",
		"a=ptime:40", "a=maxptime:60.5",
	))
	f.Add(sdpLines("v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "c=IN IP4 0.0.0.0", "t=0 0",
		"m=video 6000 RTP/AVP 96", "m=audio 7000 RTP/SAVP 0", "m=audio 7002 RTP/AVP 97 8"))
	f.Add([]byte("v=0\nm=audio 1 RTP/AVP 0\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, raw []byte) {
		d, err := Parse(raw)
		if err != nil {
			if !errors.Is(err, ErrBadSDP) && !errors.Is(err, ErrUnsupportedCodec) {
				t.Fatalf("untyped error: %v", err)
			}
			return
		}
		a := d.Audio()
		if a.Port <= 0 || a.Port > 65535 || !a.Addr.IsValid() || !a.RTCP.IsValid() {
			t.Fatalf("parsed an unusable stream: %+v", a)
		}
		if len(a.Codecs) == 0 {
			return
		}
		answer, err := NewBuilder().Build(Local{
			Addr:            netip.MustParseAddr("192.0.2.1"),
			Port:            30000,
			Codecs:          a.Codecs[:1],
			TelephoneEvents: a.TelephoneEvents,
			Direction:       a.Direction.Answer(),
			RTCPMux:         a.RTCPMux,
			Ptime:           a.Ptime,
			MaxPtime:        a.MaxPtime,
			Mirror:          d,
		})
		if err != nil {
			return // e.g. a codec name pion cannot marshal
		}
		own, err := Parse(answer)
		if err != nil {
			t.Fatalf("own answer does not parse: %v\n%s", err, answer)
		}
		if got := own.Audio(); got.Ptime != a.Ptime || got.MaxPtime != a.MaxPtime {
			t.Fatalf("own answer reads ptime %d maxptime %d, built with %d and %d\n%s", got.Ptime, got.MaxPtime, a.Ptime, a.MaxPtime, answer)
		}
	})
}
