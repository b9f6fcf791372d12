package lambdabuild

import (
	"archive/zip"
	"bytes"
	"debug/elf"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// module writes a stand-in kiln module whose named functions are empty
// mains.
func module(t *testing.T, functions ...string) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{"go.mod": "module github.com/kiln-dev/kiln\n\ngo 1.26\n"}
	for _, f := range functions {
		files[filepath.Join("functions", f, "main.go")] = "package main\n\nfunc main() {}\n"
	}
	files[filepath.Join("functions", "empty", "README")] = "no Go here\n"
	files[filepath.Join("functions", "tests", "x_test.go")] = "package main\n"
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestHas(t *testing.T) {
	src := module(t, "launch")
	for name, want := range map[string]bool{"launch": true, "empty": false, "tests": false, "missing": false} {
		if got := Has(src, name); got != want {
			t.Errorf("Has(%q) = %v, want %v", name, got, want)
		}
	}
}

// TestBuild builds two functions: each zip holds one executable bootstrap,
// an arm64 Linux binary, and building again gives the same zips.
func TestBuild(t *testing.T) {
	src, out := module(t, "launch", "cleanup"), t.TempDir()
	arts, err := Build(src, out, []string{"launch", "cleanup"})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	if len(arts) != 2 || arts[0].Name != "launch" || arts[1].Name != "cleanup" {
		t.Fatalf("Build = %+v, want launch and cleanup", arts)
	}
	first := map[string][]byte{}
	for _, a := range arts {
		b, err := os.ReadFile(a.Zip)
		if err != nil || int64(len(b)) != a.Size {
			t.Fatalf("%s: %d bytes (%v), Size %d", a.Zip, len(b), err, a.Size)
		}
		first[a.Name] = b
		zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			t.Fatalf("%s: %v", a.Zip, err)
		}
		if len(zr.File) != 1 || zr.File[0].Name != "bootstrap" || zr.File[0].Mode().Perm() != 0o755 {
			t.Fatalf("%s holds %v, want one bootstrap with mode 0755", a.Zip, zr.File)
		}
		rc, _ := zr.File[0].Open()
		bin, _ := io.ReadAll(rc)
		f, err := elf.NewFile(bytes.NewReader(bin))
		if err != nil || f.Machine != elf.EM_AARCH64 {
			t.Errorf("%s: bootstrap is not an arm64 ELF binary (%v)", a.Name, err)
		}
	}
	again, err := Build(src, out, []string{"launch", "cleanup"})
	if err != nil {
		t.Fatalf("Build again: %v", err)
	}
	for _, a := range again {
		b, _ := os.ReadFile(a.Zip)
		if !bytes.Equal(b, first[a.Name]) {
			t.Errorf("%s: a second build made a different zip: the asset would redeploy for nothing", a.Name)
		}
	}
}

func TestBuildMissingSource(t *testing.T) {
	src := module(t, "launch")
	_, err := Build(src, t.TempDir(), []string{"launch", "snapshot", "empty"})
	if err == nil || !strings.Contains(err.Error(), "functions/snapshot, functions/empty") {
		t.Errorf("Build(without snapshot and empty) = %v, want an error naming both", err)
	}
}

func TestBuildCompileError(t *testing.T) {
	src := module(t, "launch")
	if err := os.WriteFile(filepath.Join(src, "functions", "launch", "main.go"), []byte("package main\n\nfunc main() { undefined() }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Build(src, t.TempDir(), []string{"launch"})
	if err == nil || !strings.Contains(err.Error(), "undefined") {
		t.Errorf("Build(broken) = %v, want the compiler's message", err)
	}
}
