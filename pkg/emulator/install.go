package emulator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// MotoVersion is the moto release kiln installs and tests against. The
// differences kiln works around (see shared/FACTS.md) were seen on this
// version; change it only together with those notes.
const MotoVersion = "5.2.5"

// ErrSetup marks a failure to set up the local toolchain that runs moto
// (python3, its venv module, pip, or the moto download). ForTest skips on it
// outside CI; anything else is a real failure.
var ErrSetup = errors.New("emulator setup")

// MissingToolError reports a host tool that moto needs and that is absent.
// It wraps ErrSetup.
type MissingToolError struct {
	// Tool is what is missing, e.g. "python3" or "python3 venv module".
	Tool string
	// Hint says how to install it.
	Hint string
	// Err is the underlying failure, if any.
	Err error
}

// Error implements error.
func (e *MissingToolError) Error() string {
	msg := e.Tool + " is missing: " + e.Hint
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap lets errors.Is find ErrSetup and the underlying error.
func (e *MissingToolError) Unwrap() []error { return []error{ErrSetup, e.Err} }

// Home returns kiln's cache directory: $KILN_HOME if set, else
// os.UserCacheDir()/kiln.
func Home() (string, error) {
	if h := os.Getenv("KILN_HOME"); h != "" {
		return h, nil
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("find kiln home (set KILN_HOME): %w", err)
	}
	return filepath.Join(dir, "kiln"), nil
}

// DefaultVenv returns the venv kiln uses for moto unless told otherwise:
// Home()/venv.
func DefaultVenv() (string, error) {
	h, err := Home()
	if err != nil {
		return "", err
	}
	return filepath.Join(h, "venv"), nil
}

// InstallOptions configures Install.
type InstallOptions struct {
	// VenvDir is the Python virtual environment to use or create.
	// Empty means DefaultVenv().
	VenvDir string
	// Python is the interpreter that creates the venv. Empty means
	// "python3" from PATH.
	Python string
}

// Install makes sure VenvDir is a venv holding moto[server]==MotoVersion and
// returns the path of its moto_server program. Once installed it touches
// nothing and needs no network, so it is cheap to call before every Start.
//
// Concurrent callers (two test binaries, say) serialise on a lock file next
// to the venv; the second finds the first's finished install.
func Install(ctx context.Context, opts InstallOptions) (string, error) {
	venv := opts.VenvDir
	if venv == "" {
		var err error
		if venv, err = DefaultVenv(); err != nil {
			return "", fmt.Errorf("%w: %w", ErrSetup, err)
		}
	}
	venv, err := filepath.Abs(venv)
	if err != nil {
		return "", fmt.Errorf("%w: venv path %q: %w", ErrSetup, opts.VenvDir, err)
	}
	motoServer := filepath.Join(venv, "bin", "moto_server")
	if installed(venv) {
		return motoServer, nil
	}

	if err := os.MkdirAll(filepath.Dir(venv), 0o755); err != nil {
		return "", fmt.Errorf("%w: create %s: %w", ErrSetup, filepath.Dir(venv), err)
	}
	unlock, err := lockFile(ctx, venv+".lock")
	if err != nil {
		return "", fmt.Errorf("%w: lock venv %s: %w", ErrSetup, venv, err)
	}
	defer unlock()
	if installed(venv) { // another process finished while we waited
		return motoServer, nil
	}
	_ = os.Remove(markerPath(venv)) // stale if the venv's Python is gone

	if err := createVenv(ctx, opts.Python, venv); err != nil {
		return "", err
	}
	py := filepath.Join(venv, "bin", "python")
	if out, err := run(ctx, py, "-m", "pip", "--version"); err != nil {
		return "", &MissingToolError{
			Tool: "pip",
			Hint: "the venv " + venv + " has no pip; install the Debian packages python3-venv and python3-pip, then delete " + venv,
			Err:  withOutput(err, out),
		}
	}
	spec := "moto[server]==" + MotoVersion
	out, err := run(ctx, py, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", spec)
	if err != nil {
		return "", fmt.Errorf("%w: pip install %s into %s (needs PyPI the first time): %w", ErrSetup, spec, venv, withOutput(err, out))
	}
	if _, err := os.Stat(motoServer); err != nil {
		return "", fmt.Errorf("%w: pip installed %s but %w", ErrSetup, spec, err)
	}
	// The marker is written last: a venv without it is an unfinished
	// install, which the next caller completes.
	if err := os.WriteFile(markerPath(venv), []byte(spec+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("%w: mark venv %s installed: %w", ErrSetup, venv, err)
	}
	return motoServer, nil
}

func markerPath(venv string) string {
	return filepath.Join(venv, "kiln-moto-"+MotoVersion+".installed")
}

// installed reports whether venv holds moto at MotoVersion and an
// interpreter that still exists (os.Stat follows bin/python's symlink, which
// dangles once the Python that made the venv is removed). Install's marker
// vouches for the version; so does pip's moto-VERSION.dist-info, which
// covers a venv that something else (kiln's Makefile) filled.
func installed(venv string) bool {
	for _, p := range []string{filepath.Join(venv, "bin", "moto_server"), filepath.Join(venv, "bin", "python")} {
		if _, err := os.Stat(p); err != nil {
			return false
		}
	}
	if _, err := os.Stat(markerPath(venv)); err == nil {
		return true
	}
	distInfo, _ := filepath.Glob(filepath.Join(venv, "lib", "python3*", "site-packages", "moto-"+MotoVersion+".dist-info"))
	return len(distInfo) > 0
}

// createVenv creates venv with python unless it already is a working one.
// An existing venv (one of the user's, or a half-finished install) is kept,
// never cleared: pip install below is idempotent. One whose interpreter has
// gone is repointed at python with --upgrade.
func createVenv(ctx context.Context, python, venv string) error {
	args := []string{"-m", "venv", venv}
	if _, err := os.Stat(filepath.Join(venv, "pyvenv.cfg")); err == nil {
		if _, err := os.Stat(filepath.Join(venv, "bin", "python")); err == nil {
			return nil
		}
		args = []string{"-m", "venv", "--upgrade", venv}
	}
	if python == "" {
		python = "python3"
	}
	path, err := exec.LookPath(python)
	if err != nil {
		return &MissingToolError{
			Tool: python,
			Hint: "moto needs Python 3; install the Debian packages python3 and python3-venv",
			Err:  err,
		}
	}
	out, err := run(ctx, path, args...)
	if err != nil {
		if bytes.Contains(out, []byte("ensurepip")) || bytes.Contains(out, []byte("No module named venv")) {
			return &MissingToolError{
				Tool: "python3 venv module",
				Hint: "install the Debian package python3-venv",
				Err:  withOutput(err, out),
			}
		}
		return fmt.Errorf("%w: %s %s: %w", ErrSetup, path, strings.Join(args, " "), withOutput(err, out))
	}
	return nil
}

func run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 5 * time.Second
	return cmd.CombinedOutput()
}

// withOutput adds the last lines of a command's output to its error.
func withOutput(err error, out []byte) error {
	tail := strings.TrimSpace(lastLines(string(out), 15))
	if tail == "" {
		return err
	}
	return fmt.Errorf("%w\n%s", err, tail)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// lockFile takes an exclusive flock on path, polling so that ctx can cancel
// the wait (a blocking flock cannot be interrupted). The lock dies with the
// process, so a crashed installer never wedges the next one.
func lockFile(ctx context.Context, path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				_ = f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			_ = f.Close()
			return nil, fmt.Errorf("flock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, fmt.Errorf("wait for lock %s (another install running?): %w", path, context.Cause(ctx))
		case <-tick.C:
		}
	}
}
