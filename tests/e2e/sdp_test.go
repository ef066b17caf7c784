package e2e

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// mediaDesc is the audio part of an SDP: what the phones here offer and
// what they read back.
type mediaDesc struct {
	addr      *net.UDPAddr
	formats   []uint8
	rtpmap    map[uint8]string // "PCMU/8000", "opus/48000/2", "telephone-event/8000"
	direction string
	version   uint64 // the o= line's session version
}

// sdpFor builds a phone's SDP: one codec and telephone-event at its clock.
func sdpFor(port int, c *audioCodec, audioPT, eventPT uint8, direction string) []byte {
	rtpmap := fmt.Sprintf("%s/%d", c.name, c.clock)
	fmtp := ""
	if c.name == "opus" {
		rtpmap += "/2"
		fmtp = fmt.Sprintf("a=fmtp:%d minptime=10;useinbandfec=1\r\n", audioPT)
	}
	return []byte(fmt.Sprintf("v=0\r\n"+
		"o=- 1 %d IN IP4 127.0.0.1\r\n"+
		"s=-\r\n"+
		"c=IN IP4 127.0.0.1\r\n"+
		"t=0 0\r\n"+
		"m=audio %d RTP/AVP %d %d\r\n"+
		"a=rtpmap:%d %s\r\n%s"+
		"a=rtpmap:%d telephone-event/%d\r\n"+
		"a=fmtp:%d 0-16\r\n"+
		"a=ptime:20\r\n"+
		"a=%s\r\n",
		len(direction), port, audioPT, eventPT, audioPT, rtpmap, fmtp, eventPT, c.clock, eventPT, direction))
}

func parseSDP(b []byte) (mediaDesc, error) {
	d := mediaDesc{rtpmap: map[uint8]string{}, direction: "sendrecv"}
	var host string
	var port int
	for _, line := range strings.Split(strings.ReplaceAll(string(b), "\r\n", "\n"), "\n") {
		switch {
		case strings.HasPrefix(line, "o="):
			if f := strings.Fields(line); len(f) >= 3 {
				d.version, _ = strconv.ParseUint(f[2], 10, 64)
			}
		case strings.HasPrefix(line, "c=IN IP4 "):
			host = strings.TrimSpace(strings.TrimPrefix(line, "c=IN IP4 "))
		case strings.HasPrefix(line, "m=audio "):
			f := strings.Fields(line)
			if len(f) < 4 {
				return d, fmt.Errorf("bad m-line %q", line)
			}
			port, _ = strconv.Atoi(f[1])
			for _, pt := range f[3:] {
				n, err := strconv.Atoi(pt)
				if err != nil {
					return d, fmt.Errorf("bad format %q", pt)
				}
				d.formats = append(d.formats, uint8(n))
			}
		case strings.HasPrefix(line, "a=rtpmap:"):
			ptStr, enc, ok := strings.Cut(strings.TrimPrefix(line, "a=rtpmap:"), " ")
			if n, err := strconv.Atoi(ptStr); ok && err == nil {
				d.rtpmap[uint8(n)] = strings.TrimSpace(enc)
			}
		case line == "a=sendonly" || line == "a=recvonly" || line == "a=inactive" || line == "a=sendrecv":
			d.direction = strings.TrimPrefix(line, "a=")
		}
	}
	if host == "" || port == 0 {
		return d, fmt.Errorf("sdp without address or port:\n%s", b)
	}
	d.addr = &net.UDPAddr{IP: net.ParseIP(host), Port: port}
	return d, nil
}

// pt finds the payload type of an encoding ("PCMU/8000"), by prefix.
func (d mediaDesc) pt(encoding string) (uint8, bool) {
	for _, f := range d.formats {
		name, ok := d.rtpmap[f]
		if !ok {
			// Static payload types may come without rtpmap.
			switch {
			case f == 0 && strings.EqualFold(encoding, "PCMU/8000"):
				return 0, true
			case f == 8 && strings.EqualFold(encoding, "PCMA/8000"):
				return 8, true
			}
			continue
		}
		if strings.HasPrefix(strings.ToLower(name), strings.ToLower(encoding)) {
			return f, true
		}
	}
	return 0, false
}

// answerDirection is the direction that answers an offered one.
func answerDirection(offered string) string {
	switch offered {
	case "sendonly":
		return "recvonly"
	case "recvonly":
		return "sendonly"
	case "inactive":
		return "inactive"
	}
	return "sendrecv"
}
