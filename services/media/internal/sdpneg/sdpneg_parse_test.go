package sdpneg

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// sdpLines joins lines with CRLF as SIP bodies do.
func sdpLines(lines ...string) []byte {
	return []byte(strings.Join(lines, "\r\n") + "\r\n")
}

var offerPCMU = sdpLines(
	"v=0",
	"o=alice 2890844526 2890844527 IN IP4 192.0.2.10",
	"s=-",
	"c=IN IP4 192.0.2.10",
	"t=0 0",
	"m=audio 49170 RTP/AVP 0 8 101",
	"a=rtpmap:0 PCMU/8000",
	"a=rtpmap:101 telephone-event/8000",
	"a=fmtp:101 0-16",
	"a=ptime:20",
)

func TestParse(t *testing.T) {
	tests := []struct {
		name  string
		sdp   []byte
		check func(t *testing.T, d *Description)
	}{
		{
			name: "pcmu with static pcma and dtmf",
			sdp:  offerPCMU,
			check: func(t *testing.T, d *Description) {
				a := d.Audio()
				if a.RTP() != netip.MustParseAddrPort("192.0.2.10:49170") {
					t.Errorf("rtp = %v", a.RTP())
				}
				if a.RTCP != netip.MustParseAddrPort("192.0.2.10:49171") {
					t.Errorf("rtcp = %v", a.RTCP)
				}
				want := []Codec{
					{PT: 0, Name: "PCMU", ClockRate: 8000, Channels: 1},
					{PT: 8, Name: "PCMA", ClockRate: 8000, Channels: 1},
				}
				if !reflect.DeepEqual(a.Codecs, want) {
					t.Errorf("codecs = %+v", a.Codecs)
				}
				te, ok := a.TelephoneEvent(8000)
				if !ok || te.PT != 101 || te.Fmtp != "0-16" {
					t.Errorf("telephone-event = %+v %v", te, ok)
				}
				if a.Direction != SendRecv || a.Ptime != 20 || a.RTCPMux {
					t.Errorf("direction %v ptime %d mux %v", a.Direction, a.Ptime, a.RTCPMux)
				}
				if d.OriginSessionID != 2890844526 || d.OriginVersion != 2890844527 {
					t.Errorf("origin %d %d", d.OriginSessionID, d.OriginVersion)
				}
			},
		},
		{
			name: "opus with media level connection, rtcp attribute, mux and sendonly",
			sdp: sdpLines(
				"v=0",
				"o=- 1 1 IN IP6 2001:db8::1",
				"s=-",
				"t=0 0",
				"a=recvonly",
				"m=audio 5004 RTP/AVPF 111 0 110",
				"c=IN IP6 2001:db8::2",
				"a=rtpmap:111 opus/48000/2",
				"a=fmtp:111 minptime=10;useinbandfec=1",
				"a=rtpmap:110 telephone-event/48000",
				"a=rtcp:5010 IN IP6 2001:db8::3",
				"a=rtcp-mux",
				"a=sendonly",
			),
			check: func(t *testing.T, d *Description) {
				a := d.Audio()
				if a.RTP() != netip.MustParseAddrPort("[2001:db8::2]:5004") {
					t.Errorf("rtp = %v", a.RTP())
				}
				if a.RTCP != netip.MustParseAddrPort("[2001:db8::3]:5010") {
					t.Errorf("rtcp = %v", a.RTCP)
				}
				if len(a.Codecs) != 2 || a.Codecs[0].Name != "opus" || a.Codecs[0].Channels != 2 || a.Codecs[0].Fmtp != "minptime=10;useinbandfec=1" {
					t.Errorf("codecs = %+v", a.Codecs)
				}
				if _, ok := a.TelephoneEvent(48000); !ok {
					t.Error("no telephone-event/48000")
				}
				if a.Direction != SendOnly || !a.RTCPMux || a.Proto != "RTP/AVPF" {
					t.Errorf("direction %v mux %v proto %s", a.Direction, a.RTCPMux, a.Proto)
				}
			},
		},
		{
			name: "session level direction applies",
			sdp: sdpLines(
				"v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0",
				"a=inactive",
				"m=audio 4000 RTP/AVP 0",
			),
			check: func(t *testing.T, d *Description) {
				if d.Audio().Direction != Inactive {
					t.Errorf("direction = %v", d.Audio().Direction)
				}
			},
		},
		{
			name: "legacy hold address",
			sdp: sdpLines(
				"v=0", "o=- 1 2 IN IP4 192.0.2.1", "s=-", "c=IN IP4 0.0.0.0", "t=0 0",
				"m=audio 4000 RTP/AVP 0",
			),
			check: func(t *testing.T, d *Description) {
				if d.Audio().Direction != SendOnly || !d.Audio().Addr.IsUnspecified() {
					t.Errorf("direction %v addr %v", d.Audio().Direction, d.Audio().Addr)
				}
			},
		},
		{
			name: "ipv4-mapped ipv6 connection address is the ipv4 endpoint",
			sdp: sdpLines(
				"v=0", "o=- 1 1 IN IP6 ::ffff:192.0.2.1", "s=-", "c=IN IP6 ::ffff:192.0.2.1", "t=0 0",
				"m=audio 4000 RTP/AVP 0",
			),
			check: func(t *testing.T, d *Description) {
				a := d.Audio()
				if a.RTP() != netip.MustParseAddrPort("192.0.2.1:4000") || a.RTCP != netip.MustParseAddrPort("192.0.2.1:4001") {
					t.Errorf("rtp %v rtcp %v, want the unmapped 192.0.2.1", a.RTP(), a.RTCP)
				}
			},
		},
		{
			name: "video first, rejected audio skipped, second audio used",
			sdp: sdpLines(
				"v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0",
				"m=video 6000 RTP/AVP 96",
				"a=rtpmap:96 H264/90000",
				"m=audio 0 RTP/AVP 0",
				"m=audio 7000 RTP/AVP 8 97",
			),
			check: func(t *testing.T, d *Description) {
				if d.AudioIndex != 2 || len(d.Media) != 3 {
					t.Fatalf("audio index %d of %d", d.AudioIndex, len(d.Media))
				}
				// PT 97 has no rtpmap: ignored, PCMA kept.
				if a := d.Audio(); a.Port != 7000 || len(a.Codecs) != 1 || a.Codecs[0].Name != "PCMA" {
					t.Errorf("audio = %+v", a)
				}
				if d.Media[0].Kind != "video" || d.Media[0].Formats[0] != "96" {
					t.Errorf("video = %+v", d.Media[0])
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Parse(tc.sdp)
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, d)
		})
	}
}

