package codec

// g722Band is the ADPCM state of one sub-band: the adaptive scale factor and
// the pole-zero predictor of ITU-T G.722 block 4, identical in encoder and
// decoder so both reconstruct the same signal.
type g722Band struct {
	logScale int32 // NBL / NBH, log-domain scale factor
	scale    int32 // DETL / DETH, linear scale factor

	estimate     int32 // SL / SH: predicted signal
	zeroEstimate int32 // SZL / SZH: zero section part of the estimate

	poles    [3]int32 // AL1, AL2 (index 0 unused)
	zeros    [7]int32 // BL1..BL6 (index 0 unused)
	diffs    [7]int32 // DLT0..DLT6: quantised differences, newest first
	partials [3]int32 // PLT0..PLT2: partially reconstructed signals
	recons   [3]int32 // RLT0..RLT2: reconstructed signals
}

// Scale factor limits and initial values from blocks 3L and 3H.
const (
	g722LowLogScaleMax  = 18432
	g722HighLogScaleMax = 22528
	g722LowScaleInit    = 32
	g722HighScaleInit   = 8
)

func (b *g722Band) reset(initialScale int32) {
	*b = g722Band{scale: initialScale}
}

// saturate16 limits v to the 16-bit range, as the standard's LIMIT blocks do.
func saturate16(v int32) int32 {
	return max(-32768, min(32767, v))
}

// sign16 is the standard's sgn on a 16-bit value: 0 for non-negative, -1 for
// negative, so two values have equal signs when their sign16 match.
func sign16(v int32) int32 { return v >> 15 }

// adaptScale runs LOGSCL/LOGSCH and SCALEL/SCALEH: leak the log scale factor,
// add the step for the last code's magnitude, clamp, and convert it to the
// linear scale factor. shift is 8 for the lower band and 10 for the higher.
func (b *g722Band) adaptScale(step, limit, shift int32) {
	b.logScale = max(0, min(limit, (b.logScale*127)>>7+step))
	mantissa := g722ScaleMantissa[(b.logScale>>6)&31]
	exponent := shift - (b.logScale >> 11)
	if exponent < 0 {
		mantissa <<= -exponent
	} else {
		mantissa >>= exponent
	}
	b.scale = mantissa << 2
}

// predict runs block 4 with the newly quantised difference d: reconstruct,
// adapt the two poles and six zeros by sign-sign LMS, shift the delay lines
// and compute the estimate for the next sample.
func (b *g722Band) predict(d int32) {
	// RECONS and PARREC.
	b.diffs[0] = d
	b.recons[0] = saturate16(b.estimate + d)
	b.partials[0] = saturate16(b.zeroEstimate + d)

	b.adaptPoles()
	b.adaptZeros(d)

	// DELAYA: age the delay lines.
	copy(b.diffs[1:], b.diffs[:6])
	b.partials[2], b.partials[1] = b.partials[1], b.partials[0]
	b.recons[2], b.recons[1] = b.recons[1], b.recons[0]

	// FILTEP: pole section on the reconstructed signal.
	pole1 := (b.poles[1] * saturate16(b.recons[1]+b.recons[1])) >> 15
	pole2 := (b.poles[2] * saturate16(b.recons[2]+b.recons[2])) >> 15
	poleEstimate := saturate16(pole1 + pole2)

	// FILTEZ: zero section on the quantised differences.
	var zero int32
	for i := 6; i > 0; i-- {
		zero += (b.zeros[i] * saturate16(b.diffs[i]+b.diffs[i])) >> 15
	}
	b.zeroEstimate = saturate16(zero)

	// PREDIC.
	b.estimate = saturate16(poleEstimate + b.zeroEstimate)
}

// adaptPoles runs UPPOL2 then UPPOL1, with the stability limits that keep
// the second order pole section inside its triangle.
func (b *g722Band) adaptPoles() {
	s0, s1, s2 := sign16(b.partials[0]), sign16(b.partials[1]), sign16(b.partials[2])

	wd1 := saturate16(b.poles[1] << 2)
	wd2 := wd1
	if s0 == s1 {
		wd2 = -wd1
	}
	wd2 = min(wd2, 32767)
	wd3 := wd2 >> 7
	if s0 == s2 {
		wd3 += 128
	} else {
		wd3 -= 128
	}
	wd3 += (b.poles[2] * 32512) >> 15
	pole2 := max(-12288, min(12288, wd3))

	step := int32(-192)
	if s0 == s1 {
		step = 192
	}
	pole1 := saturate16(step + (b.poles[1]*32640)>>15)
	bound := saturate16(15360 - pole2)
	pole1 = max(-bound, min(bound, pole1))

	b.poles[1], b.poles[2] = pole1, pole2
}

// adaptZeros runs UPZERO: each zero leaks towards 0 and steps by ±128
// according to whether its delayed difference agrees in sign with d.
func (b *g722Band) adaptZeros(d int32) {
	step := int32(128)
	if d == 0 {
		step = 0
	}
	s0 := sign16(d)
	for i := 1; i < 7; i++ {
		wd := -step
		if sign16(b.diffs[i]) == s0 {
			wd = step
		}
		b.zeros[i] = saturate16(wd + (b.zeros[i]*32640)>>15)
	}
}
