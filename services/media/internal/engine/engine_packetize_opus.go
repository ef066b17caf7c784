package engine

import (
	"errors"
	"fmt"

	"callgrid.dev/services/media/internal/codec"
)

const (
	// opusCodeMask is the frame count code in an Opus TOC byte's low two
	// bits (RFC 6716 §3.1): 0 is one frame, 3 an arbitrary number.
	opusCodeMask  = 0x03
	opusOneFrame  = 0
	opusArbitrary = 3
	// opusVBR is the variable-size flag of a code 3 frame count byte.
	opusVBR = 0x80
	// maxOpusFrames is the most frames a code 3 packet counts (§3.2.5).
	maxOpusFrames = 48
	// opusShortLength is the first frame length that takes two bytes to
	// write (§3.2.1).
	opusShortLength = 252
)

// errOpusFramesDiffer is returned for Opus frames that cannot share one
// packet: its TOC byte tells one mode, bandwidth, frame size and channel
// count for all its frames.
var errOpusFramesDiffer = errors.New("opus frames of different configurations")

// packOpusFrames writes into out one Opus packet holding the frames of
// single-frame packets (RFC 6716 §3.1 code 0, as an encoder makes them),
// lasting as long as they do together, and returns its length. It is a
// code 3 packet (§3.2.5): one TOC byte, the frame count, and each frame's
// length but the last's when they differ. Decoders take every code alike.
func packOpusFrames(out []byte, packets [][]byte) (int, error) {
	if len(packets) == 0 || len(packets) > maxOpusFrames {
		return 0, fmt.Errorf("pack %d opus frames: %w", len(packets), codec.ErrFrameSize)
	}
	if len(packets[0]) == 0 {
		return 0, fmt.Errorf("pack an empty opus packet: %w", codec.ErrFrameSize)
	}
	toc := packets[0][0] &^ opusCodeMask
	same, size := true, 2 // TOC and frame count
	for i, p := range packets {
		if !sameOpusConfiguration(p, packets[0]) {
			return 0, fmt.Errorf("pack opus frame %d: %w", i, errOpusFramesDiffer)
		}
		same = same && len(p) == len(packets[0])
		size += len(p) - 1
	}
	if !same {
		for _, p := range packets[:len(packets)-1] {
			size += opusLengthSize(len(p) - 1)
		}
	}
	if size > len(out) {
		return 0, fmt.Errorf("pack %d opus frames in %d bytes, need %d: %w", len(packets), len(out), size, codec.ErrShortBuffer)
	}
	out[0], out[1] = toc|opusArbitrary, byte(len(packets))
	n := 2
	if !same {
		out[1] |= opusVBR
		for _, p := range packets[:len(packets)-1] {
			n += putOpusLength(out[n:], len(p)-1)
		}
	}
	for _, p := range packets {
		n += copy(out[n:], p[1:])
	}
	return n, nil
}

// sameOpusConfiguration reports whether an encoder's packet can share a
// code 3 packet with first: both hold one frame (code 0), of the same mode,
// bandwidth, frame size and channel count.
func sameOpusConfiguration(p, first []byte) bool {
	return len(p) > 0 && len(first) > 0 &&
		p[0]&opusCodeMask == opusOneFrame && first[0]&opusCodeMask == opusOneFrame &&
		p[0]&^opusCodeMask == first[0]&^opusCodeMask
}

// opusLengthSize is how many bytes putOpusLength takes for a frame of n.
func opusLengthSize(n int) int {
	if n < opusShortLength {
		return 1
	}
	return 2
}

// putOpusLength writes a frame length as §3.2.1 codes it: below 252 in one
// byte, else a first byte of 252 to 255 and a second counting fours.
func putOpusLength(b []byte, n int) int {
	if n < opusShortLength {
		b[0] = byte(n)
		return 1
	}
	first := opusShortLength + n&3
	b[0], b[1] = byte(first), byte((n-first)>>2)
	return 2
}
