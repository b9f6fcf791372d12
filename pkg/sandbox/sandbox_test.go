package sandbox

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// clientKey returns a fresh client key and its authorized_keys line.
func clientKey(t *testing.T) (ssh.Signer, string) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return signer, string(ssh.MarshalAuthorizedKey(signer.PublicKey()))
}

// dial logs in to s as user, pinning hostKey as kiln does.
func dial(s *Sandbox, user string, key ssh.Signer, hostKey ssh.PublicKey) (*ssh.Client, error) {
	return ssh.Dial("tcp", s.Addr(), &ssh.ClientConfig{
		User:            user,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(key)},
		HostKeyCallback: ssh.FixedHostKey(hostKey),
		Timeout:         10 * time.Second,
	})
}

func mustDial(t *testing.T, s *Sandbox, user string, key ssh.Signer) *ssh.Client {
	t.Helper()
	c, err := dial(s, user, key, s.HostKey())
	if err != nil {
		t.Fatalf("ssh.Dial(%s as %s) = %v", s.Addr(), user, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func run(t *testing.T, c *ssh.Client, cmd string) string {
	t.Helper()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatalf("NewSession() = %v", err)
	}
	defer sess.Close()
	out, err := sess.CombinedOutput(cmd)
	if err != nil {
		t.Fatalf("run %q = %v\n%s", cmd, err, out)
	}
	return string(out)
}

// hostKeyPEM returns a new ed25519 host key in OpenSSH PEM form and its
// public half.
func hostKeyPEM(t *testing.T) ([]byte, ssh.PublicKey) {
	t.Helper()
	pemBytes, err := newHostKey()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := parseHostKey(pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	return pemBytes, pub
}

func TestCommandsChangeOnlyTheSandbox(t *testing.T) {
	key, authorized := clientKey(t)
	hostPEM, hostPub := hostKeyPEM(t)
	s := ForTest(t, Options{HostKey: hostPEM, AuthorizedKeys: []string{authorized}})
	if !bytes.Equal(s.HostKey().Marshal(), hostPub.Marshal()) {
		t.Fatalf("HostKey() = %s, want the key passed in Options", ssh.FingerprintSHA256(s.HostKey()))
	}
	if host, _, _ := net.SplitHostPort(s.Addr()); host != "127.0.0.1" {
		t.Errorf("Addr() = %q, want 127.0.0.1:PORT", s.Addr())
	}
	c := mustDial(t, s, "root", key)

	out := run(t, c, "id -u; echo hi > /etc/kiln-test; apt-get --version | head -1; "+
		"rm /etc/issue.net; mkdir /opt/kiln-dir; touch /tmp/kiln-scratch")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || lines[0] != "0" || !strings.HasPrefix(lines[1], "apt ") {
		t.Errorf("commands printed %q, want \"0\" then apt's version", out)
	}

	// The host is untouched.
	if _, err := os.Stat("/etc/kiln-test"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("os.Stat(/etc/kiln-test) on the host = %v, want not exist", err)
	}
	if _, err := os.Stat("/etc/issue.net"); err != nil {
		t.Errorf("os.Stat(/etc/issue.net) on the host = %v, want it still there", err)
	}

	changed, err := s.Changed()
	if err != nil {
		t.Fatalf("Changed() = %v", err)
	}
	t.Logf("Changed() = %q", changed)
	for _, want := range []string{"/etc/kiln-test", "/etc/issue.net", "/opt/kiln-dir"} {
		if !slices.Contains(changed, want) {
			t.Errorf("Changed() = %q, want it to contain %s", changed, want)
		}
	}
	// Copied-up parents and the private /tmp are not changes.
	for _, notWant := range []string{"/etc", "/opt", "/tmp/kiln-scratch"} {
		if slices.Contains(changed, notWant) {
			t.Errorf("Changed() = %q, want no %s", changed, notWant)
		}
	}

	var buf bytes.Buffer
	if err := s.Capture(&buf); err != nil {
		t.Fatalf("Capture() = %v", err)
	}
	files := readTar(t, &buf)
	want := map[string]string{
		"etc/kiln-test":     "hi\n",
		"etc/.wh.issue.net": "",
		"opt/kiln-dir/":     "",
	}
	for name, content := range want {
		got, ok := files[name]
		if !ok {
			t.Errorf("Capture() tarball has no %s; has %q", name, keys(files))
			continue
		}
		if got != content {
			t.Errorf("Capture() %s = %q, want %q", name, got, content)
		}
	}
}

// readTar returns the names and contents of a gzipped tarball's entries.
func readTar(t *testing.T, r io.Reader) map[string]string {
	t.Helper()
	zr, err := gzip.NewReader(r)
	if err != nil {
		t.Fatalf("gzip.NewReader() = %v", err)
	}
	tr := tar.NewReader(zr)
	files := map[string]string{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatalf("tar Next() = %v", err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("read %s from tar = %v", hdr.Name, err)
		}
		files[hdr.Name] = string(data)
	}
}

func keys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func TestWrongHostKeyFailsHandshake(t *testing.T) {
	key, authorized := clientKey(t)
	s := ForTest(t, Options{AuthorizedKeys: []string{authorized}})
	_, other := hostKeyPEM(t)
	c, err := dial(s, "root", key, other)
	if err == nil {
		c.Close()
		t.Fatalf("ssh.Dial pinning another host key succeeded, want a handshake failure")
	}
	if !strings.Contains(err.Error(), "host key mismatch") {
		t.Errorf("ssh.Dial pinning another host key = %v, want host key mismatch", err)
	}
	// A stranger's client key is refused too.
	stranger, _ := clientKey(t)
	if c, err := dial(s, "root", stranger, s.HostKey()); err == nil {
		c.Close()
		t.Errorf("ssh.Dial with an unauthorized key succeeded, want it refused")
	}
	// And sshd still serves the right client afterwards.
	mustDial(t, s, "root", key)
}

func TestSFTPUpload(t *testing.T) {
	key, authorized := clientKey(t)
	s := ForTest(t, Options{AuthorizedKeys: []string{authorized}})
	c := mustDial(t, s, "root", key)
	sc, err := sftp.NewClient(c)
	if err != nil {
		t.Fatalf("sftp.NewClient() = %v", err)
	}
	defer sc.Close()

	const path, script = "/usr/local/bin/kiln-hello", "#!/bin/sh\necho hello from kiln\n"
	f, err := sc.Create(path)
	if err != nil {
		t.Fatalf("sftp Create(%s) = %v", path, err)
	}
	if _, err := f.Write([]byte(script)); err != nil {
		t.Fatalf("sftp Write(%s) = %v", path, err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("sftp Close(%s) = %v", path, err)
	}
	if err := sc.Chmod(path, 0o755); err != nil {
		t.Fatalf("sftp Chmod(%s) = %v", path, err)
	}
	if got := run(t, c, path); got != "hello from kiln\n" {
		t.Errorf("running the uploaded %s printed %q, want %q", path, got, "hello from kiln\n")
	}
	changed, err := s.Changed()
	if err != nil {
		t.Fatalf("Changed() = %v", err)
	}
	if !slices.Contains(changed, path) {
		t.Errorf("Changed() = %q, want it to contain %s", changed, path)
	}
}

// pidNamespace returns the PID namespace of pid, e.g. "pid:[4026532290]".
func pidNamespace(pid int) (string, error) {
	return os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
}

// processesIn returns the host PIDs of the processes in PID namespace ns.
func processesIn(ns string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if got, err := pidNamespace(pid); err == nil && got == ns {
			pids = append(pids, pid)
		}
	}
	return pids
}

// mountsUnder returns the host's mount points under dir.
func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var mounts []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 && strings.HasPrefix(fields[4], dir) {
			mounts = append(mounts, fields[4])
		}
	}
	return mounts
}

func TestStopKillsEverything(t *testing.T) {
	key, authorized := clientKey(t)
	s := ForTest(t, Options{AuthorizedKeys: []string{authorized}})
	ns, err := pidNamespace(s.Pid())
	if err != nil {
		t.Fatalf("read PID namespace of sandbox pid %d: %v", s.Pid(), err)
	}
	if self, _ := pidNamespace(os.Getpid()); self == ns {
		t.Fatalf("sandbox pid %d shares the test's PID namespace %s", s.Pid(), ns)
	}
	c := mustDial(t, s, "root", key)
	// Processes that outlive their session, as a careless recipe leaves.
	run(t, c, "nohup sleep 1000 >/dev/null 2>&1 & setsid sleep 1001 >/dev/null 2>&1 < /dev/null &")
	if n := len(processesIn(ns)); n < 3 { // sshd, two sleeps
		t.Errorf("processes in %s before Stop = %d, want at least 3", ns, n)
	}
	if got := mountsUnder(t, s.dir); len(got) != 0 {
		t.Errorf("host mounts under %s while running = %q, want none (they belong to the sandbox)", s.dir, got)
	}

	if err := s.Stop(); err != nil {
		t.Fatalf("Stop() = %v", err)
	}
	if pids := processesIn(ns); len(pids) != 0 {
		t.Errorf("processes in %s after Stop = %v, want none", ns, pids)
	}
	if conn, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		conn.Close()
		t.Errorf("Dial(%s) after Stop succeeded, want refused", s.Addr())
	}
	if _, err := os.Stat(s.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("os.Stat(%s) after Stop = %v, want it removed", s.dir, err)
	}
	if err := s.Stop(); err != nil {
		t.Errorf("second Stop() = %v, want nil", err)
	}
	if _, err := s.Changed(); !errors.Is(err, ErrStopped) {
		t.Errorf("Changed() after Stop = %v, want ErrStopped", err)
	}
}

