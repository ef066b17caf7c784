// Command healthcheck is the probe the container images run for Docker's
// HEALTHCHECK: the final images have no shell, curl or wget, so a tiny
// static binary asks the service's own HTTP endpoint instead.
//
//	healthcheck [url]    exit 0 when url answers 2xx within 2s, 1 otherwise
//
// The URL defaults to $HEALTHCHECK_URL. It uses the standard library only
// and builds outside any module: go build -o healthcheck ./deploy/docker/healthcheck/main.go
package main

import (
	"fmt"
	"net/http"
	"os"
	"time"
)

func main() {
	url := os.Getenv("HEALTHCHECK_URL")
	if len(os.Args) > 1 {
		url = os.Args[1]
	}
	if url == "" {
		fmt.Fprintln(os.Stderr, "healthcheck: no url (argument or HEALTHCHECK_URL)")
		os.Exit(2)
	}
	client := &http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		fmt.Fprintf(os.Stderr, "healthcheck: %v\n", err)
		os.Exit(1)
	}
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		fmt.Fprintf(os.Stderr, "healthcheck: %s answered %s\n", url, resp.Status)
		os.Exit(1)
	}
}
