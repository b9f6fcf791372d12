// Package emulator runs moto, a local emulator of the AWS APIs, so that
// kiln's stages can be tested with the real aws-sdk-go-v2 clients and no AWS
// account.
//
// Start installs moto[server] into a Python venv on first use (see Install)
// and runs moto_server on a free port of 127.0.0.1. Config gives an
// aws.Config pointed at it. ForTest does both for other packages' tests.
//
// moto is laxer than AWS in places (shared/FACTS.md lists what kiln knows):
// kiln must be right for AWS, so cover those cases with unit-test fakes.
package emulator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Options configures Start. The zero value works.
type Options struct {
	// VenvDir is the venv moto is installed into; see Install.
	VenvDir string
	// Python is the interpreter that creates the venv; see Install.
	Python string
	// MotoServer, if set, is a moto_server program to run as is; Install
	// is then skipped.
	MotoServer string
	// Log receives moto's output (one line per request), from another
	// goroutine, until Stop returns. If nil and
	// LogFile is empty, the output is discarded (the last lines still
	// appear in Start's error if moto fails to come up).
	Log io.Writer
	// LogFile, if set, is a file moto's output is appended to.
	LogFile string
	// StartTimeout bounds the wait for moto to answer HTTP, on top of the
	// install. Zero means 60s.
	StartTimeout time.Duration
}

// Server is a running moto_server bound to 127.0.0.1.
type Server struct {
	endpoint string
	cmd      *exec.Cmd
	exited   chan struct{} // closed once the process has been waited for
	waitErr  error         // valid after exited is closed
	logFile  *os.File
	output   *tailWriter

	stopOnce sync.Once
	stopErr  error
}

// Start installs moto if needed, runs moto_server on a free port of
// 127.0.0.1, and returns once it answers HTTP. The server dies with the
// calling process even if Stop is never called.
func Start(ctx context.Context, opts Options) (*Server, error) {
	moto := opts.MotoServer
	if moto == "" {
		var err error
		moto, err = Install(ctx, InstallOptions{VenvDir: opts.VenvDir, Python: opts.Python})
		if err != nil {
			return nil, fmt.Errorf("start moto: %w", err)
		}
	}
	timeout := opts.StartTimeout
	if timeout == 0 {
		timeout = 60 * time.Second
	}
	// The port is free when picked but could be taken before moto binds
	// it; try again with a new port in that rare case.
	var lastErr error
	for range 3 {
		addr, err := freePort()
		if err != nil {
			return nil, fmt.Errorf("start moto: %w", err)
		}
		s, err := start(ctx, moto, addr, opts, timeout)
		if err == nil {
			return s, nil
		}
		lastErr = fmt.Errorf("start moto on %s: %w", addr, err)
		if !errors.Is(err, errAddrInUse) {
			break
		}
	}
	return nil, lastErr
}

var errAddrInUse = errors.New("address already in use")

func start(ctx context.Context, moto, addr string, opts Options, timeout time.Duration) (*Server, error) {
	host, port, _ := net.SplitHostPort(addr)
	s := &Server{
		endpoint: "http://" + addr,
		exited:   make(chan struct{}),
		output:   &tailWriter{max: 8 << 10},
	}
	var sinks []io.Writer
	if opts.Log != nil {
		sinks = append(sinks, opts.Log)
	}
	if opts.LogFile != "" {
		f, err := os.OpenFile(opts.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("open moto log: %w", err)
		}
		s.logFile = f
		sinks = append(sinks, f)
	}
	sinks = append(sinks, s.output)
	out := io.MultiWriter(sinks...)

	s.cmd = exec.Command(moto, "-H", host, "-p", port)
	s.cmd.Stdout = out
	s.cmd.Stderr = out
	s.cmd.Stdin = nil
	s.cmd.WaitDelay = 2 * time.Second
	s.cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:   true,            // Stop signals the whole group
		Pdeathsig: syscall.SIGKILL, // and moto dies with us if Stop is never called
	}
	if err := startLocked(s.cmd, func(err error) { s.waitErr = err; close(s.exited) }); err != nil {
		s.closeLog()
		return nil, err
	}
	if err := s.waitReady(ctx, timeout); err != nil {
		_ = s.Stop()
		if strings.Contains(s.output.String(), "Address already in use") {
			return nil, errAddrInUse
		}
		return nil, fmt.Errorf("%w\nmoto output:\n%s", err, lastLines(s.output.String(), 20))
	}
	return s, nil
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

// waitReady polls until moto answers any HTTP request, the process exits,
// ctx ends or timeout passes.
func (s *Server) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.endpoint+"/moto-api/", nil)
		if err != nil {
			return err
		}
		if resp, err := client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("moto_server exited before answering: %v", s.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("wait for moto to answer: %w", context.Cause(ctx))
		case <-tick.C:
		}
	}
}

// Endpoint returns the server's base URL, e.g. "http://127.0.0.1:41234".
func (s *Server) Endpoint() string { return s.endpoint }

// Reset clears all of moto's state (POST /moto-api/reset): every service,
// every Region.
func (s *Server) Reset(ctx context.Context) error {
	return reset(ctx, s.endpoint)
}

func reset(ctx context.Context, endpoint string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint+"/moto-api/reset", nil)
	if err != nil {
		return fmt.Errorf("reset moto at %s: %w", endpoint, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("reset moto at %s: %w", endpoint, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("reset moto at %s: %s", endpoint, resp.Status)
	}
	return nil
}

// Stop ends moto's process group and waits for it: SIGTERM, then SIGKILL if
// it is still there after 5s. It is safe to call more than once.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		s.stopErr = s.stop()
		s.closeLog()
	})
	return s.stopErr
}

func (s *Server) stop() error {
	pgid := s.cmd.Process.Pid
	select {
	case <-s.exited:
		return nil // already gone; Start's error said why
	default:
	}
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	grace := time.NewTimer(5 * time.Second)
	defer grace.Stop()
	select {
	case <-s.exited:
		return nil
	case <-grace.C:
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	hard := time.NewTimer(10 * time.Second)
	defer hard.Stop()
	select {
	case <-s.exited:
		return nil
	case <-hard.C:
		return fmt.Errorf("stop moto at %s: pid %d still running after SIGKILL", s.endpoint, pgid)
	}
}

func (s *Server) closeLog() {
	if s.logFile != nil {
		_ = s.logFile.Close()
	}
}

// freePort returns a 127.0.0.1 address with a port the kernel just
// reported free.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("pick a free port: %w", err)
	}
	defer l.Close()
	return "127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port), nil
}

// tailWriter keeps the last max bytes written to it, for error messages.
type tailWriter struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (w *tailWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	if over := len(w.buf) - w.max; over > 0 {
		w.buf = append(w.buf[:0], w.buf[over:]...)
	}
	return len(p), nil
}

func (w *tailWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.buf)
}
