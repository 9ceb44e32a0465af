// The path names this folder in the session-sidecar repository, the way Go names a module in
// a subdirectory of a repository. Until that repository is published under the path, `go get`
// cannot fetch it: require it and point Go at a checkout with a replace (adapters/README.md).
module github.com/session-sidecar/session-sidecar/adapters/go/sidecarsession

go 1.19
