// Command kiln-lambdas builds kiln's functions into Lambda zips, as the CDK
// app does at synth time, and prints their sizes:
//
//	kiln-lambdas [-src DIR] [-o DIR] [NAME...]
//
// NAME defaults to every folder under functions/ that holds Go source.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kiln-dev/kiln/infra/lambdabuild"
)

func main() {
	src := flag.String("src", "..", "the kiln module's root")
	out := flag.String("o", "", "where to write the zips (default SRC/dist/lambdas)")
	flag.Parse()
	if *out == "" {
		*out = filepath.Join(*src, "dist", "lambdas")
	}
	names := flag.Args()
	if len(names) == 0 {
		dirs, _ := filepath.Glob(filepath.Join(*src, "functions", "*"))
		for _, d := range dirs {
			if lambdabuild.Has(*src, filepath.Base(d)) {
				names = append(names, filepath.Base(d))
			}
		}
	}
	arts, err := lambdabuild.Build(*src, *out, names)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kiln-lambdas:", err)
		os.Exit(1)
	}
	for _, a := range arts {
		fmt.Printf("%-10s %9d bytes  %s\n", a.Name, a.Size, a.Zip)
	}
}
