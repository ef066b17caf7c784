// Package dsp holds the small signal-processing pieces the media node uses
// to make and check audio: a phase-continuous tone generator, DTMF tone
// pairs, a Goertzel single-frequency detector and a tone signal-to-noise
// estimate. Everything works on mono int16 PCM, the node's internal format.
package dsp
