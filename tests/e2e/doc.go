// Package e2e holds black-box tests of the built proxy and media binaries:
// real processes on loopback, an embedded NATS server, SIP user agents that
// register with digest and carry real RTP, and sipp.
package e2e
