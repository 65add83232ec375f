// Command hearth is Hearth in one binary: the control plane (`hearth
// server`), the node agent (`hearth agent`), the boot service, the
// sandbox, and the CLI for all of them.
package main

import (
	"os"

	"hearth.dev/hearth/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:]))
}
