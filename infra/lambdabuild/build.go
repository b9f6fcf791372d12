// Package lambdabuild builds kiln's functions from source into the zips
// Lambda's provided.al2023 runtime runs: functions/<name> compiled for
// linux/arm64 as bootstrap. The CDK app uses it at synth time, and
// cmd/kiln-lambdas on its own (make lambdas).
package lambdabuild

import (
	"archive/zip"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Artifact is one function's deployment package: a zip holding the
// function's bootstrap binary, as provided.al2023 runs it.
type Artifact struct {
	// Name is the function's directory under functions/.
	Name string
	// Zip is the path of the deployment package.
	Zip string
	// Size is the zip's size in bytes.
	Size int64
}

// buildFlags are the flags every function is built with: no RPC mode of
// aws-lambda-go (provided.al2023 speaks the Runtime API), paths and symbol
// tables stripped to keep the zip small, and builds reproducible so that an
// unchanged function keeps its asset hash and is not redeployed.
var buildFlags = []string{"-tags", "lambda.norpc", "-trimpath", "-buildvcs=false", "-ldflags=-s -w"}

// Has reports whether functions/<name> under sourceDir holds Go
// source to build.
func Has(sourceDir, name string) bool {
	files, _ := filepath.Glob(filepath.Join(sourceDir, "functions", name, "*.go"))
	for _, f := range files {
		if !strings.HasSuffix(f, "_test.go") {
			return true
		}
	}
	return false
}

// Build compiles functions/<name> of the kiln module at sourceDir
// for every name, for Lambda's provided.al2023 runtime on arm64, and packs
// each binary as bootstrap into outDir/<name>.zip. It fails, naming them,
// if any of the functions has no source: the stack cannot deploy a stage
// it cannot build.
func Build(sourceDir, outDir string, names []string) ([]Artifact, error) {
	var missing []string
	for _, n := range names {
		if !Has(sourceDir, n) {
			missing = append(missing, "functions/"+n)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("build functions: no Go source in %s (under %s): every stage's Lambda is built from its functions/<stage>/main.go",
			strings.Join(missing, ", "), sourceDir)
	}
	binDir := filepath.Join(outDir, "bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return nil, fmt.Errorf("build functions: %w", err)
	}
	// One go build for all of them: the toolchain compiles the shared
	// packages once and links the binaries in parallel.
	args := append([]string{"build"}, buildFlags...)
	args = append(args, "-o", binDir+string(filepath.Separator))
	for _, n := range names {
		args = append(args, "./functions/"+n)
	}
	cmd := exec.Command(GoTool(), args...)
	cmd.Dir = sourceDir
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=arm64", "CGO_ENABLED=0", "GOWORK=off")
	var stderr bytes.Buffer
	cmd.Stdout = &stderr
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("build functions (go %s in %s): %w\n%s", strings.Join(args, " "), sourceDir, err, stderr.String())
	}
	var out []Artifact
	for _, n := range names {
		bin, err := os.ReadFile(filepath.Join(binDir, n))
		if err != nil {
			return nil, fmt.Errorf("build function %s: %w", n, err)
		}
		zipPath := filepath.Join(outDir, n+".zip")
		size, err := writeBootstrapZip(zipPath, bin)
		if err != nil {
			return nil, fmt.Errorf("package function %s: %w", n, err)
		}
		out = append(out, Artifact{Name: n, Zip: zipPath, Size: size})
	}
	return out, nil
}

// GoTool is the go command that runs this program's build: the one on PATH,
// else the toolchain this binary was built with.
func GoTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	if p := filepath.Join(runtime.GOROOT(), "bin", "go"); fileExists(p) {
		return p
	}
	return "go"
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// zipEpoch is the fixed modification time of bootstrap in every zip, so
// that the same binary always makes the same zip (and the same asset hash).
var zipEpoch = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)

// writeBootstrapZip writes a zip holding bin as an executable named
// bootstrap, replacing path atomically, and returns the zip's size.
func writeBootstrapZip(path string, bin []byte) (int64, error) {
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	h := &zip.FileHeader{Name: "bootstrap", Method: zip.Deflate, Modified: zipEpoch}
	h.SetMode(0o755)
	w, err := zw.CreateHeader(h)
	if err != nil {
		return 0, err
	}
	if _, err := w.Write(bin); err != nil {
		return 0, err
	}
	if err := zw.Close(); err != nil {
		return 0, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".bootstrap-*.zip")
	if err != nil {
		return 0, err
	}
	_, werr := tmp.Write(b.Bytes())
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr, os.Chmod(tmp.Name(), 0o644)); err != nil {
		os.Remove(tmp.Name())
		return 0, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return 0, err
	}
	return int64(b.Len()), nil
}
