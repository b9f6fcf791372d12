// Command gen writes the state machine definition (statemachine.Flow) as
// JSON, the file that infra/ deploys and the local runner executes.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/kiln-dev/kiln/statemachine"
)

func main() {
	out := flag.String("o", "kiln.asl.json", "output file")
	flag.Parse()
	b, err := statemachine.Render()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
	if err := os.WriteFile(*out, b, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}
