package bake

// The SSH side of provisioning: logging in with a pinned host key, short
// commands and SFTP with bounded waits, and commands that run detached on
// the instance so that they outlive the Lambda invocation that started them.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

const (
	// sshDialTimeout bounds the TCP connect; sshHandshakeTimeout the SSH
	// banner, key exchange and login after it. An instance that is still
	// booting accepts connections it cannot serve yet, so both are short:
	// the state machine, not the Lambda, waits for SSH.
	sshDialTimeout      = 10 * time.Second
	sshHandshakeTimeout = 20 * time.Second
	// sshOpTimeout bounds one short remote operation (a command, an SFTP
	// call). A connection that stops answering (an instance that went away
	// without closing its TCP connections) is closed and counts as lost.
	sshOpTimeout = 60 * time.Second
)

// errConnLost marks an operation that failed because the SSH connection
// went away: the instance rebooted, or the network dropped. Provisioning
// reconnects through the SSH wait rather than failing.
var errConnLost = errors.New("ssh connection lost")

// dialSSH is the default Provision.Dial: a TCP connection to addr and an
// SSH login, each bounded so that an instance that accepts connections but
// does not answer yet (still booting) cannot hold the invocation.
func dialSSH(ctx context.Context, addr string, cfg *ssh.ClientConfig) (*ssh.Client, error) {
	d := net.Dialer{Timeout: sshDialTimeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(sshHandshakeTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = conn.SetDeadline(deadline)
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	if err != nil {
		conn.Close()
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	return ssh.NewClient(c, chans, reqs), nil
}

// pinHostKey returns a host key callback that accepts only want, through
// ssh.FixedHostKey, and records any other key the server presents as a
// *HostKeyError in *mismatch. kiln generated the instance's host key at
// launch, so a different key is never "first use": it is another machine,
// or someone in between, and nothing may run on it.
func pinHostKey(addr string, want ssh.PublicKey, mismatch **HostKeyError) ssh.HostKeyCallback {
	fixed := ssh.FixedHostKey(want)
	return func(host string, remote net.Addr, key ssh.PublicKey) error {
		if err := fixed(host, remote, key); err != nil {
			e := &HostKeyError{Addr: addr, Want: ssh.FingerprintSHA256(want), Got: ssh.FingerprintSHA256(key)}
			*mismatch = e
			return e
		}
		return nil
	}
}

// hostKeyAlgorithms asks the server for the pinned key's algorithms only,
// so that a server holding several host keys presents the one kiln knows.
func hostKeyAlgorithms(k ssh.PublicKey) []string {
	if k.Type() == ssh.KeyAlgoRSA {
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	}
	return []string{k.Type()}
}

// hostKeyAbsent turns a failed host key negotiation (the server has no key
// of the pinned key's type) into a *HostKeyError: it cannot be the
// instance kiln launched either.
func hostKeyAbsent(addr string, want ssh.PublicKey, err error) *HostKeyError {
	neg, ok := errors.AsType[*ssh.AlgorithmNegotiationError](err)
	if !ok || neg.What != "host key" {
		return nil
	}
	return &HostKeyError{
		Addr: addr,
		Want: ssh.FingerprintSHA256(want),
		Got:  fmt.Sprintf("no %s host key (it offers %s)", want.Type(), strings.Join(neg.RequestedAlgorithms, ", ")),
	}
}

// sshRemote is a logged-in connection to the instance.
type sshRemote struct {
	addr   string
	client *ssh.Client
	dead   chan struct{} // closed when the connection has ended
	sftpc  *sftp.Client  // opened on first use
}

func newSSHRemote(addr string, c *ssh.Client) *sshRemote {
	r := &sshRemote{addr: addr, client: c, dead: make(chan struct{})}
	go func() {
		_ = c.Wait()
		close(r.dead)
	}()
	return r
}

// Close ends the connection.
func (r *sshRemote) Close() error {
	if r.sftpc != nil {
		_ = r.sftpc.Close()
	}
	return r.client.Close()
}

// lost reports whether the connection has ended, waiting briefly: an
// operation can fail a moment before the connection's end is noticed.
func (r *sshRemote) lost(grace time.Duration) bool {
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-r.dead:
		return true
	case <-t.C:
		return false
	}
}

// check marks err as errConnLost when the connection has gone.
func (r *sshRemote) check(err error) error {
	if err == nil || errors.Is(err, errConnLost) {
		return err
	}
	_, missing := errors.AsType[*ssh.ExitMissingError](err)
	if missing || errors.Is(err, sftp.ErrSSHFxConnectionLost) || errors.Is(err, net.ErrClosed) || r.lost(2*time.Second) {
		_ = r.client.Close()
		return fmt.Errorf("%w: %v", errConnLost, err)
	}
	return err
}

// do runs op, bounded by limit and ctx. An operation that does not answer
// within limit has lost its connection: do closes it (which also ends op).
// When ctx ends first, do also closes the connection and returns ctx's
// error.
func (r *sshRemote) do(parent context.Context, limit time.Duration, op func() error) error {
	ctx, cancel := context.WithTimeout(parent, limit)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- op() }()
	select {
	case err := <-done:
		return r.check(err)
	case <-ctx.Done():
		// The only way to abandon an SSH or SFTP call is to close the
		// connection under it.
		_ = r.client.Close()
		<-done
		if err := parent.Err(); err != nil {
			return fmt.Errorf("ssh %s: %w", r.addr, err)
		}
		return fmt.Errorf("%w: %s did not answer within %s", errConnLost, r.addr, limit)
	}
}

// run runs a short command and returns its combined output and exit status.
func (r *sshRemote) run(ctx context.Context, cmd string) (out []byte, status int, err error) {
	status = -1
	err = r.do(ctx, sshOpTimeout, func() error {
		s, err := r.client.NewSession()
		if err != nil {
			return fmt.Errorf("open ssh session: %w", err)
		}
		defer s.Close()
		// One buffer for both streams, behind a lock: the session copies
		// them from two goroutines.
		buf := &lockedBuffer{}
		s.Stdout, s.Stderr = buf, buf
		err = s.Run(cmd)
		out = buf.bytes()
		if exit, ok := errors.AsType[*ssh.ExitError](err); ok {
			status = exit.ExitStatus()
			return nil
		}
		if err == nil {
			status = 0
		}
		return err
	})
	return out, status, err
}

// lockedBuffer is a bytes.Buffer that two goroutines may write to.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

// files returns the connection's SFTP client.
func (r *sshRemote) files(ctx context.Context) (*sftp.Client, error) {
	if r.sftpc != nil {
		return r.sftpc, nil
	}
	err := r.do(ctx, sshOpTimeout, func() error {
		c, err := sftp.NewClient(r.client)
		if err != nil {
			return fmt.Errorf("start sftp: %w", err)
		}
		r.sftpc = c
		return nil
	})
	return r.sftpc, err
}

// sftpDo runs op with the SFTP client, bounded as do is.
func (r *sshRemote) sftpDo(ctx context.Context, limit time.Duration, op func(c *sftp.Client) error) error {
	c, err := r.files(ctx)
	if err != nil {
		return err
	}
	return r.do(ctx, limit, func() error { return op(c) })
}

// upload writes content to the remote path dst with mode perm, creating
// its parent folders.
func (r *sshRemote) upload(ctx context.Context, dst string, content io.Reader, perm os.FileMode) error {
	// A large file takes its time: bound the upload by ctx alone (an hour
	// without a deadline), not by sshOpTimeout.
	limit := time.Hour
	if dl, ok := ctx.Deadline(); ok {
		limit = max(time.Until(dl), time.Second)
	}
	return r.sftpDo(ctx, limit, func(c *sftp.Client) error {
		if dir := path.Dir(dst); dir != "." && dir != "/" {
			if err := c.MkdirAll(dir); err != nil {
				return fmt.Errorf("create folder %s: %w", dir, err)
			}
		}
		f, err := c.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
		if err != nil {
			return fmt.Errorf("create %s: %w", dst, err)
		}
		if _, err := f.ReadFrom(content); err != nil {
			f.Close()
			return fmt.Errorf("write %s: %w", dst, err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("write %s: %w", dst, err)
		}
		if err := c.Chmod(dst, perm); err != nil {
			return fmt.Errorf("chmod %s: %w", dst, err)
		}
		return nil
	})
}

// stat returns the remote path p's file info, or nil if it does not exist.
func (r *sshRemote) stat(ctx context.Context, p string) (os.FileInfo, error) {
	var info os.FileInfo
	err := r.sftpDo(ctx, sshOpTimeout, func(c *sftp.Client) error {
		fi, err := c.Stat(p)
		switch {
		case errors.Is(err, os.ErrNotExist):
			return nil
		case err != nil:
			return fmt.Errorf("stat %s: %w", p, err)
		}
		info = fi
		return nil
	})
	return info, err
}

// isDir reports whether the remote path p is a folder.
func (r *sshRemote) isDir(ctx context.Context, p string) (bool, error) {
	fi, err := r.stat(ctx, p)
	return fi != nil && fi.IsDir(), err
}

// remove deletes the remote file p if it exists.
func (r *sshRemote) remove(ctx context.Context, p string) error {
	return r.sftpDo(ctx, sshOpTimeout, func(c *sftp.Client) error {
		if err := c.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", p, err)
		}
		return nil
	})
}

// readAt reads up to max bytes of the remote file p from offset off. A
// missing file reads as empty.
func (r *sshRemote) readAt(ctx context.Context, p string, off int64, max int) ([]byte, error) {
	var data []byte
	err := r.sftpDo(ctx, sshOpTimeout, func(c *sftp.Client) error {
		f, err := c.Open(p)
		switch {
		case errors.Is(err, os.ErrNotExist):
			return nil
		case err != nil:
			return fmt.Errorf("open %s: %w", p, err)
		}
		defer f.Close()
		buf := make([]byte, max)
		n, err := f.ReadAt(buf, off)
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read %s: %w", p, err)
		}
		data = buf[:n]
		return nil
	})
	return data, err
}

