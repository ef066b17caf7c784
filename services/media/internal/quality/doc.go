// Package quality measures received RTP streams and estimates how a caller
// would rate them: RFC 3550 receiver statistics (loss, jitter, duplicates,
// reordering, with source validation) and an ITU-T G.107 E-model MOS.
package quality
