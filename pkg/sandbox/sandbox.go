// Package sandbox runs a throwaway Linux "instance" on this machine: a real
// OpenSSH sshd on 127.0.0.1, serving a copy-on-write view of the host's root
// file system, so that kiln's provisioning (SSH, SFTP, the recipe's
// commands) can be tested end to end without EC2.
//
// sshd runs in its own mount, PID, UTS and IPC namespaces (the network is
// the host's), chrooted into an overlayfs
// whose lower layer is the host's / and whose upper layer is a fresh
// directory. Whatever the recipe writes (packages, config files) lands in
// that upper directory, which Changed lists and Capture tars; the host's
// files are never written. Stop, or the death of the calling process, ends
// the namespace and every process started in it.
//
// It is a test fixture, not a security boundary: root in the sandbox is
// root on the host, with the host's network and kernel. It needs root.
package sandbox

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	_ "embed"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
)

// SSHDPath is where the sandbox expects OpenSSH's server, as Debian's
// openssh-server package installs it.
const SSHDPath = "/usr/sbin/sshd"

// ErrNoSSHD means SSHDPath is missing.
var ErrNoSSHD = errors.New("sshd not found at " + SSHDPath + ": install the Debian package openssh-server (apt-get install openssh-server)")

// ErrNotRoot means the caller lacks the privileges for mount and PID
// namespaces and overlay mounts.
var ErrNotRoot = errors.New("sandbox needs root (mount namespaces and overlayfs)")

//go:embed sandbox.sh
var setupScript string

// Options configures Start.
type Options struct {
	// HostKey is the ed25519 private key sshd presents, in OpenSSH PEM form
	// ("-----BEGIN OPENSSH PRIVATE KEY-----"), so a client can pin its
	// public half. Empty means a new key; HostKey() returns it.
	HostKey []byte
	// AuthorizedKeys are the public keys allowed to log in, as
	// authorized_keys lines. At least one is required.
	AuthorizedKeys []string
	// User is the login user. Empty means root. Any other user is created
	// inside the sandbox if it does not exist, and given passwordless sudo
	// if sudo is installed. Only this user may log in.
	User string
	// WorkDir is where the sandbox's temporary directory is made; it must
	// not be on an overlayfs. Empty means os.TempDir().
	WorkDir string
	// StartTimeout bounds the wait for sshd's banner. Zero means 30s.
	StartTimeout time.Duration
}

// Sandbox is a running sshd in its namespaces. Its methods may be called
// from several goroutines.
type Sandbox struct {
	addr    string
	user    string
	hostKey ssh.PublicKey
	dir     string // the work dir: upper, setup, root, ssh, ...
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error // valid once exited is closed

	mu       sync.Mutex
	stopped  bool
	stopOnce sync.Once
	stopErr  error
}

var userName = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)

