package sdpneg

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
)

func TestBuildRoundTrip(t *testing.T) {
	local := Local{
		Addr: netip.MustParseAddr("198.51.100.7"),
		Port: 30000,
		Codecs: []Codec{
			{PT: 0, Name: "PCMU", ClockRate: 8000, Channels: 1},
			{PT: 96, Name: "opus", ClockRate: 48000, Channels: 2, Fmtp: "useinbandfec=1"},
		},
		TelephoneEvents: []Codec{{PT: 101, Name: TelephoneEvent, ClockRate: 8000, Channels: 1, Fmtp: "0-16"}},
		Direction:       SendOnly,
		RTCPMux:         true,
		Ptime:           20,
		MaxPtime:        40,
	}
	raw, err := NewBuilder().Build(local)
	if err != nil {
		t.Fatal(err)
	}
	d, err := Parse(raw)
	if err != nil {
		t.Fatalf("parse own sdp: %v\n%s", err, raw)
	}
	a := d.Audio()
	if a.RTP() != netip.MustParseAddrPort("198.51.100.7:30000") || a.Direction != SendOnly || !a.RTCPMux || a.Ptime != 20 || a.MaxPtime != 40 {
		t.Fatalf("round trip lost fields: %+v", a)
	}
	if len(a.Codecs) != 2 || !a.Codecs[1].Same(local.Codecs[1]) || a.Codecs[1].PT != 96 || a.Codecs[1].Fmtp != "useinbandfec=1" {
		t.Fatalf("codecs = %+v", a.Codecs)
	}
	if te, ok := a.TelephoneEvent(8000); !ok || te.PT != 101 || te.Fmtp != "0-16" {
		t.Fatalf("telephone-event = %+v", te)
	}
}

func TestBuildVersionIncrementsOnChange(t *testing.T) {
	b := NewBuilder()
	local := Local{
		Addr:   netip.MustParseAddr("198.51.100.7"),
		Port:   30000,
		Codecs: []Codec{{PT: 0, Name: "PCMU", ClockRate: 8000, Channels: 1}},
	}
	steps := []struct {
		name    string
		change  func(l *Local)
		version uint64
	}{
		{name: "first", change: func(*Local) {}, version: 1},
		{name: "same content keeps version", change: func(*Local) {}, version: 1},
		{name: "hold bumps", change: func(l *Local) { l.Direction = SendOnly }, version: 2},
		{name: "repeat hold keeps", change: func(*Local) {}, version: 2},
		{name: "resume bumps", change: func(l *Local) { l.Direction = SendRecv }, version: 3},
	}
	var sessionID uint64
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			s.change(&local)
			raw, err := b.Build(local)
			if err != nil {
				t.Fatal(err)
			}
			d, err := Parse(raw)
			if err != nil {
				t.Fatal(err)
			}
			if d.OriginVersion != s.version {
				t.Fatalf("version = %d, want %d", d.OriginVersion, s.version)
			}
			if sessionID == 0 {
				sessionID = d.OriginSessionID
			}
			if d.OriginSessionID != sessionID {
				t.Fatal("origin session id changed")
			}
		})
	}
}

// An SDP built again with the content of one built before it comes back
// as it was, version and all; a new content goes above every version
// built, not only the last.
func TestBuildKeepingReturnsTheKeptSDPForItsContent(t *testing.T) {
	b := NewBuilder()
	local := Local{
		Addr:   netip.MustParseAddr("198.51.100.7"),
		Port:   30000,
		Codecs: []Codec{{PT: 0, Name: "PCMU", ClockRate: 8000, Channels: 1}},
	}
	kept, err := b.Build(local)
	if err != nil {
		t.Fatal(err)
	}
	hold := local
	hold.Direction = SendOnly
	if _, err := b.Build(hold); err != nil { // version 2, then rejected
		t.Fatal(err)
	}
	again, err := b.BuildKeeping(local, kept)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, kept) {
		t.Fatalf("same content built keeping\n%s\ngot\n%s", kept, again)
	}
	if b.Version() != 1 {
		t.Fatalf("version after keeping = %d, want 1", b.Version())
	}
	inactive := local
	inactive.Direction = Inactive
	raw, err := b.BuildKeeping(inactive, kept)
	if err != nil {
		t.Fatal(err)
	}
	d, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if d.OriginVersion != 3 {
		t.Fatalf("new content after versions 1 and 2 has version %d, want 3", d.OriginVersion)
	}
}

func TestBuildAnswerMirrorsOffer(t *testing.T) {
	offer, err := Parse(sdpLines(
		"v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0",
		"m=video 6000 RTP/AVP 96",
		"a=rtpmap:96 H264/90000",
		"m=audio 7000 RTP/AVP 0",
		"m=application 8000 UDP/BFCP *",
	))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := NewBuilder().Build(Local{
		Addr:   netip.MustParseAddr("198.51.100.7"),
		Port:   30000,
		Codecs: []Codec{{PT: 0, Name: "PCMU", ClockRate: 8000, Channels: 1}},
		Mirror: offer,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"m=video 0 RTP/AVP 96\r\n", "m=audio 30000 RTP/AVP 0\r\n", "m=application 0 UDP/BFCP *\r\n"} {
		if !bytes.Contains(raw, []byte(want)) {
			t.Errorf("answer lacks %q:\n%s", want, raw)
		}
	}
	if strings.Index(string(raw), "m=video") > strings.Index(string(raw), "m=audio") {
		t.Error("m-line order not kept")
	}
}

func TestBuildErrors(t *testing.T) {
	pcmu := []Codec{{PT: 0, Name: "PCMU", ClockRate: 8000, Channels: 1}}
	tests := []struct {
		name  string
		local Local
	}{
		{name: "no address", local: Local{Port: 3000, Codecs: pcmu}},
		{name: "no port", local: Local{Addr: netip.MustParseAddr("192.0.2.1"), Codecs: pcmu}},
		{name: "no codecs", local: Local{Addr: netip.MustParseAddr("192.0.2.1"), Port: 3000}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewBuilder().Build(tc.local); err == nil {
				t.Fatal("built an sdp from invalid input")
			}
		})
	}
}

func BenchmarkParse(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(offerPCMU); err != nil {
			b.Fatal(err)
		}
	}
}
