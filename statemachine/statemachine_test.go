package statemachine

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kiln-dev/kiln/pkg/bake"
)

var update = flag.Bool("update", false, "rewrite kiln.asl.json from Flow")

// TestDefinitionUpToDate keeps the checked-in definition equal to Flow's
// rendering, so what is deployed is what the code describes.
func TestDefinitionUpToDate(t *testing.T) {
	got, err := Render()
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile("kiln.asl.json", got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, Definition()) {
		t.Fatalf("kiln.asl.json is stale: run `go generate ./statemachine` (or go test ./statemachine -update)")
	}
}

type asl struct {
	StartAt string                     `json:"StartAt"`
	States  map[string]json.RawMessage `json:"States"`
}

type state struct {
	Type          string `json:"Type"`
	Next          string `json:"Next"`
	End           bool   `json:"End"`
	Default       string `json:"Default"`
	Resource      string `json:"Resource"`
	ItemProcessor *asl   `json:"ItemProcessor"`
	Choices       []struct {
		Next string `json:"Next"`
	} `json:"Choices"`
	Retry []struct {
		ErrorEquals []string `json:"ErrorEquals"`
	} `json:"Retry"`
	Catch []struct {
		ErrorEquals []string `json:"ErrorEquals"`
		Next        string   `json:"Next"`
		ResultPath  string   `json:"ResultPath"`
	} `json:"Catch"`
}

func parse(t *testing.T, m asl) map[string]state {
	t.Helper()
	out := map[string]state{}
	for name, raw := range m.States {
		var s state
		if err := json.Unmarshal(raw, &s); err != nil {
			t.Fatalf("state %s: %v", name, err)
		}
		out[name] = s
	}
	return out
}

func load(t *testing.T) asl {
	t.Helper()
	var m asl
	if err := json.Unmarshal(Definition(), &m); err != nil {
		t.Fatalf("Definition(): %v", err)
	}
	return m
}

// TestEveryTaskRetriesAndEndsInCleanup checks the rules every task obeys:
// it retries Lambda's transient errors and throttling, and every failure is
// caught and leads to Cleanup.
func TestEveryTaskRetriesAndEndsInCleanup(t *testing.T) {
	m := load(t)
	states := parse(t, m)
	var tasks []string
	var check func(prefix string, sts map[string]state, inMap bool)
	check = func(prefix string, sts map[string]state, inMap bool) {
		for name, s := range sts {
			if s.Type == "Map" {
				check(name+"/", parse(t, *s.ItemProcessor), true)
			}
			if s.Type != "Task" && s.Type != "Map" {
				continue
			}
			if s.Type == "Task" {
				tasks = append(tasks, prefix+name)
				var retried []string
				for _, r := range s.Retry {
					retried = append(retried, r.ErrorEquals...)
				}
				for _, want := range append(slices.Clone(LambdaTransient), "Throttled", "Transient") {
					if !slices.Contains(retried, want) {
						t.Errorf("task %s%s does not retry %s", prefix, name, want)
					}
				}
			}
			if inMap {
				continue // the enclosing Map catches
			}
			if len(s.Catch) == 0 {
				t.Errorf("state %s has no Catch", name)
				continue
			}
			last := s.Catch[len(s.Catch)-1]
			if !slices.Equal(last.ErrorEquals, []string{"States.ALL"}) {
				t.Errorf("state %s: last Catch is %v, want States.ALL", name, last.ErrorEquals)
			}
			for _, c := range s.Catch {
				if !leadsTo(states, c.Next, "Cleanup") && name != "Cleanup" {
					t.Errorf("state %s: Catch %v goes to %s, which never reaches Cleanup", name, c.ErrorEquals, c.Next)
				}
			}
		}
	}
	check("", states, false)
	if len(tasks) < 10 {
		t.Errorf("found %d tasks, want the whole lifecycle (>= 10): %v", len(tasks), tasks)
	}
}

