//go:build tools

// Package tools pins the code generators the build uses, so that
// `go run` and `go install` from this module get reproducible versions.
package tools

import (
	_ "github.com/bufbuild/buf/cmd/buf"
	_ "google.golang.org/protobuf/cmd/protoc-gen-go"
)
