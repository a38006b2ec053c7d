// Command coredns is CoreDNS at the pinned release with the plugins the local cluster's Corefile uses, the
// custom build CoreDNS documents (its own coredns.go imports core/plugin, which pulls in every plugin and the
// AWS, Azure and Google SDKs with them; the order in which plugins run comes from core/dnsserver/zdirectives.go
// either way).
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
	_ "github.com/coredns/coredns/plugin/template"
)

func main() {
	coremain.Run()
}
