module github.com/session-sidecar/session-sidecar/adapters/go/example

go 1.19

require github.com/session-sidecar/session-sidecar/adapters/go/sidecarsession v0.0.0

// The adapter from this checkout (adapters/README.md says why a replace is needed).
replace github.com/session-sidecar/session-sidecar/adapters/go/sidecarsession => ../sidecarsession