// TestProcessDeathEndsSandbox runs this test binary again as a process
// that starts a sandbox and exits without Stop, then checks that its
// sandbox died with it and left nothing mounted.
func TestProcessDeathEndsSandbox(t *testing.T) {
	if os.Getenv("KILN_SANDBOX_ORPHAN") == "1" {
		_, authorized := clientKey(t)
		s, err := Start(context.Background(), Options{AuthorizedKeys: []string{authorized}})
		if err != nil {
			fmt.Println("ERROR", err)
			os.Exit(1)
		}
		ns, _ := pidNamespace(s.Pid())
		fmt.Println("SANDBOX", s.Addr(), s.dir, ns)
		os.Exit(0) // no Stop, no cleanup
	}
	// Skip or fail (and install sshd) the way ForTest would.
	_, authorized := clientKey(t)
	ForTest(t, Options{AuthorizedKeys: []string{authorized}})

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestProcessDeathEndsSandbox$")
	cmd.Env = append(os.Environ(), "KILN_SANDBOX_ORPHAN=1")
	out, err := cmd.CombinedOutput()
	var addr, dir, ns string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 4 && f[0] == "SANDBOX" {
			addr, dir, ns = f[1], f[2], f[3]
		}
	}
	if err != nil || ns == "" {
		t.Fatalf("child test process = %v, want it to report a sandbox:\n%s", err, out)
	}
	t.Cleanup(func() { os.RemoveAll(dir) }) // only Stop removes it

	// The kernel tears the namespace down asynchronously; poll briefly.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for len(processesIn(ns)) > 0 {
		select {
		case <-ctx.Done():
			t.Fatalf("processes in %s 1m after their creator died: %v", ns, processesIn(ns))
		case <-tick.C:
		}
	}
	if got := mountsUnder(t, dir); len(got) != 0 {
		t.Errorf("host mounts under %s = %q, want none", dir, got)
	}
	if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		conn.Close()
		t.Errorf("Dial(%s) after its creator died succeeded, want refused", addr)
	}
}

