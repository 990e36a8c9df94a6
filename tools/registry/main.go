// Command registry is the CNCF distribution registry (github.com/distribution/distribution/v3),
// linked with only what kubespin's tests and demos configure: htpasswd and token auth, filesystem
// and inmemory storage. Upstream's cmd/registry also links the azure, gcs and s3-aws drivers, the
// cloudfront middleware and the pull-through proxy's registration, whose cloud SDKs dominated a cold
// build (module downloads and compile). Same flags and config file format: `registry serve config.yml`.
package main

import (
	"github.com/distribution/distribution/v3/registry"
	_ "github.com/distribution/distribution/v3/registry/auth/htpasswd"
	_ "github.com/distribution/distribution/v3/registry/auth/token"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
)

func main() {
	// Execute reports its own errors and exits non-zero (upstream's main ignores the result too).
	_ = registry.RootCmd.Execute()
}