// Start starts a sandbox and returns once sshd on Addr() has sent its SSH
// banner. The sandbox dies with the calling process even if Stop is never
// called, and leaves nothing mounted on the host; its temporary directory is
// removed only by Stop.
func Start(ctx context.Context, opts Options) (*Sandbox, error) {
	user := opts.User
	if user == "" {
		user = "root"
	}
	if !userName.MatchString(user) {
		return nil, fmt.Errorf("start sandbox: user %q is not a valid Linux user name", user)
	}
	if len(opts.AuthorizedKeys) == 0 {
		return nil, errors.New("start sandbox: no authorized keys: nobody could log in")
	}
	var authorized strings.Builder
	for i, line := range opts.AuthorizedKeys {
		line = strings.TrimSpace(line)
		if strings.ContainsAny(line, "\r\n") {
			return nil, fmt.Errorf("start sandbox: authorized key %d: want one key per entry", i)
		}
		if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line)); err != nil {
			return nil, fmt.Errorf("start sandbox: authorized key %d: %w", i, err)
		}
		authorized.WriteString(line + "\n")
	}
	hostKeyPEM := opts.HostKey
	if len(hostKeyPEM) == 0 {
		var err error
		if hostKeyPEM, err = newHostKey(); err != nil {
			return nil, fmt.Errorf("start sandbox: %w", err)
		}
	}
	hostKey, err := parseHostKey(hostKeyPEM)
	if err != nil {
		return nil, fmt.Errorf("start sandbox: host key: %w", err)
	}
	timeout := opts.StartTimeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	if _, err := os.Stat(SSHDPath); err != nil {
		return nil, fmt.Errorf("start sandbox: %w", ErrNoSSHD)
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("start sandbox: %w", ErrNotRoot)
	}
	extra, err := sshdVersionOptions(ctx)
	if err != nil {
		return nil, fmt.Errorf("start sandbox: %w", err)
	}

	// The port is free when picked but could be taken before sshd binds
	// it; try again with a new one in that rare case.
	var lastErr error
	for range 3 {
		addr, err := freePort()
		if err != nil {
			return nil, fmt.Errorf("start sandbox: %w", err)
		}
		s := &Sandbox{addr: addr, user: user, hostKey: hostKey, exited: make(chan struct{})}
		err = s.start(ctx, opts.WorkDir, hostKeyPEM, authorized.String(), extra, timeout)
		if err == nil {
			return s, nil
		}
		lastErr = fmt.Errorf("start sandbox on %s: %w", addr, err)
		if !errors.Is(err, errAddrInUse) {
			break
		}
	}
	return nil, lastErr
}

var errAddrInUse = errors.New("address already in use")

func (s *Sandbox) start(ctx context.Context, workDir string, hostKeyPEM []byte, authorized string, extra []string, timeout time.Duration) (err error) {
	if workDir == "" {
		workDir = os.TempDir()
	}
	s.dir, err = os.MkdirTemp(workDir, "kiln-sandbox-")
	if err != nil {
		return err
	}
	// overlayfs splits its options on "," and lower dirs on ":".
	if strings.ContainsAny(s.dir, ",: \t\n") {
		os.RemoveAll(s.dir)
		return fmt.Errorf("work dir %q: overlayfs cannot take a path with ',', ':' or spaces", s.dir)
	}
	defer func() {
		if err != nil {
			_ = s.Stop()
		}
	}()
	for _, d := range []string{"setup", "setup-work", "lower", "upper", "upper-work", "root", "ssh"} {
		if err := os.Mkdir(filepath.Join(s.dir, d), 0o755); err != nil {
			return err
		}
	}
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{"ssh_host_ed25519_key", hostKeyPEM, 0o600},
		{"authorized_keys", []byte(authorized), 0o644},
		{"sshd_config", []byte(sshdConfig(s.addr, s.user, extra)), 0o644},
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(s.dir, "ssh", f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	log, err := os.Create(filepath.Join(s.dir, "setup.log"))
	if err != nil {
		return err
	}
	defer log.Close() // the child has its own copy

	s.cmd = exec.Command("/bin/sh", "-c", setupScript, "sandbox.sh")
	s.cmd.Dir = "/"
	s.cmd.Env = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"LANG=C.UTF-8",
		"W=" + s.dir,
		"KILN_USER=" + s.user,
	}
	s.cmd.Stdout = log
	s.cmd.Stderr = log
	s.cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC,
		// If we die without Stop, PID 1 of the namespace dies, and the
		// kernel kills everything else in it.
		Pdeathsig: syscall.SIGKILL,
	}
	if err := startLocked(s.cmd, func(err error) { s.waitErr = err; close(s.exited) }); err != nil {
		return err
	}
	if err := s.waitReady(ctx, timeout); err != nil {
		logs := s.logTail()
		if strings.Contains(logs, "Address already in use") {
			return errAddrInUse
		}
		return fmt.Errorf("%w\n%s", err, logs)
	}
	return nil
}