func TestNonRootUserWithSudo(t *testing.T) {
	if _, err := os.Stat("/usr/bin/sudo"); err != nil {
		t.Skip("sudo is not installed on this host; the sandbox's user gets sudo only if it is")
	}
	key, authorized := clientKey(t)
	s := ForTest(t, Options{User: "ubuntu", AuthorizedKeys: []string{authorized}})
	c := mustDial(t, s, "ubuntu", key)
	got := strings.Fields(run(t, c, "id -un; sudo -n id -u; sudo -n sh -c 'echo x > /etc/kiln-sudo'"))
	if diff := cmp.Diff([]string{"ubuntu", "0"}, got); diff != "" {
		t.Errorf("id as ubuntu and via sudo (-want +got):\n%s", diff)
	}
	changed, err := s.Changed()
	if err != nil {
		t.Fatalf("Changed() = %v", err)
	}
	if !slices.Contains(changed, "/etc/kiln-sudo") {
		t.Errorf("Changed() = %q, want /etc/kiln-sudo", changed)
	}
	// Creating the user is the sandbox's doing, not the recipe's.
	for _, p := range []string{"/etc/passwd", "/etc/sudoers.d/90-kiln-ubuntu", "/home/ubuntu"} {
		if slices.Contains(changed, p) {
			t.Errorf("Changed() = %q, want no %s", changed, p)
		}
	}
	if c, err := dial(s, "root", key, s.HostKey()); err == nil {
		c.Close()
		t.Errorf("ssh.Dial as root to a sandbox for ubuntu succeeded, want refused")
	}
}

