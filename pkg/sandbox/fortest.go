package sandbox

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// ForTest starts a sandbox for the calling test and stops it when the test
// ends. If the test fails, sshd's log is added to its output.
//
// When sshd is missing it skips the test with a message saying to install
// openssh-server; when $CI is set it instead installs the package with
// apt-get (as root, without letting the package start the host's own sshd)
// and fails the test if that does not work. When the test does not run as
// root it skips, or fails under $CI.
func ForTest(t testing.TB, opts Options) *Sandbox {
	t.Helper()
	if _, err := os.Stat(SSHDPath); err != nil {
		if !inCI() {
			t.Skipf("SKIPPING: %v (set CI=1 to install it and make this a failure)", ErrNoSSHD)
		}
		installSSHD(t)
	}
	if os.Geteuid() != 0 {
		if !inCI() {
			t.Skipf("SKIPPING: %v", ErrNotRoot)
		}
		t.Fatalf("sandbox.ForTest: %v", ErrNotRoot)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("sandbox.Start() = %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			if log, err := s.SSHDLog(); err == nil {
				t.Logf("sshd log of sandbox %s:\n%s", s.Addr(), log)
			}
		}
		if err := s.Stop(); err != nil {
			t.Errorf("sandbox Stop() = %v", err)
		}
	})
	return s
}

var installOnce struct {
	sync.Once
	err error
}

// installSSHD installs openssh-server for CI, once per test binary.
func installSSHD(t testing.TB) {
	t.Helper()
	installOnce.Do(func() { installOnce.err = aptInstallSSHD() })
	if installOnce.err != nil {
		t.Fatalf("sandbox.ForTest: %v; and installing it failed: %v", ErrNoSSHD, installOnce.err)
	}
	if _, err := os.Stat(SSHDPath); err != nil {
		t.Fatalf("sandbox.ForTest: apt-get installed openssh-server but %v", ErrNoSSHD)
	}
}

func aptInstallSSHD() error {
	if os.Geteuid() != 0 {
		return ErrNotRoot
	}
	// The package's postinst would start the host's sshd on port 22.
	// policy-rc.d is Debian's switch to stop that; add one for the
	// install if the machine has none.
	const policy = "/usr/sbin/policy-rc.d"
	if _, err := os.Stat(policy); errors.Is(err, os.ErrNotExist) {
		if err := os.WriteFile(policy, []byte("#!/bin/sh\n# added by kiln's sandbox.ForTest during apt-get install\nexit 101\n"), 0o755); err != nil {
			return err
		}
		defer os.Remove(policy)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	aptGet := func(args ...string) error {
		cmd := exec.CommandContext(ctx, "apt-get", append([]string{"-o", "DPkg::Lock::Timeout=300"}, args...)...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return errors.New("apt-get " + strings.Join(args, " ") + ": " + err.Error() + "\n" + string(out))
		}
		return nil
	}
	if err := aptGet("install", "-y", "--no-install-recommends", "openssh-server"); err != nil {
		// A fresh machine has no package lists yet.
		if err := aptGet("update"); err != nil {
			return err
		}
		return aptGet("install", "-y", "--no-install-recommends", "openssh-server")
	}
	return nil
}

// inCI reports whether $CI asks for missing tools to be installed or to
// fail tests rather than skip them.
func inCI() bool {
	switch strings.ToLower(os.Getenv("CI")) {
	case "", "0", "false", "no":
		return false
	}
	return true
}
