package quality

import (
	"math"
	"testing"
)

func TestMOSReferencePoints(t *testing.T) {
	tests := []struct {
		desc                string
		codec               string
		loss, delay, jitter float64
		want, tolerance     float64
	}{
		// R = 93.2 gives the well-known G.711 ceiling of about 4.41.
		{"G.711 clean", "PCMU", 0, 20, 0, 4.41, 0.01},
		{"A-law clean", "pcma", 0, 20, 0, 4.41, 0.01},
		{"G.722 clean", "G722", 0, 20, 0, 4.41, 0.01},
		{"opus clean", "opus", 0, 20, 0, 4.41, 0.01},
		// 1 % loss with PLC: Ie,eff = 95/26.1 = 3.64, R = 89.56.
		{"G.711 1% loss", "PCMU", 1, 20, 0, 4.33, 0.01},
		// 5 % loss: Ie,eff = 475/30.1 = 15.78, R = 77.42.
		{"G.711 5% loss", "PCMU", 5, 20, 0, 3.92, 0.01},
		// 300 ms mouth-to-ear (280 + 20 frame): Idd = 14.74, R = 78.46.
		{"G.711 long delay", "PCMU", 0, 280, 0, 3.96, 0.01},
		{"unknown codec rated as G.711", "G729", 1, 20, 0, 4.33, 0.01},
		{"total loss", "PCMU", 100, 20, 0, 1.0, 0.3},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			got := MOS(tt.codec, tt.loss, tt.delay, tt.jitter)
			if math.Abs(got-tt.want) > tt.tolerance {
				t.Fatalf("MOS = %.3f, want %.2f ± %.2f", got, tt.want, tt.tolerance)
			}
		})
	}
}

func TestMOSFallsWithLoss(t *testing.T) {
	for _, codec := range []string{"PCMU", "PCMA", "G722", "opus"} {
		t.Run(codec, func(t *testing.T) {
			previous := math.Inf(1)
			for loss := 0.0; loss <= 50; loss += 0.5 {
				got := MOS(codec, loss, 40, 5)
				if got >= previous {
					t.Fatalf("MOS %.4f at %.1f%% loss is not below %.4f", got, loss, previous)
				}
				if got < 1 || got > 4.5 {
					t.Fatalf("MOS %.4f out of range", got)
				}
				previous = got
			}
		})
	}
}

func TestMOSFallsWithDelayAndJitter(t *testing.T) {
	previous := MOS("PCMU", 1, 0, 0)
	for delay := 10.0; delay <= 800; delay += 10 {
		got := MOS("PCMU", 1, delay, 0)
		if got > previous {
			t.Fatalf("MOS %.4f at %v ms above %.4f at less delay", got, delay, previous)
		}
		previous = got
	}
	if MOS("PCMU", 1, 150, 40) >= MOS("PCMU", 1, 150, 0) {
		t.Fatal("jitter did not lower MOS past 100 ms")
	}
}

func TestMOSWithoutPLC(t *testing.T) {
	with := Estimate(G711PLC, 2, 20, 0)
	without := Estimate(G711NoPLC, 2, 20, 0)
	if without >= with-0.5 {
		t.Fatalf("2%% loss without PLC rates %.2f, with PLC %.2f: concealment should matter", without, with)
	}
}

func TestDelayImpairment(t *testing.T) {
	tests := []struct {
		ta, want float64
	}{
		{50, 0},
		{100, 0},
		{200, 3.05},
		{400, 24.07},
	}
	for _, tt := range tests {
		if got := delayImpairment(tt.ta); math.Abs(got-tt.want) > 0.01 {
			t.Errorf("Idd(%v ms) = %.3f, want %.2f", tt.ta, got, tt.want)
		}
	}
}

func TestRToMOS(t *testing.T) {
	tests := []struct {
		r, want float64
	}{
		{math.NaN(), 1},
		{-5, 1},
		{0, 1},
		{3, 1},
		{50, 2.58},
		{70, 3.60},
		{80, 4.02},
		{93.2, 4.41},
		{100, 4.5},
		{120, 4.5},
	}
	for _, tt := range tests {
		if got := RToMOS(tt.r); math.Abs(got-tt.want) > 0.01 {
			t.Errorf("RToMOS(%v) = %.3f, want %.2f", tt.r, got, tt.want)
		}
	}
}

func TestMOSHandlesBadInput(t *testing.T) {
	for _, in := range [][3]float64{
		{math.NaN(), math.NaN(), math.NaN()},
		{-10, -10, -10},
		{1000, math.Inf(1), math.Inf(1)},
	} {
		got := MOS("PCMU", in[0], in[1], in[2])
		if math.IsNaN(got) || got < 1 || got > 4.5 {
			t.Errorf("MOS(%v) = %v, want a score in [1, 4.5]", in, got)
		}
	}
}
