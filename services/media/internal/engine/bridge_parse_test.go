package engine

import (
	"bytes"
	"testing"

	"github.com/pion/rtp"
)

// The header read in place agrees with a full RTP parser on every packet
// that parser accepts: same fields, same payload.
func FuzzParseRTPAgreesWithPion(f *testing.F) {
	seeds := []rtp.Packet{
		{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: 7, Timestamp: 160, SSRC: 9}, Payload: make([]byte, 160)},
		{Header: rtp.Header{Version: 2, Marker: true, PayloadType: 101, SequenceNumber: 65535, Timestamp: 1 << 31, SSRC: 1, CSRC: []uint32{4, 5}}, Payload: []byte{1, 2, 3, 4}},
		{Header: rtp.Header{Version: 2, Padding: true, PayloadType: 8, SSRC: 2}, Payload: []byte{9, 9}, PaddingSize: 3},
	}
	ext := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SSRC: 3}, Payload: []byte{7}}
	_ = ext.SetExtension(1, []byte{0xaa, 0xbb})
	seeds = append(seeds, ext)
	for _, p := range seeds {
		b, err := p.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		var d direction
		payload, ok := d.parse(pkt)
		var want rtp.Packet
		if want.Unmarshal(pkt) != nil || want.Version != 2 {
			return // what the full parser rejects may still be relayed, unparsed parts and all
		}
		if !ok {
			t.Fatalf("rejected a packet the full parser accepts: %x", pkt)
		}
		got := d.hdr
		if got.marker != want.Marker || got.payloadType != want.PayloadType || got.seq != want.SequenceNumber ||
			got.timestamp != want.Timestamp || got.ssrc != want.SSRC {
			t.Fatalf("header %+v, full parser %+v", got, want.Header)
		}
		if !bytes.Equal(payload, want.Payload) {
			t.Fatalf("payload %x, full parser %x", payload, want.Payload)
		}
	})
}

// Truncated headers, CSRC lists and extensions are malformed, not read past.
func TestParseRTPRejectsTruncatedHeaders(t *testing.T) {
	for name, pkt := range map[string][]byte{
		"short":              {0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0},
		"version 1":          {0x40, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9},
		"csrc past the end":  {0x82, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 1},
		"extension header":   {0x90, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9, 0xbe, 0xde},
		"extension body":     {0x90, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9, 0xbe, 0xde, 0, 2, 1, 2, 3, 4},
		"padding past start": {0xa0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9, 1, 5},
		"zero padding":       {0xa0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9, 1, 0},
	} {
		var d direction
		if _, ok := d.parse(pkt); ok {
			t.Errorf("%s: accepted", name)
		}
	}
}
