package bake

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// FuzzLoadLegacy feeds arbitrary bytes to the legacy JSON loader as a
// template, next to the fixtures' scripts and files so that valid inputs get
// deep. No input may panic, a failure must be a *RecipeError whose every
// position lies inside the template, and a plan must serialise.
//
//	go test ./pkg/bake/ -run '^$' -fuzz FuzzLoadLegacy -fuzztime 20s
func FuzzLoadLegacy(f *testing.F) {
	recipe := fstest.MapFS{}
	err := fs.WalkDir(os.DirFS("testdata/legacy"), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(os.DirFS("testdata/legacy"), p)
		if err != nil {
			return err
		}
		recipe[p] = &fstest.MapFile{Data: b}
		if strings.HasSuffix(p, ".json") && !strings.HasSuffix(p, ".plan.json") {
			f.Add(b)
		}
		return nil
	})
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		``, `{}`, `[]`, `null`, `"x"`, `{"builders": []}`, `{"builders": [{}]}`,
		`{"builders": [{"type": "amazon-ebs", "ami_name": "{{"}]}`,
		`{"builders": [{"type": "amazon-ebs", "ami_name": "{{user ` + "`x`" + `}}", "ssh_username": "é\u00e9{{timestamp}}\ud83d\ude00"}]}`,
		`{"variables": {"a": "{{user ` + "`a`" + `}}"}, "builders": [{"type": "amazon-ebs"}]}`,
		`{"builders": [{"type": "amazon-ebs", "name": "{{x}}", "tags": {"{{timestamp}}": "{{uuid}}", "k": "{{ .X }}"}}], "provisioners": [{"type": "shell", "override": {"{{x}}": {}}}]}`,
		`{"post-processors": ["manifest", [{"type": "manifest"}], [[]]], "builders": [{"type": "amazon-ebs"}]}`,
		"{\"builders\": [{\"type\": \"amazon-ebs\", \"ami_name\": \"a\\\"b{{lower `X`}}\\n\", \"region\": \"{{- ( upper \\\"a\\\" ) -}}\"}]}",
	} {
		f.Add([]byte(s))
	}
	opts := LoadOptions{
		Env:      map[string]string{"HOME_REGION": "eu-west-1", "DB_PASSWORD": "pw"},
		Now:      func() time.Time { return testNow },
		NewUUID:  func() string { return testUUID },
		VarFiles: []string{"full.vars.json"},
	}
	f.Fuzz(func(t *testing.T, tmpl []byte) {
		fsys := fstest.MapFS{}
		for k, v := range recipe {
			fsys[k] = v
		}
		fsys["t.json"] = &fstest.MapFile{Data: tmpl}
		plan, err := LoadFS(fsys, "t.json", "t", opts)
		if err != nil {
			var re *RecipeError
			if !errors.As(err, &re) {
				t.Fatalf("LoadFS error %T %v, want a *RecipeError", err, err)
			}
			_ = re.Error()
			for _, d := range re.Diags {
				for _, r := range []*rangeOf{{"subject", d.Subject}, {"context", d.Context}} {
					if r.rng == nil || path.Clean(r.rng.Filename) != "t.json" {
						continue
					}
					s, e := r.rng.Start, r.rng.End
					if s.Byte < 0 || s.Byte > e.Byte || e.Byte > len(tmpl) || s.Line < 1 || s.Column < 1 || e.Line < s.Line {
						t.Fatalf("diagnostic %q has %s %v (bytes %d-%d) outside the %d-byte template", d.Summary, r.name, *r.rng, s.Byte, e.Byte, len(tmpl))
					}
				}
			}
			return
		}
		if plan == nil {
			t.Fatal("LoadFS returned neither a plan nor an error")
		}
		if _, err := json.Marshal(plan); err != nil {
			t.Fatalf("json.Marshal(plan): %v", err)
		}
	})
}

type rangeOf struct {
	name string
	rng  *hcl.Range
}

// TestLoadLegacyDeepNesting: nesting deep enough to exhaust a recursive
// parser's stack is refused before any recursive parse.
func TestLoadLegacyDeepNesting(t *testing.T) {
	for _, open := range []string{"[", `{"a":`} {
		tmpl := `{"builders": ` + strings.Repeat(open, 200000)
		_, err := LoadFS(fstest.MapFS{"t.json": {Data: []byte(tmpl)}}, "t.json", "t", LoadOptions{})
		if err == nil || !strings.Contains(err.Error(), "Invalid JSON") {
			t.Errorf("LoadFS(%.20s...) error = %.300v, want Invalid JSON", tmpl, err)
		}
	}
}