func TestParseErrors(t *testing.T) {
	// with builds a well-ordered SDP: the connection line (if any) goes
	// before t=, the media lines after it.
	with := func(conn string, media ...string) []byte {
		lines := []string{"v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-"}
		if conn != "" {
			lines = append(lines, conn)
		}
		return sdpLines(append(append(lines, "t=0 0"), media...)...)
	}
	tests := []struct {
		name string
		sdp  []byte
		want error
	}{
		{name: "empty", sdp: nil, want: ErrBadSDP},
		{name: "garbage", sdp: []byte("hello world"), want: ErrBadSDP},
		{name: "no media", sdp: with("c=IN IP4 192.0.2.1"), want: ErrBadSDP},
		{name: "video only", sdp: with("c=IN IP4 192.0.2.1", "m=video 5000 RTP/AVP 96"), want: ErrBadSDP},
		{name: "audio rejected", sdp: with("c=IN IP4 192.0.2.1", "m=audio 0 RTP/AVP 0"), want: ErrBadSDP},
		{name: "no connection", sdp: with("", "m=audio 5000 RTP/AVP 0"), want: ErrBadSDP},
		{name: "hostname connection", sdp: with("c=IN IP4 pbx.example.com", "m=audio 5000 RTP/AVP 0"), want: ErrBadSDP},
		{name: "multicast connection", sdp: with("c=IN IP4 224.2.1.1/127", "m=audio 5000 RTP/AVP 0"), want: ErrBadSDP},
		{name: "address family mismatch", sdp: with("c=IN IP6 192.0.2.1", "m=audio 5000 RTP/AVP 0"), want: ErrBadSDP},
		{name: "port out of range", sdp: with("c=IN IP4 192.0.2.1", "m=audio 70000 RTP/AVP 0"), want: ErrBadSDP},
		{name: "bad payload type", sdp: with("c=IN IP4 192.0.2.1", "m=audio 5000 RTP/AVP 300"), want: ErrBadSDP},
		{name: "bad rtcp attribute", sdp: with("c=IN IP4 192.0.2.1", "m=audio 5000 RTP/AVP 0", "a=rtcp:abc"), want: ErrBadSDP},
		{name: "rtcp address of another family", sdp: with("c=IN IP4 192.0.2.1", "m=audio 5000 RTP/AVP 0", "a=rtcp:5001 IN IP4 ::1"), want: ErrBadSDP},
		{name: "rtcp address type unknown", sdp: with("c=IN IP4 192.0.2.1", "m=audio 5000 RTP/AVP 0", "a=rtcp:5001 IN IPX 192.0.2.1"), want: ErrBadSDP},
		{name: "srtp only", sdp: with("c=IN IP4 192.0.2.1", "m=audio 5000 RTP/SAVP 0"), want: ErrUnsupportedCodec},
		{name: "too large", sdp: append(with("c=IN IP4 192.0.2.1", "m=audio 5000 RTP/AVP 0"), make([]byte, maxSDPBytes)...), want: ErrBadSDP},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.sdp)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if testing.Verbose() {
				t.Log(err)
			}
		})
	}
}

