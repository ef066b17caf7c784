package main

import (
	"encoding/binary"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

const (
	// frameMillis is the packet interval of every stream: 50 packets/s.
	frameMillis = 20
	// sentRing holds the send times of the last packets of a stream, by
	// packet index: 256 packets are 5.12 s, far beyond any latency that
	// would still pass.
	sentRing = 256
	// rtpHeaderLen is the fixed RTP header this generator writes (no CSRC,
	// no extension).
	rtpHeaderLen = 12
)

// stream is one direction of one call as the generator sees it: sent by
// one leg's endpoint to the node, received by the other leg's endpoint
// from the node.
type stream struct {
	// Send side, owned by the pacer.
	sendFD int
	dst    unix.RawSockaddrInet4
	pkt    []byte   // header + the largest payload
	frames [][]byte // payloads sent in turn
	pt     uint8
	tsStep uint32
	seq    uint16 // index of the next packet (sequence numbers start at 0)
	ts     uint32
	ssrc   uint32
	sentAt [sentRing]atomic.Int64 // wall-clock ns of packet index i at [i%sentRing]

	// Receive side, owned by the receiver of the socket it arrives on.
	rxStarted bool
	rxOffset  uint16 // node's sequence number of our index 0
	rxHigh    uint16 // highest index received
}

// next writes the stream's next packet into s.pkt and returns it with its
// index.
func (s *stream) next() ([]byte, uint16) {
	idx := s.seq
	payload := s.frames[int(idx)%len(s.frames)]
	b := s.pkt
	b[0] = 0x80
	b[1] = s.pt & 0x7f
	binary.BigEndian.PutUint16(b[2:], idx)
	binary.BigEndian.PutUint32(b[4:], s.ts)
	binary.BigEndian.PutUint32(b[8:], s.ssrc)
	n := copy(b[rtpHeaderLen:], payload)
	s.seq++
	s.ts += s.tsStep
	return b[:rtpHeaderLen+n], idx
}

// receive accounts a packet the node forwarded on this stream with
// sequence number seq and returns its index in the stream and whether it
// arrived out of order. The first packet received is taken to be index 0:
// a passthrough node keeps our numbering (offset 0), a transcoding one
// starts its own sequence, one packet out per packet in.
func (s *stream) receive(seq uint16) (idx uint16, reordered bool) {
	if !s.rxStarted {
		s.rxStarted = true
		s.rxOffset = seq
		s.rxHigh = 0
		return 0, false
	}
	idx = seq - s.rxOffset
	if int16(idx-s.rxHigh) < 0 {
		return idx, true
	}
	s.rxHigh = idx
	return idx, false
}