// size returns the size of the remote file p, 0 if it is missing.
func (r *sshRemote) size(ctx context.Context, p string) (int64, error) {
	fi, err := r.stat(ctx, p)
	if fi == nil {
		return 0, err
	}
	return fi.Size(), err
}

// quoteShell quotes s for a POSIX shell: single quotes, with each single
// quote written as '"'"', as Packer quotes environment values.
func quoteShell(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'"'"'`) + "'"
}

// A job is one command kiln runs detached on the instance, in its own
// folder: it survives the SSH connection and the Lambda invocation that
// started it, and any later invocation can read its output and its exit
// status. The folder holds:
//
//	cmd      the command line until the job reads it (it may hold secrets)
//	run      the wrapper that runs it
//	started  a folder made once: whoever makes it starts the job
//	boot     the kernel's boot ID when it started (a reboot changes it)
//	pid      the wrapper's PID, which leads the job's session and process group
//	out      stdout and stderr
//	exit     the exit status, written when it ends
//
// The folder's name is derived from the build, the provisioner, the
// attempt and the step, so a retried invocation that does not know whether
// its predecessor started the command finds the folder and reattaches
// instead of running the command twice.
type job struct {
	r   *sshRemote
	dir string
}

// jobStatus is what probe learns about a job.
type jobStatus struct {
	Started  bool // the started marker exists
	Exited   bool // the exit file exists
	Exit     int  // its content
	Alive    bool // its process still runs
	SameBoot bool // the instance has not rebooted since it started
}

