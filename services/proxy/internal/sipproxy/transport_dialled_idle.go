package sipproxy

import (
	"time"

	"github.com/emiago/sipgo/sip"
)

// dialledIdleTimeout closes the TCP and TLS connections the proxy dials
// (to contacts, gateways, other replicas) once nothing has come over them
// for idle, as streamListener closes quiet connections peers opened:
// sipgo keeps a dialled connection until the far end closes it, each
// holding a descriptor and a reading goroutine. sipgo has no hook on a
// dialled connection but its per-read deadline (ReadTimeout), so here
// quiet counts what comes back only; whatever the proxy sends over such a
// connection, requests or responses, draws an answer or a request over
// it in turn. The accepted connections ignore that deadline
// (idleConn.SetReadDeadline) and keep their own. idle of 0 or less
// keeps dialled connections as sipgo does.
func dialledIdleTimeout(idle time.Duration) sip.TransportLayerOption {
	return func(l *sip.TransportLayer) {
		if idle <= 0 {
			return
		}
		sip.WithTransportLayerTransports(sip.TransportsConfig{
			TCP: &sip.TransportTCP{ReadTimeout: idle},
			TLS: &sip.TransportTLS{TransportTCP: &sip.TransportTCP{ReadTimeout: idle}},
		})(l)
	}
}
