package sipproxy

import (
	"time"

	"github.com/emiago/sipgo/sip"
)

// ApplyTransactionLinger sets how long every sipgo transaction of the
// process is kept once answered (Config.TransactionLinger): Timers J, L
// and M. sipgo reads them from package variables, so this must run before
// the first transaction, once per process.
func ApplyTransactionLinger(d time.Duration) {
	sip.Timer_J = d
	sip.Timer_L = d
	sip.Timer_M = d
}
