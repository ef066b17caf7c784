package dsp

import "fmt"

// DTMF frequencies in Hz (ITU-T Q.23): each key sounds one row (low group)
// and one column (high group) frequency together.
var (
	dtmfRows    = [4]float64{697, 770, 852, 941}
	dtmfColumns = [4]float64{1209, 1336, 1477, 1633}
	dtmfKeypad  = [4]string{"123A", "456B", "789C", "*0#D"}
)

// DTMFDigits lists every DTMF key in keypad order.
const DTMFDigits = "123A456B789C*0#D"

// DTMF returns the (low, high) frequency pair in Hz for a keypad digit:
// 0-9, *, #, and A-D (either case). ok is false for anything else.
func DTMF(digit rune) (low, high float64, ok bool) {
	if digit >= 'a' && digit <= 'd' {
		digit -= 'a' - 'A'
	}
	for row, keys := range dtmfKeypad {
		for column, key := range keys {
			if key == digit {
				return dtmfRows[row], dtmfColumns[column], true
			}
		}
	}
	return 0, 0, false
}

// DualTone generates two summed sines, such as a DTMF digit.
type DualTone struct {
	low, high *Tone
}

// NewDTMFTone returns a generator for digit with each of its two tones at
// the given peak amplitude (keep it at or below half full scale to avoid
// clipping the sum).
func NewDTMFTone(digit rune, sampleRate float64, amplitude int16) (*DualTone, error) {
	low, high, ok := DTMF(digit)
	if !ok {
		return nil, fmt.Errorf("dtmf digit %q: not a keypad key", digit)
	}
	return &DualTone{
		low:  NewTone(low, sampleRate, amplitude),
		high: NewTone(high, sampleRate, amplitude),
	}, nil
}

// Fill overwrites pcm with the next len(pcm) samples of both tones.
func (d *DualTone) Fill(pcm []int16) {
	d.low.Fill(pcm)
	d.high.Add(pcm)
}