// sshdConfig is the whole of sshd's configuration: one ed25519 host key,
// public keys only, for one user, on one loopback address.
func sshdConfig(addr, user string, extra []string) string {
	lines := []string{
		"ListenAddress " + addr,
		"HostKey /run/kiln/ssh_host_ed25519_key",
		"HostKeyAlgorithms ssh-ed25519",
		"PidFile /run/kiln/sshd.pid",
		"AuthorizedKeysFile /run/kiln/authorized_keys",
		"AllowUsers " + user,
		"PermitRootLogin prohibit-password",
		"PubkeyAuthentication yes",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"HostbasedAuthentication no",
		"PermitEmptyPasswords no",
		"UsePAM no",
		"StrictModes yes",
		"UseDNS no",
		"PrintMotd no",
		"X11Forwarding no",
		"PermitTunnel no",
		"LogLevel VERBOSE",
		"Subsystem sftp internal-sftp",
	}
	return strings.Join(append(lines, extra...), "\n") + "\n"
}

var opensshVersion = regexp.MustCompile(`OpenSSH_(\d+)\.(\d+)`)

// sshdVersionOptions returns config lines that depend on the sshd version.
// OpenSSH 9.8 added PerSourcePenalties, on by default: a client that drops
// the connection before authenticating (our readiness probe, a test that
// rejects the host key) would shut 127.0.0.1 out for a while. Older sshd
// refuses the keyword, so it is added only where it exists.
func sshdVersionOptions(ctx context.Context) ([]string, error) {
	// Old sshd has no -V, but prints its version with the usage message.
	out, _ := exec.CommandContext(ctx, SSHDPath, "-V").CombinedOutput()
	m := opensshVersion.FindSubmatch(out)
	if m == nil {
		return nil, fmt.Errorf("read sshd version from %q", out)
	}
	major, _ := strconv.Atoi(string(m[1]))
	minor, _ := strconv.Atoi(string(m[2]))
	if major > 9 || major == 9 && minor >= 8 {
		return []string{"PerSourcePenalties no"}, nil
	}
	return nil, nil
}

// startLocked starts cmd from a goroutine locked to its OS thread and keeps
// that thread until the process exits, then calls done with cmd.Wait's error.
// Pdeathsig fires when the *thread* that forked the child exits, and Go ends
// threads whose locked goroutine returns, so an unlocked start could kill the
// child early (golang/go#27505).
func startLocked(cmd *exec.Cmd, done func(error)) error {
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		done(cmd.Wait())
	}()
	return <-started
}

// waitReady polls until sshd sends its banner, the namespace's PID 1 exits,
// ctx ends or timeout passes.
func (s *Sandbox) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if last = s.probe(ctx); last == nil {
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("sandbox exited before sshd was ready: %v", s.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("wait for sshd banner: %w (last: %v)", context.Cause(ctx), last)
		case <-tick.C:
		}
	}
}

// probe connects once and checks that the sshd answering is this
// sandbox's: it must present the sandbox's host key. A banner alone is not
// enough: when two sandboxes start at once, both can be handed the same
// free port; the first sshd binds it, the second fails to, and the second
// sandbox's probe would reach the first's sshd. The probe then fails until
// the second sshd exits with "Address already in use", and Start retries
// on another port.
func (s *Sandbox) probe(ctx context.Context) error {
	var d net.Dialer
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		return err
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	_ = c.SetDeadline(deadline)
	ours := false
	cfg := &ssh.ClientConfig{
		User:              s.user,
		HostKeyAlgorithms: []string{s.hostKey.Type()},
		HostKeyCallback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
			if !bytes.Equal(key.Marshal(), s.hostKey.Marshal()) {
				return errors.New("another sshd answers on this port: its host key is not the sandbox's")
			}
			ours = true
			return nil
		},
	}
	// No auth method is offered, so the login fails once the host key has
	// been checked; that is all the probe needs.
	conn, _, _, err := ssh.NewClientConn(c, s.addr, cfg)
	if conn != nil {
		conn.Close()
	}
	if ours {
		return nil
	}
	if err == nil {
		err = errors.New("ssh handshake checked no host key")
	}
	return fmt.Errorf("probe sshd: %w", err)
}

