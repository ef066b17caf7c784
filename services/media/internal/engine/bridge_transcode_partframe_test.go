package engine

import (
	"bytes"
	"testing"
	"time"

	"github.com/pion/rtp"

	"callgrid.dev/services/media/internal/codec"
)

// A source whose packets are no whole number of the encoder's 20 ms frames
// (30 ms of PCMU, into Opus) loses no audio in a talkspurt: the 10 ms each
// odd packet leaves short of a frame waits in the fifo for the next
// packet's audio, and makes a frame with it. Twelve packets of 30 ms are
// eighteen Opus packets of 20 ms, numbered and timestamped one after
// another, the tone throughout.
func TestSourcePacketsOfPartFramesLoseNoAudio(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a, b := newEndpoint(t), newEndpoint(t)
	nodeA, _, transcoding := bridge(t, e, "s1", a.sdp("0", "a=ptime:30"), b.sdp("111", "a=rtpmap:111 opus/48000/2"))
	if !transcoding {
		t.Fatal("PCMU to Opus not transcoded")
	}
	const (
		packets   = 12
		perPacket = 240 // 30 ms at 8 kHz
	)
	pcm := bytes.Join(encodeTone(t, codec.PCMU, 8000, packets*3/2), nil)
	for i := range packets {
		a.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: uint16(100 + i), Timestamp: uint32(5000 + i*perPacket), SSRC: 7, Marker: i == 0},
			pcm[i*perPacket:(i+1)*perPacket])
	}
	pkts := receivePackets(t, b, packets*3/2)
	checkTone(t, decodePackets(t, newTestDecoder(t, codec.Opus, 48000), pkts, 111, 20, true), 48000)
	b.expectNothing(100 * time.Millisecond)
}
