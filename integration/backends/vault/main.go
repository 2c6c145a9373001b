//go:debug x509negativeserial=1

// Command vault-dev is Vault's own CLI (open-source Vault v1.14.2, MPL-2.0),
// built for running a dev server in integration tests.
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