// shAlive defines the shell function alive PID: whether the process runs.
// kill -0 alone also answers yes for a zombie, which an init that is slow
// to reap (or none, in a container) leaves behind; /proc tells them apart.
const shAlive = `alive() {
	kill -0 "$1" 2>/dev/null || return 1
	s=$(sed -n 's/.*) \(.\).*/\1/p' "/proc/$1/stat" 2>/dev/null)
	[ "$s" != Z ]
}`

// probe reports the job's status with one short command.
func (j job) probe(ctx context.Context) (jobStatus, error) {
	script := "d=" + quoteShell(j.dir) + `
[ -d "$d/started" ] && echo started
[ -f "$d/exit" ] && echo "exit $(cat "$d/exit")"
p=$(cat "$d/pid" 2>/dev/null)
` + shAlive + `
[ -n "$p" ] && alive "$p" && echo alive
b=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)
[ "$b" = "$(cat "$d/boot" 2>/dev/null)" ] && echo sameboot
true`
	out, status, err := j.r.run(ctx, script)
	if err != nil {
		return jobStatus{}, fmt.Errorf("probe %s: %w", j.dir, err)
	}
	if status != 0 {
		return jobStatus{}, fmt.Errorf("probe %s: exit status %d: %s", j.dir, status, bytes.TrimSpace(out))
	}
	var s jobStatus
	for line := range strings.Lines(string(out)) {
		line = strings.TrimSpace(line)
		switch {
		case line == "started":
			s.Started = true
		case line == "alive":
			s.Alive = true
		case line == "sameboot":
			s.SameBoot = true
		case strings.HasPrefix(line, "exit "):
			if n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "exit "))); err == nil {
				s.Exited, s.Exit = true, n
			}
		}
	}
	return s, nil
}

