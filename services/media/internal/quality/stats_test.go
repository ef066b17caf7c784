package quality

import "testing"

// The loss ratio is lost over RFC 3550's expected count, summed over a
// call's sources: the packet a source spends on probation is in neither.
func TestLossRatioIsLostOverRFC3550Expected(t *testing.T) {
	twoSources := NewReceiver(8000)
	feed(twoSources, without(run(0, 100), 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)...)
	twoSources.NewSource()
	feed(twoSources, without(run(5000, 50), 5010, 5020, 5030, 5040, 5045)...)
	st := twoSources.Current()

	tests := []struct {
		desc           string
		lost, expected uint64
		want           float64
	}{
		{desc: "nothing expected", lost: 0, expected: 0, want: 0},
		{desc: "a tenth lost", lost: 10, expected: 100, want: 0.1},
		{desc: "everything lost", lost: 7, expected: 7, want: 1},
		// 99 expected of the first source (seq 0 was on probation) and
		// 49 of the second (5000 was), 10 and 5 of them lost.
		{desc: "a call of two sources", lost: st.CallLost, expected: st.CallExpected, want: 15.0 / 148},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			if got := LossRatio(tt.lost, tt.expected); got != tt.want {
				t.Errorf("LossRatio(%d, %d) = %v, want %v", tt.lost, tt.expected, got, tt.want)
			}
		})
	}
	if got, want := st.LossPercent(), 100*(5.0/49); got != want {
		t.Errorf("the current source's LossPercent = %v, want %v", got, want)
	}
}
