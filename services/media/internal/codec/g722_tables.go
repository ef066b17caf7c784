package codec

// Tables of ITU-T G.722 (11/88 and later editions), in the fixed-point
// scaling of the standard's block descriptions. Names follow the blocks
// that use them.

// g722QMF is the 24-tap quadrature mirror filter h0..h23 shared by the
// transmit and receive QMF. It is symmetric (h[i] == h[23-i]) and its taps
// sum to 8192.
var g722QMF = [24]int32{
	3, -11, -11, 53, 12, -156, 32, 362, -210, -805, 951, 3876,
	3876, 951, -805, -210, 362, 32, -156, 12, 53, -11, -11, 3,
}

// g722LowDecision holds the lower sub-band quantiser decision levels for
// magnitude intervals 1..29, in units of the scale factor DETL / 4096 (the
// standard's table scaled by 512).
var g722LowDecision = [30]int32{
	0, 35, 72, 110, 150, 190, 233, 276, 323, 370, 422, 473, 530, 587, 650,
	714, 786, 858, 940, 1023, 1121, 1219, 1339, 1458, 1612, 1765, 1980,
	2195, 2557, 2919,
}

// g722LowCodeNegative and g722LowCodePositive map a magnitude interval
// 1..30 to the 6-bit lower sub-band code for a negative or positive error.
var (
	g722LowCodeNegative = [31]int32{
		0, 63, 62, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19,
		18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4,
	}
	g722LowCodePositive = [31]int32{
		0, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47,
		46, 45, 44, 43, 42, 41, 40, 39, 38, 37, 36, 35, 34, 33, 32,
	}
)

// g722LowInverse6 is the 6-bit lower sub-band inverse quantiser (QQ6 in the
// standard, used for output at 64 kbit/s), indexed by the full code.
// Codes 0-3 are not produced by an encoder and decode to the smallest level.
var g722LowInverse6 = [64]int32{
	-136, -136, -136, -136, -24808, -21904, -19008, -16704,
	-14984, -13512, -12280, -11192, -10232, -9360, -8576, -7856,
	-7192, -6576, -6000, -5456, -4944, -4464, -4008, -3576,
	-3168, -2776, -2400, -2032, -1688, -1360, -1040, -728,
	24808, 21904, 19008, 16704, 14984, 13512, 12280, 11192,
	10232, 9360, 8576, 7856, 7192, 6576, 6000, 5456,
	4944, 4464, 4008, 3576, 3168, 2776, 2400, 2032,
	1688, 1360, 1040, 728, 432, 136, -432, -136,
}

// g722LowInverse4 is the 4-bit inverse quantiser (QQ4) that drives the
// lower sub-band predictor and scale factor, indexed by code >> 2. Using the
// truncated code keeps encoder and decoder in step at every bit rate.
var g722LowInverse4 = [16]int32{
	0, -20456, -12896, -8968, -6288, -4240, -2584, -1200,
	20456, 12896, 8968, 6288, 4240, 2584, 1200, 0,
}

// g722LowMagnitude maps the 4-bit code to its magnitude class for the
// lower sub-band log scale factor update, and g722LowLogStep gives the
// update (WL) for each class.
var (
	g722LowMagnitude = [16]int32{0, 7, 6, 5, 4, 3, 2, 1, 7, 6, 5, 4, 3, 2, 1, 0}
	g722LowLogStep   = [8]int32{-60, -30, 58, 172, 334, 538, 1198, 3042}
)

// g722HighInverse is the 2-bit higher sub-band inverse quantiser (QQ2);
// g722HighMagnitude and g722HighLogStep play the roles of their lower band
// counterparts.
var (
	g722HighInverse   = [4]int32{-7408, -1616, 7408, 1616}
	g722HighMagnitude = [4]int32{2, 1, 2, 1}
	g722HighLogStep   = [3]int32{0, -214, 798}
)

// g722HighDecision is the single higher sub-band decision level, in units
// of DETH / 4096; g722HighCodeNegative/Positive map the interval (1 or 2)
// to the 2-bit code.
const g722HighDecision = 564

var (
	g722HighCodeNegative = [3]int32{0, 1, 0}
	g722HighCodePositive = [3]int32{0, 3, 2}
)

// g722ScaleMantissa is the antilog table (ILB) turning the log scale factor
// into the linear one: round(2048 * 2^(i/32)).
var g722ScaleMantissa = [32]int32{
	2048, 2093, 2139, 2186, 2233, 2282, 2332, 2383,
	2435, 2489, 2543, 2599, 2656, 2714, 2774, 2834,
	2896, 2960, 3025, 3091, 3158, 3228, 3298, 3371,
	3444, 3520, 3597, 3676, 3756, 3838, 3922, 4008,
}
