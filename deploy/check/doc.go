// Package check loads the deployment artefacts (compose file, Kubernetes
// manifests, Prometheus rules and Grafana dashboards) with the libraries
// that consume them in production, and checks them against the services.
package check