func TestNonRootUserWithoutSudo(t *testing.T) {
	key, authorized := clientKey(t)
	s := ForTest(t, Options{User: "kiln", AuthorizedKeys: []string{authorized}})
	c := mustDial(t, s, "kiln", key)
	if got := strings.TrimSpace(run(t, c, "id -un")); got != "kiln" {
		t.Errorf("id -un = %q, want kiln", got)
	}
	if _, err := os.Stat("/home/kiln"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("os.Stat(/home/kiln) on the host = %v, want not exist", err)
	}
}

func TestStartRejectsBadOptions(t *testing.T) {
	_, authorized := clientKey(t)
	rsaPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: []byte("x")})
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"no authorized keys", Options{}},
		{"bad authorized key", Options{AuthorizedKeys: []string{"ssh-ed25519 !!!"}}},
		{"two keys in one entry", Options{AuthorizedKeys: []string{authorized + authorized}}},
		{"host key not OpenSSH PEM", Options{AuthorizedKeys: []string{authorized}, HostKey: rsaPEM}},
		{"host key garbage", Options{AuthorizedKeys: []string{authorized}, HostKey: []byte("nope")}},
		{"user with shell characters", Options{AuthorizedKeys: []string{authorized}, User: "x;rm -rf /"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Start(context.Background(), tc.opts)
			if err == nil {
				s.Stop()
				t.Fatalf("Start(%+v) = nil error, want one", tc.opts)
			}
		})
	}
}

func TestSSHDConfigPinsLoopbackAndKeys(t *testing.T) {
	cfg := sshdConfig("127.0.0.1:2222", "root", nil)
	for _, want := range []string{
		"ListenAddress 127.0.0.1:2222",
		"PasswordAuthentication no",
		"PermitRootLogin prohibit-password",
		"Subsystem sftp internal-sftp",
		"UsePAM no",
		"AllowUsers root",
	} {
		if !slices.Contains(strings.Split(cfg, "\n"), want) {
			t.Errorf("sshdConfig() has no line %q:\n%s", want, cfg)
		}
	}
	if strings.Contains(cfg, "0.0.0.0") || strings.Contains(cfg, "Port ") {
		t.Errorf("sshdConfig() listens beyond its address:\n%s", cfg)
	}
}

func TestHostKernelStateIsProtected(t *testing.T) {
	key, authorized := clientKey(t)
	s := ForTest(t, Options{AuthorizedKeys: []string{authorized}})
	// Only touch the hostname once it is known to be the sandbox's own.
	for _, ns := range []string{"uts", "ipc", "mnt", "pid"} {
		self, err1 := os.Readlink("/proc/self/ns/" + ns)
		theirs, err2 := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", s.Pid(), ns))
		if err1 != nil || err2 != nil || self == theirs {
			t.Fatalf("sandbox %s namespace = %q (%v), test's = %q (%v); want different ones", ns, theirs, err2, self, err1)
		}
	}
	hostName, _ := os.Hostname()
	c := mustDial(t, s, "root", key)
	out := run(t, c, "hostname kiln-sandbox-test && hostname; "+
		// Writing back the value it has: harmless even if it worked.
		"if cat /proc/sys/kernel/ctrl-alt-del > /proc/sys/kernel/ctrl-alt-del; then echo sysctl-writable; else echo sysctl-refused; fi 2>/dev/null")
	if diff := cmp.Diff([]string{"kiln-sandbox-test", "sysctl-refused"}, strings.Fields(out)); diff != "" {
		t.Errorf("hostname and sysctl in the sandbox (-want +got):\n%s", diff)
	}
	if got, _ := os.Hostname(); got != hostName {
		t.Errorf("host's hostname = %q after the sandbox set its own, want %q", got, hostName)
	}
}
