package infra

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// cfnLint is the project's cfn-lint (the Makefile installs it into the
// venv under $KILN_HOME, by default <repo>/.kiln).
func cfnLint(t *testing.T) string {
	t.Helper()
	home := os.Getenv("KILN_HOME")
	if home == "" {
		home = filepath.Join("..", ".kiln")
	}
	bin := filepath.Join(home, "venv", "bin", "cfn-lint")
	if _, err := os.Stat(bin); err != nil {
		msg := "cfn-lint is not installed at " + bin + " (make deps installs it)"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip("!!! SKIPPING cfn-lint: " + msg + " !!!")
	}
	return bin
}

// lintFinding is one finding of cfn-lint's JSON output.
type lintFinding struct {
	Level    string
	Message  string
	Rule     struct{ Id string }
	Location struct{ Path []any }
}

// lint runs cfn-lint on tmpl and returns its findings.
func lint(t *testing.T, bin, name string, tmpl obj) []lintFinding {
	t.Helper()
	path := filepath.Join(testRoot, name+".template.json")
	b, err := json.MarshalIndent(tmpl, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	var out, stderr bytes.Buffer
	cmd := exec.Command(bin, "--format", "json", path)
	cmd.Stdout, cmd.Stderr = &out, &stderr
	err = cmd.Run()
	// cfn-lint exits with a bit mask: 2 errors, 4 warnings, 8
	// informational; 1 means it failed to run.
	var exit *exec.ExitError
	if err != nil && (!errors.As(err, &exit) || exit.ExitCode()&1 != 0) {
		t.Fatalf("cfn-lint %s: %v\n%s%s", path, err, out.String(), stderr.String())
	}
	var findings []lintFinding
	if err := json.Unmarshal(out.Bytes(), &findings); err != nil {
		t.Fatalf("cfn-lint output: %v\n%s", err, out.String())
	}
	return findings
}

// TestCfnLint runs cfn-lint on both synthesized templates: no errors
// (warnings are reported, not failed on).
func TestCfnLint(t *testing.T) {
	bin := cfnLint(t)
	for _, stack := range []struct {
		name string
		l    *lazy
	}{{"default", defaultStack}, {"configured", configuredStack}} {
		t.Run(stack.name, func(t *testing.T) {
			for _, f := range lint(t, bin, stack.name, stack.l.get(t).json) {
				if f.Level == "Error" {
					t.Errorf("cfn-lint %s %v: %s", f.Rule.Id, f.Location.Path, f.Message)
				} else {
					t.Logf("cfn-lint %s %s %v: %s", f.Level, f.Rule.Id, f.Location.Path, f.Message)
				}
			}
		})
	}
	// And it reports an error kiln could make: a Lambda timeout past 15
	// minutes.
	t.Run("catches errors", func(t *testing.T) {
		s := defaultStack.get(t)
		tmpl := deepCopy(s.json)
		fn := functionsByStage(t, s)["provision"]
		at(tmpl, "Resources", fn, "Properties").(obj)["Timeout"] = 1000
		for _, f := range lint(t, bin, "broken", tmpl) {
			if f.Level == "Error" {
				t.Logf("caught: cfn-lint %s %v: %s", f.Rule.Id, f.Location.Path, f.Message)
				return
			}
		}
		t.Errorf("cfn-lint found no error in a template with a 1000 s Lambda timeout")
	})
}
