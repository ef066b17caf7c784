package sipproxy

import (
	"os"
	"testing"
)

// TestMain applies the process-wide sipgo settings as the proxy's main
// does before it serves (app.Run), with the default configuration.
func TestMain(m *testing.M) {
	ApplyUDPLimits(Config{})
	ApplyTransactionLinger(Config{}.WithDefaults().TransactionLinger)
	RouteSipgoDefaultLogs(testLogger())
	os.Exit(m.Run())
}