// leadsTo reports whether from reaches target following Next, Default and
// Choices edges.
func leadsTo(states map[string]state, from, target string) bool {
	seen := map[string]bool{}
	var walk func(string) bool
	walk = func(n string) bool {
		if n == target {
			return true
		}
		if seen[n] || n == "" {
			return false
		}
		seen[n] = true
		s := states[n]
		if walk(s.Next) || walk(s.Default) {
			return true
		}
		for _, c := range s.Choices {
			if walk(c.Next) {
				return true
			}
		}
		return false
	}
	return walk(from)
}

// TestSuccessEndsWithCleanup: once anything may have been created (from
// Launch on), the only way to succeed is through Cleanup. Before Launch, a
// duplicate execution may end at once (AlreadyBaking): it created nothing.
func TestSuccessEndsWithCleanup(t *testing.T) {
	m := load(t)
	states := parse(t, m)
	without := map[string]state{}
	for n, st := range states {
		if n != "Cleanup" {
			without[n] = st
		}
	}
	succeeds := 0
	for name, s := range states {
		if s.Type != "Succeed" {
			continue
		}
		succeeds++
		if leadsTo(without, "Launch", name) {
			t.Errorf("%s is reachable from Launch without passing Cleanup", name)
		}
		if name != "AlreadyBaking" && leadsTo(without, m.StartAt, name) {
			t.Errorf("%s is reachable without passing Cleanup", name)
		}
	}
	if succeeds == 0 {
		t.Fatal("the definition has no Succeed state")
	}
	if leadsTo(without, "Launch", "AlreadyBaking") {
		t.Errorf("AlreadyBaking is reachable after Launch")
	}
}

// TestRoutedErrorNamesExist pins the error names the definition routes on
// to the error types the stages return at the Lambda boundary.
func TestRoutedErrorNamesExist(t *testing.T) {
	known := map[string]bool{}
	for _, e := range bake.RoutedErrors {
		known[bake.ErrorName(e)] = true
	}
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if errs, ok := x["ErrorEquals"].([]any); ok {
				for _, e := range errs {
					name := e.(string)
					if strings.HasPrefix(name, "States.") || strings.HasPrefix(name, "Lambda.") {
						continue
					}
					if !known[name] {
						t.Errorf("definition routes on %q, which no stage returns (known: %v)", name, known)
					}
				}
			}
			for _, c := range x {
				walk(c)
			}
		case []any:
			for _, c := range x {
				walk(c)
			}
		}
	}
	var doc any
	if err := json.Unmarshal(Definition(), &doc); err != nil {
		t.Fatal(err)
	}
	walk(doc)
}

func TestSubstitute(t *testing.T) {
	subs := map[string]string{}
	for _, f := range Functions {
		subs[PlaceholderName(f)] = "arn:aws:lambda:eu-west-1:123456789012:function:kiln-" + f
	}
	out, err := Substitute(subs)
	if err != nil {
		t.Fatalf("Substitute(all) = %v", err)
	}
	if bytes.Contains(out, []byte("${")) {
		t.Errorf("Substitute left a placeholder")
	}
	if !json.Valid(out) {
		t.Errorf("Substitute produced invalid JSON")
	}
	delete(subs, "CleanupFunctionArn")
	if _, err := Substitute(subs); err == nil || !strings.Contains(err.Error(), "CleanupFunctionArn") {
		t.Errorf("Substitute(missing cleanup) = %v, want an error naming CleanupFunctionArn", err)
	}
}

// TestASLValidator runs the npm package asl-validator on the definition with
// ARNs substituted.
func TestASLValidator(t *testing.T) {
	bin := filepath.Join("..", "node_modules", ".bin", "asl-validator")
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("asl-validator not installed (%v): make test runs npm ci first", err)
		}
		t.Skipf("SKIP LOUDLY: asl-validator not installed (run `npm ci` or `make test`): %v", err)
	}
	subs := map[string]string{}
	for _, f := range Functions {
		subs[PlaceholderName(f)] = "arn:aws:lambda:eu-west-1:123456789012:function:kiln-" + f
	}
	def, err := Substitute(subs)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kiln.asl.json")
	if err := os.WriteFile(path, def, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "--json-path", path).CombinedOutput()
	if err != nil {
		t.Fatalf("asl-validator: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "is valid") {
		t.Errorf("asl-validator said %s", out)
	}
}
