// Package statemachine holds kiln's bake lifecycle as one Amazon States
// Language definition: Flow builds it, kiln.asl.json is its rendering (kept
// in the repository and embedded here), infra/ deploys it with the stage
// functions' ARNs substituted, and `kiln bake --local` runs it.
package statemachine

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
)

//go:embed kiln.asl.json
var definition []byte

// Functions are the stage functions the definition calls, in lifecycle
// order; each appears as Placeholder(name) in the definition.
var Functions = []string{"launch", "provision", "snapshot", "distribute", "cleanup"}

// Definition returns the definition with its ARN placeholders.
func Definition() []byte { return bytes.Clone(definition) }

// Render renders Flow as indented JSON, the content of kiln.asl.json.
func Render() ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(Flow()); err != nil {
		return nil, fmt.Errorf("render state machine: %w", err)
	}
	return b.Bytes(), nil
}

var placeholderRE = regexp.MustCompile(`\$\{([A-Za-z0-9]+)\}`)

// Substitute returns the definition with each ${Name} replaced by subs[Name].
// Every placeholder must have a value, and every value a placeholder.
func Substitute(subs map[string]string) ([]byte, error) {
	used := map[string]bool{}
	var missing []string
	out := placeholderRE.ReplaceAllFunc(definition, func(m []byte) []byte {
		name := string(placeholderRE.FindSubmatch(m)[1])
		v, ok := subs[name]
		if !ok {
			missing = append(missing, name)
			return m
		}
		used[name] = true
		enc, _ := json.Marshal(v)
		return enc[1 : len(enc)-1] // inside a JSON string already
	})
	var unused []string
	for k := range subs {
		if !used[k] {
			unused = append(unused, k)
		}
	}
	sort.Strings(missing)
	sort.Strings(unused)
	if len(missing) > 0 || len(unused) > 0 {
		return nil, fmt.Errorf("substitute state machine: missing %v, unused %v", missing, unused)
	}
	return out, nil
}
