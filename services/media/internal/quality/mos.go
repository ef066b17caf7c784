package quality

import (
	"math"
	"strings"
)

// Impairment holds the E-model codec parameters of ITU-T G.113.
type Impairment struct {
	// Ie is the equipment impairment factor: the codec's loss of quality
	// with no packet loss, on the narrowband R scale.
	Ie float64
	// Bpl is the packet-loss robustness factor: the higher it is, the more
	// gracefully quality falls with random loss.
	Bpl float64
	// DelayMs is what the codec adds to mouth-to-ear delay: one 20 ms
	// frame of packetisation plus its look-ahead.
	DelayMs float64
}

// Codec impairments. G.711 values are those of ITU-T G.113 Appendix I. The
// others are not tabulated for the narrowband E-model, so the choices are
// explained here.
var (
	// G711PLC is G.711 with packet-loss concealment at the receiver (as the
	// media node's decoders and nearly every phone do): Ie 0, Bpl 25.1.
	G711PLC = Impairment{Ie: 0, Bpl: 25.1, DelayMs: 20}
	// G711NoPLC is G.711 with lost packets replaced by silence: Bpl 4.3.
	G711NoPLC = Impairment{Ie: 0, Bpl: 4.3, DelayMs: 20}
	// G722PLC is G.722 at 64 kbit/s with concealment. A narrowband rating
	// cannot credit its wider band, and within the narrowband it is as
	// transparent as G.711 (Ie 0); as a sample-by-sample coder with
	// waveform concealment it degrades under loss like G.711 (Bpl 25.1).
	// Its QMF adds 1.5 ms of delay.
	G722PLC = Impairment{Ie: 0, Bpl: 25.1, DelayMs: 21.5}
	// OpusFEC is Opus at the node's default 24 kbit/s with in-band FEC.
	// Listening tests of Opus at 24 kbit/s wideband rate it above G.711
	// (the IETF codec characterisation, Rämö and Toukomaa, Interspeech
	// 2011), so on the narrowband scale Ie is 0. Its concealment and FEC
	// recover more from random loss than G.711 concealment, so Bpl is set
	// above G.711's at 30. Delay: 20 ms frame plus 6.5 ms look-ahead.
	OpusFEC = Impairment{Ie: 0, Bpl: 30, DelayMs: 26.5}
)

// CodecImpairment returns the impairment MOS uses for an SDP codec name
// (case-insensitive): PCMU, PCMA, G722 or opus.
func CodecImpairment(codec string) (Impairment, bool) {
	// EqualFold rather than a switch on ToUpper: it does not allocate.
	switch {
	case strings.EqualFold(codec, "PCMU"), strings.EqualFold(codec, "PCMA"):
		return G711PLC, true
	case strings.EqualFold(codec, "G722"):
		return G722PLC, true
	case strings.EqualFold(codec, "opus"):
		return OpusFEC, true
	}
	return Impairment{}, false
}

// DefaultR is the G.107 rating of a connection with default parameters and
// no delay, codec or loss impairment (Ro - Is).
const DefaultR = 93.2

// MOS estimates the mean opinion score (1 to 4.5) of a call leg with the
// ITU-T G.107 E-model: R = 93.2 - Idd - Ie,eff, converted to MOS with the
// G.107 Annex B formula. lossPercent is random packet loss (0-100),
// oneWayDelayMs the network's one-way delay and jitterMs the interarrival
// jitter; the jitter buffer is taken to hold twice the jitter, which adds
// to the delay, and packets it discards are expected in lossPercent.
// Unknown codecs are rated as G.711 with concealment, the most common.
func MOS(codec string, lossPercent, oneWayDelayMs, jitterMs float64) float64 {
	imp, ok := CodecImpairment(codec)
	if !ok {
		imp = G711PLC
	}
	return Estimate(imp, lossPercent, oneWayDelayMs, jitterMs)
}

// Estimate is MOS for explicit codec parameters.
func Estimate(imp Impairment, lossPercent, oneWayDelayMs, jitterMs float64) float64 {
	return RToMOS(RFactor(imp, lossPercent, oneWayDelayMs, jitterMs))
}

// RFactor returns the G.107 transmission rating R (0 to 100 for
// narrowband). Talker and listener echo terms are taken as zero, which
// assumes echo cancellation, as the G.107 default parameters nearly do.
func RFactor(imp Impairment, lossPercent, oneWayDelayMs, jitterMs float64) float64 {
	loss := clean(lossPercent, 0, 100)
	delay := clean(oneWayDelayMs, 0, math.MaxFloat64) +
		2*clean(jitterMs, 0, math.MaxFloat64) + imp.DelayMs
	r := DefaultR - delayImpairment(delay) - effectiveEquipmentImpairment(imp, loss)
	return max(0, min(100, r))
}

// delayImpairment is G.107's Idd for an absolute one-way delay ta in ms:
// nothing up to 100 ms, then rising steeply past about 200 ms.
func delayImpairment(ta float64) float64 {
	if ta <= 100 {
		return 0
	}
	x := math.Log10(ta/100) / math.Log10(2)
	return 25 * (math.Pow(1+math.Pow(x, 6), 1.0/6) - 3*math.Pow(1+math.Pow(x/3, 6), 1.0/6) + 2)
}

// effectiveEquipmentImpairment is G.107's Ie,eff for random loss (burst
// ratio 1): Ie + (95 - Ie) · Ppl / (Ppl + Bpl).
func effectiveEquipmentImpairment(imp Impairment, lossPercent float64) float64 {
	return imp.Ie + (95-imp.Ie)*lossPercent/(lossPercent+imp.Bpl)
}

// RToMOS converts an R rating to MOS with the G.107 Annex B formula.
func RToMOS(r float64) float64 {
	switch {
	case math.IsNaN(r) || r <= 0:
		return 1
	case r >= 100:
		return 4.5
	}
	// The cubic dips just under 1 for R below about 6.5; G.107's scale
	// starts at 1.
	return max(1, 1+0.035*r+r*(r-60)*(100-r)*7e-6)
}

// clean limits v to [lo, hi] and maps NaN to lo, so bad measurements give a
// defined score instead of NaN.
func clean(v, lo, hi float64) float64 {
	if math.IsNaN(v) {
		return lo
	}
	return max(lo, min(hi, v))
}
