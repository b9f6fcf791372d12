package bake

import "flag"

// update rewrites the golden files under testdata/ (plans, legacy plans,
// manifests, retention tables):
//
//	go test ./pkg/bake/ -run Golden -update
var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// updateGolden reports whether -update was given.
func updateGolden() bool { return *update }