func TestSupported(t *testing.T) {
	offered := []Codec{
		{PT: 18, Name: "G729", ClockRate: 8000, Channels: 1},
		{PT: 8, Name: "PCMA", ClockRate: 8000, Channels: 1},
		{PT: 111, Name: "OPUS", ClockRate: 48000, Channels: 2},
		{PT: 0, Name: "PCMU", ClockRate: 8000, Channels: 1},
	}
	caps := []Capability{{Name: "PCMU", ClockRate: 8000}, {Name: "opus", ClockRate: 48000}, {Name: "PCMA", ClockRate: 8000}}
	got := Supported(offered, caps)
	var names []string
	for _, c := range got {
		names = append(names, c.Name)
	}
	// The peer's order wins, not ours.
	if strings.Join(names, ",") != "PCMA,OPUS,PCMU" {
		t.Fatalf("supported = %v", names)
	}
}

func TestDirection(t *testing.T) {
	tests := []struct {
		in             Direction
		answer         Direction
		sends, recives bool
	}{
		{SendRecv, SendRecv, true, true},
		{SendOnly, RecvOnly, true, false},
		{RecvOnly, SendOnly, false, true},
		{Inactive, Inactive, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.in.String(), func(t *testing.T) {
			if tc.in.Answer() != tc.answer || tc.in.Sends() != tc.sends || tc.in.Receives() != tc.recives {
				t.Fatalf("answer %v sends %v receives %v", tc.in.Answer(), tc.in.Sends(), tc.in.Receives())
			}
		})
	}
}

// RFC 7587 §7 writes Opus as opus/48000/2; one without the channel count
// is the same format, or a compliant answer to it would not match.
func TestOpusWithoutChannelsIsStereoOpus(t *testing.T) {
	for _, v := range []string{"111 opus/48000", "111 OPUS/48000", "111 opus/48000/2"} {
		c, ok := parseRTPMap(v)
		if !ok || c.Channels != 2 || !c.Same(Codec{Name: "opus", ClockRate: 48000, Channels: 2}) {
			t.Errorf("rtpmap %q parsed as %+v, %v: want opus/48000/2", v, c, ok)
		}
	}
	if c, _ := parseRTPMap("0 PCMU/8000"); c.Channels != 1 {
		t.Errorf("PCMU without a count: %d channels, want 1", c.Channels)
	}
}

// a=ptime may be written as a decimal (RFC 8866 §6.4); nonsense is ignored.
func TestPtimeMayBeADecimal(t *testing.T) {
	for value, want := range map[string]int{"20": 20, "20.0": 20, "30.4": 30, "0": 0, "-5": 0, "NaN": 0, "1e9": 0, "x": 0} {
		d, err := Parse([]byte("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\na=ptime:" + value + "\r\n"))
		if err != nil {
			t.Fatalf("ptime %q: %v", value, err)
		}
		if got := d.Audio().Ptime; got != want {
			t.Errorf("ptime %q read as %d, want %d", value, got, want)
		}
	}
}

// a=maxptime is read like a=ptime, a decimal included, down to the whole
// milliseconds it allows: a limit rounded up would let a packet past it.
func TestMaxPtimeIsReadDownToWholeMilliseconds(t *testing.T) {
	for value, want := range map[string]int{"40": 40, "40.0": 40, "40.9": 40, " 60 ": 60, "1000": 1000, "0.5": 0, "0": 0, "-5": 0, "NaN": 0, "1e9": 0, "x": 0, "": 0} {
		d, err := Parse([]byte("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\na=ptime:20\r\na=maxptime:" + value + "\r\n"))
		if err != nil {
			t.Fatalf("maxptime %q: %v", value, err)
		}
		if a := d.Audio(); a.MaxPtime != want || a.Ptime != 20 {
			t.Errorf("maxptime %q read as %d (ptime %d), want %d (ptime 20)", value, a.MaxPtime, a.Ptime, want)
		}
	}
}
