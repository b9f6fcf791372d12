package bake

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// testSSHD is an in-process SSH server for provisioning's unit tests: it
// runs each exec request with /bin/sh on this machine, in a home folder of
// the test's own, and serves SFTP. It remembers what it was asked to do, so
// a test can assert that nothing ran, and it can drop every connection at
// once, as a rebooting instance does.
type testSSHD struct {
	t       *testing.T
	addr    string
	hostKey ssh.Signer
	home    string
	bin     string // first on PATH: fake programs for a test
	ln      net.Listener
	cfg     *ssh.ServerConfig

	mu      sync.Mutex
	conns   []net.Conn
	logins  int
	execs   []string
	sftps   int
	refused bool // reject every login (authorized_keys not installed yet)
}

// newTestKey returns a fresh ed25519 signer and its private key in OpenSSH
// PEM form.
func newTestKey(t testing.TB) (ssh.Signer, string) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "kiln test")
	if err != nil {
		t.Fatal(err)
	}
	return signer, string(pem.EncodeToMemory(block))
}

// startTestSSHD starts a server with host key hostKey that lets in the
// holder of authorized.
func startTestSSHD(t *testing.T, hostKey ssh.Signer, authorized ssh.PublicKey) *testSSHD {
	t.Helper()
	s := &testSSHD{t: t, hostKey: hostKey, home: t.TempDir(), bin: t.TempDir()}
	s.cfg = &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.refused || string(key.Marshal()) != string(authorized.Marshal()) {
				return nil, errors.New("key not authorized")
			}
			s.logins++
			return &ssh.Permissions{}, nil
		},
	}
	s.cfg.AddHostKey(hostKey)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.ln, s.addr = ln, ln.Addr().String()
	go s.serve()
	t.Cleanup(func() {
		ln.Close()
		s.dropAll()
	})
	return s
}

func (s *testSSHD) serve() {
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns = append(s.conns, nc)
		s.mu.Unlock()
		go s.handle(nc)
	}
}

// dropAll closes every connection, as a reboot does.
func (s *testSSHD) dropAll() {
	s.mu.Lock()
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// counts returns the logins, exec requests and SFTP sessions so far.
func (s *testSSHD) counts() (logins int, execs []string, sftps int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logins, append([]string(nil), s.execs...), s.sftps
}

func (s *testSSHD) handle(nc net.Conn) {
	_, chans, reqs, err := ssh.NewServerConn(nc, s.cfg)
	if err != nil {
		nc.Close()
		return
	}
	go ssh.DiscardRequests(reqs)
	for nch := range chans {
		if nch.ChannelType() != "session" {
			_ = nch.Reject(ssh.UnknownChannelType, "sessions only")
			continue
		}
		ch, creqs, err := nch.Accept()
		if err != nil {
			continue
		}
		go s.session(ch, creqs)
	}
}

func (s *testSSHD) session(ch ssh.Channel, reqs <-chan *ssh.Request) {
	for req := range reqs {
		switch req.Type {
		case "exec":
			var p struct{ Command string }
			if err := ssh.Unmarshal(req.Payload, &p); err != nil {
				_ = req.Reply(false, nil)
				continue
			}
			_ = req.Reply(true, nil)
			s.mu.Lock()
			s.execs = append(s.execs, p.Command)
			s.mu.Unlock()
			go func() {
				status := s.exec(ch, p.Command)
				_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(status)}))
				ch.Close()
			}()
		case "subsystem":
			var p struct{ Name string }
			if err := ssh.Unmarshal(req.Payload, &p); err != nil || p.Name != "sftp" {
				_ = req.Reply(false, nil)
				continue
			}
			_ = req.Reply(true, nil)
			s.mu.Lock()
			s.sftps++
			s.mu.Unlock()
			go func() {
				srv, err := sftp.NewServer(ch, sftp.WithServerWorkingDirectory(s.home))
				if err == nil {
					_ = srv.Serve()
				}
				ch.Close()
			}()
		default:
			_ = req.Reply(false, nil)
		}
	}
}

// exec runs command with /bin/sh in the home folder and returns its exit
// status.
func (s *testSSHD) exec(ch ssh.Channel, command string) int {
	cmd := exec.Command("/bin/sh", "-c", command)
	cmd.Dir = s.home
	cmd.Env = []string{"HOME=" + s.home, "PATH=" + s.bin + ":/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG=C"}
	// No stdin: the commands kiln runs read none.
	cmd.Stdout = ch
	cmd.Stderr = ch.Stderr()
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if exit, ok := errors.AsType[*exec.ExitError](err); ok {
		return exit.ExitCode()
	}
	if err != nil {
		fmt.Fprintf(ch.Stderr(), "%v\n", err)
		return 255
	}
	return 0
}

// addProgram puts an executable script named name first on the PATH of
// the server's commands.
func (s *testSSHD) addProgram(name, script string) {
	s.t.Helper()
	if err := os.WriteFile(filepath.Join(s.bin, name), []byte(script), 0o755); err != nil {
		s.t.Fatal(err)
	}
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// hangUpAddr returns a loopback address whose server accepts connections
// and closes them before its SSH banner, like an sshd still starting.
func hangUpAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, "")
			c.Close()
		}
	}()
	return ln.Addr().String()
}
