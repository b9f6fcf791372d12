package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const sample = `goos: linux
BenchmarkBake/regions=1-2         	       1	1672060143 ns/op	         0.9562 GB-s/bake	       195.0 floor-s	       232.0 wall-s	         1.190 wall/floor	         1.000 ec2:RunInstances/bake	        26.00 transitions/bake
BenchmarkBake/regions=5-2         	       1	2176417170 ns/op	         0.8675 GB-s/bake	       495.0 floor-s	       537.0 wall-s	         1.085 wall/floor	         1.000 ec2:RunInstances/bake	         4.000 ec2:CopyImage/bake	        82.00 transitions/bake
BenchmarkBakeScale-2   	       1	99944468569 ns/op	        40.00 bakes	         0 failures	      4840 sustained-bakes/h	         0.6722 sustained/RunInstances-bound
PASS
`

func TestParse(t *testing.T) {
	run, err := Parse(strings.NewReader(sample))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if got := run.Benchmarks["BenchmarkBake/regions=5"]["ec2:CopyImage/bake"]; got != 4 {
		t.Errorf("regions=5 ec2:CopyImage/bake = %v, want 4", got)
	}
	if got := run.Benchmarks["BenchmarkBakeScale"]["failures"]; got != 0 {
		t.Errorf("scale failures = %v, want 0", got)
	}
	if _, err := Parse(strings.NewReader("PASS\n")); err == nil {
		t.Errorf("Parse(no benchmarks) = nil error, want one")
	}
}

// TestRunKeepsFiguresAndCompares: a second run's table shows the change
// since the first, and both runs are kept.
func TestRunKeepsFiguresAndCompares(t *testing.T) {
	dir := t.TempDir()
	results, last := filepath.Join(dir, "results"), filepath.Join(dir, "last.json")
	var out strings.Builder
	t0 := time.Date(2026, 11, 22, 4, 0, 0, 0, time.UTC)
	if err := run(strings.NewReader(sample), &out, results, last, t0); err != nil {
		t.Fatalf("first run: %v", err)
	}
	if !strings.Contains(out.String(), "1.1900") || strings.Contains(out.String(), "changes since") {
		t.Errorf("first table lacks wall/floor 1.1900 or compares with nothing:\n%s", out.String())
	}
	out.Reset()
	faster := strings.Replace(sample, "232.0 wall-s	         1.190 wall/floor", "214.5 wall-s	         1.100 wall/floor", 1)
	if err := run(strings.NewReader(faster), &out, results, last, t0.Add(time.Hour)); err != nil {
		t.Fatalf("second run: %v", err)
	}
	table := out.String()
	for _, want := range []string{"changes since the run of 2026-11-22 04:00 UTC", "1.1000 (-7.6%)", "0.956 (=)", "grows by 322 s = 1.07× the slowest copy"} {
		if !strings.Contains(table, want) {
			t.Errorf("second table lacks %q:\n%s", want, table)
		}
	}
	files, _ := os.ReadDir(results)
	if len(files) != 2 {
		t.Errorf("%s holds %d runs, want 2", results, len(files))
	}
	var kept Run
	b, _ := os.ReadFile(last)
	if err := json.Unmarshal(b, &kept); err != nil || kept.Benchmarks["BenchmarkBake/regions=1"]["wall/floor"] != 1.1 {
		t.Errorf("%s = %s (%v), want the second run", last, b, err)
	}
}
