package bake

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
)

// FuzzLoadHCL loads arbitrary template text (HCL native or JSON syntax) as
// the only template of a recipe whose other files are the fixtures': no
// input may panic, and what comes back must render.
//
//	go test ./pkg/bake/ -run '^$' -fuzz FuzzLoadHCL -fuzztime 20s
func FuzzLoadHCL(f *testing.F) {
	fixtures := fstest.MapFS{}
	err := filepath.WalkDir("testdata/hcl2", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel("testdata/hcl2", p)
		rel = filepath.ToSlash(rel)
		switch {
		case strings.HasSuffix(p, ".pkr.hcl"):
			f.Add(b, false)
		case strings.HasSuffix(p, ".pkr.json"):
			f.Add(b, true)
		default:
			// Scripts, files and playbooks, under their folder-relative
			// paths, so that the seeds' references resolve.
			_, inner, _ := strings.Cut(rel, "/")
			fixtures[inner] = &fstest.MapFile{Data: b, Mode: 0o644}
		}
		return nil
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(`variable "x" { default = env("X") }`+"\n"+`locals { a = file("/proc/self/environ") }`), false)
	f.Add([]byte(`{"variable": {"x": {"default": "${timestamp()}"}}}`), true)
	f.Fuzz(func(t *testing.T, src []byte, isJSON bool) {
		fsys := fstest.MapFS{}
		for k, v := range fixtures {
			fsys[k] = v
		}
		name := "fuzz.pkr.hcl"
		if isJSON {
			name = "fuzz.pkr.json"
		}
		fsys[name] = &fstest.MapFile{Data: src, Mode: 0o644}
		opts := hcl2Opts()
		opts.Env = map[string]string{"PKR_VAR_owner": "alice", "KILN_ENV": "prod"}
		plan, err := LoadFS(fsys, name, "fuzz", opts)
		if err != nil {
			var re *RecipeError
			if !errors.As(err, &re) {
				t.Fatalf("LoadFS error %T, want *RecipeError: %v", err, err)
			}
			if !re.Diags.HasErrors() {
				t.Fatalf("LoadFS failed without an error diagnostic: %v", re.Diags)
			}
			_ = re.Error()
			return
		}
		if _, err := json.Marshal(plan); err != nil {
			t.Fatalf("json.Marshal(plan): %v", err)
		}
	})
}
