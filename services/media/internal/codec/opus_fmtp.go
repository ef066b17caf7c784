package codec

import (
	"strconv"
	"strings"

	"github.com/hraban/opus"
)

// Opus format parameter bounds (RFC 7587 §6.1).
const (
	opusMinBitrate      = 6000
	opusMinPlaybackRate = 8000
	opusMaxPlaybackRate = 48000
)

// ForReceiver is o as the receiver whose a=fmtp for Opus is fmtp (RFC 7587
// §6.1) wants it: the parameters are the decoder's wishes and limits, and
// the node's own settings are kept only as far as they allow.
//
//   - maxaveragebitrate caps the bitrate: the encoder must not exceed it.
//   - maxplaybackrate caps the audio bandwidth: what the receiver cannot
//     play is not worth the bits.
//   - cbr=1 asks for a constant bitrate.
//   - useinbandfec=1 says the decoder uses in-band FEC; without it (0 is
//     the default) FEC bits would be wasted, so FEC is off.
//   - usedtx=1 says the decoder prefers DTX; without it (0 is the
//     default) DTX is off.
//
// A parameter whose value is not a number in its range is ignored, as RFC
// 7587 has a receiver ignore what it does not understand; its default
// applies.
func (o OpusOptions) ForReceiver(fmtp string) OpusOptions {
	fec, dtx := false, false
	for param := range strings.SplitSeq(fmtp, ";") {
		name, value, _ := strings.Cut(strings.TrimSpace(param), "=")
		n, err := strconv.Atoi(strings.TrimSpace(value))
		if err != nil {
			continue
		}
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "maxaveragebitrate":
			if n >= opusMinBitrate {
				o.BitrateBPS = min(o.BitrateBPS, n)
			}
		case "maxplaybackrate":
			if n >= opusMinPlaybackRate {
				n = min(n, opusMaxPlaybackRate)
				if o.MaxPlaybackRateHz == 0 || n < o.MaxPlaybackRateHz {
					o.MaxPlaybackRateHz = n
				}
			}
		case "cbr":
			o.CBR = o.CBR || n == 1
		case "useinbandfec":
			fec = n == 1
		case "usedtx":
			dtx = n == 1
		}
	}
	o.FEC = o.FEC && fec
	o.DTX = o.DTX && dtx
	return o
}

// maxBandwidth is the widest Opus audio bandwidth (RFC 6716 §2: 4, 6, 8,
// 12 and 20 kHz of audio) a receiver playing at rate Hz can render: RFC
// 7587 §6.1 has the encoder not encode above rate/2, so the cap rounds
// down. A bandwidth of B kHz fits from a rate of 2B kHz, so 32 kHz gets
// superwideband (12 kHz), not fullband's 20 kHz past its 16. 0 is no cap.
func maxBandwidth(rate int) opus.Bandwidth {
	switch {
	case rate == 0:
		return opus.Fullband
	case rate < 12000:
		return opus.Narrowband
	case rate < 16000:
		return opus.Mediumband
	case rate < 24000:
		return opus.Wideband
	case rate < 40000:
		return opus.SuperWideband
	}
	return opus.Fullband
}
