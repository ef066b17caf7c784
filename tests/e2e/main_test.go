package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// binDir holds the proxy and media binaries built once for the package.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "callgrid-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	builds := []struct {
		out  string
		pkg  string
		env  []string
		tags []string
	}{
		{out: "media", pkg: "callgrid.dev/services/media/cmd/media", tags: []string{"-tags", "nolibopusfile"}},
		{out: "proxy", pkg: "callgrid.dev/services/proxy/cmd/proxy", env: []string{"CGO_ENABLED=0"}},
	}
	for _, b := range builds {
		args := append([]string{"build", "-o", filepath.Join(dir, b.out)}, b.tags...)
		args = append(args, b.pkg)
		cmd := exec.Command("go", args...)
		cmd.Env = append(os.Environ(), b.env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: build %s: %v\n%s", b.pkg, err, out)
			return 1
		}
	}
	binDir = dir
	return m.Run()
}
