package bus

import (
	"os"
	"strings"
	"testing"
)

// With no store directory configured, each embedded server keeps its
// JetStream data to itself and leaves nothing behind: two local servers
// never write the same files, and no run inherits the last one's buckets.
func TestEmbeddedWithoutStoreDirHasItsOwnTemporaryStore(t *testing.T) {
	// Keep whatever a server here writes, with or without the fix, out of
	// the host's real temporary directory.
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	a, err := StartEmbedded(EmbeddedConfig{Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown()
	b, err := StartEmbedded(EmbeddedConfig{Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Shutdown()
	dirA, dirB := a.srv.StoreDir(), b.srv.StoreDir()
	if dirA == "" || dirA == dirB {
		t.Fatalf("two embedded servers store JetStream in %q and %q", dirA, dirB)
	}
	if !strings.HasPrefix(dirA, tmp) {
		t.Fatalf("store %q is not under the temporary directory %q", dirA, tmp)
	}
	a.Shutdown()
	if _, err := os.Stat(dirA); !os.IsNotExist(err) {
		t.Fatalf("store %q still there after shutdown: %v", dirA, err)
	}
}