// start writes the job's command and wrapper and starts it detached, in a
// session of its own (setsid), so that neither the end of the SSH session
// nor its hangup stops it. Making the started folder is the lock: of two
// starts of one job, only one runs it. start returns once the job has
// written its PID, so that a probe right after sees it alive.
func (j job) start(ctx context.Context, command string) error {
	d := quoteShell(j.dir)
	wrapper := "d=" + d + `
echo $$ > "$d/pid.new" && mv -f "$d/pid.new" "$d/pid"
c=$(cat "$d/cmd") && rm -f "$d/cmd"
"${SHELL:-/bin/sh}" -c "$c" > "$d/out" 2>&1 < /dev/null
echo $? > "$d/exit.new" && mv -f "$d/exit.new" "$d/exit"
`
	if err := j.r.upload(ctx, j.dir+"/cmd", strings.NewReader(command), 0o600); err != nil {
		return fmt.Errorf("write command: %w", err)
	}
	if err := j.r.upload(ctx, j.dir+"/run", strings.NewReader(wrapper), 0o600); err != nil {
		return fmt.Errorf("write command wrapper: %w", err)
	}
	launch := "d=" + d + `
mkdir "$d/started" 2>/dev/null || exit 0
chmod 700 "$d"
: > "$d/out" && chmod 600 "$d/out"
cat /proc/sys/kernel/random/boot_id > "$d/boot" 2>/dev/null
if command -v setsid >/dev/null 2>&1; then
	setsid sh "$d/run" < /dev/null > /dev/null 2>&1 &
else
	nohup sh "$d/run" < /dev/null > /dev/null 2>&1 &
fi
i=0
while [ ! -s "$d/pid" ] && [ $i -lt 100 ]; do sleep 0.05 2>/dev/null || sleep 1; i=$((i+1)); done
true`
	out, status, err := j.r.run(ctx, launch)
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	if status != 0 {
		return fmt.Errorf("start: exit status %d: %s", status, bytes.TrimSpace(out))
	}
	return nil
}

// kill stops the job: SIGTERM to its process group, then SIGKILL to what
// is left a couple of seconds later.
func (j job) kill(ctx context.Context) error {
	script := "d=" + quoteShell(j.dir) + `
p=$(cat "$d/pid" 2>/dev/null)
[ -n "$p" ] || exit 0
` + shAlive + `
kill -TERM "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null
i=0
while alive "$p" && [ $i -lt 40 ]; do sleep 0.05 2>/dev/null || sleep 1; i=$((i+1)); done
kill -KILL "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null
true`
	if _, _, err := j.r.run(ctx, script); err != nil {
		return fmt.Errorf("kill %s: %w", j.dir, err)
	}
	return nil
}

// exitStatus reads the job's exit status, if it has one.
func (j job) exitStatus(ctx context.Context) (int, bool, error) {
	b, err := j.r.readAt(ctx, j.dir+"/exit", 0, 64)
	if err != nil || len(b) == 0 {
		return 0, false, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, false, nil // being written
	}
	return n, true, nil
}

// tail returns the last n lines of the job's output.
func (j job) tail(ctx context.Context, n int) ([]string, error) {
	const window = 64 << 10
	size, err := j.r.size(ctx, j.dir+"/out")
	if err != nil {
		return nil, err
	}
	off := max(size-window, 0)
	b, err := j.r.readAt(ctx, j.dir+"/out", off, int(size-off))
	if err != nil {
		return nil, err
	}
	text := strings.TrimRight(string(b), "\n")
	if text == "" {
		return nil, nil
	}
	lines := strings.Split(text, "\n")
	if off > 0 && len(lines) > 1 {
		lines = lines[1:] // the first is cut
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, "\r")
	}
	return lines, nil
}