// Addr returns sshd's address, "127.0.0.1:PORT".
func (s *Sandbox) Addr() string { return s.addr }

// User returns the login user.
func (s *Sandbox) User() string { return s.user }

// HostKey returns the public half of sshd's host key, for ssh.FixedHostKey.
func (s *Sandbox) HostKey() ssh.PublicKey { return s.hostKey }

// Pid returns the host's PID of sshd, which is PID 1 of the sandbox's PID
// namespace: killing it kills the sandbox.
func (s *Sandbox) Pid() int { return s.cmd.Process.Pid }

// Stop kills every process in the sandbox, waits for them, and removes its
// temporary directory (and with it the captured changes). The sandbox's
// mounts go with its mount namespace. Stop is idempotent.
func (s *Sandbox) Stop() error {
	s.stopOnce.Do(func() {
		s.mu.Lock()
		s.stopped = true
		s.mu.Unlock()
		var errs []error
		if err := s.kill(); err != nil {
			errs = append(errs, err)
		} else if s.dir != "" {
			// Only once the namespace is gone: until then W/root is
			// a mount point in it.
			if err := os.RemoveAll(s.dir); err != nil {
				errs = append(errs, fmt.Errorf("remove %s: %w", s.dir, err))
			}
		}
		s.stopErr = errors.Join(errs...)
	})
	return s.stopErr
}

func (s *Sandbox) kill() error {
	if s.cmd == nil || s.cmd.Process == nil {
		return nil
	}
	// SIGKILL to PID 1 of a PID namespace makes the kernel kill every
	// other process in it; PID 1's exit is reported only after they are
	// all gone.
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case <-s.exited:
		return nil
	case <-t.C:
		return fmt.Errorf("stop sandbox %s: pid %d still running 30s after SIGKILL", s.addr, s.Pid())
	}
}

// logTail returns the end of the setup script's output and of sshd's log.
func (s *Sandbox) logTail() string {
	var b strings.Builder
	for _, name := range []string{"setup.log", "ssh/sshd.log"} {
		data, err := os.ReadFile(filepath.Join(s.dir, name))
		if err != nil || len(data) == 0 {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > 20 {
			lines = lines[len(lines)-20:]
		}
		fmt.Fprintf(&b, "%s:\n%s\n", name, strings.Join(lines, "\n"))
	}
	return b.String()
}

// SSHDLog returns sshd's log (LogLevel VERBOSE) so far. It is gone after
// Stop.
func (s *Sandbox) SSHDLog() ([]byte, error) {
	return os.ReadFile(filepath.Join(s.dir, "ssh", "sshd.log"))
}

func newHostKey() ([]byte, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate host key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "kiln sandbox")
	if err != nil {
		return nil, fmt.Errorf("marshal host key: %w", err)
	}
	return pem.EncodeToMemory(block), nil
}

// parseHostKey checks that pemBytes is an unencrypted ed25519 key in OpenSSH
// form and returns its public half.
func parseHostKey(pemBytes []byte) (ssh.PublicKey, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil || block.Type != "OPENSSH PRIVATE KEY" {
		return nil, errors.New("want an OpenSSH PEM block (BEGIN OPENSSH PRIVATE KEY)")
	}
	signer, err := ssh.ParsePrivateKey(pemBytes)
	if err != nil {
		return nil, err
	}
	if t := signer.PublicKey().Type(); t != ssh.KeyAlgoED25519 {
		return nil, fmt.Errorf("key type %s, want %s", t, ssh.KeyAlgoED25519)
	}
	return signer.PublicKey(), nil
}

// freePort returns a 127.0.0.1 address with a port the kernel just
// reported free.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("pick a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}
