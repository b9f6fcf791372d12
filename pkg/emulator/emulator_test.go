package emulator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/google/go-cmp/cmp"
)

// startServer starts a private moto server for tests that stop or reset it
// themselves, skipping like ForTest when the toolchain is missing.
func startServer(t *testing.T, opts Options) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	srv, err := Start(ctx, opts)
	if err != nil {
		if errors.Is(err, ErrSetup) && !inCI() {
			t.Skipf("SKIPPING: moto is not available (set CI=1 to make this a failure): %v", err)
		}
		t.Fatalf("Start() = %v", err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	return srv
}

func TestServerResetAndStop(t *testing.T) {
	var log bytes.Buffer
	srv := startServer(t, Options{Log: &log})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	u, err := url.Parse(srv.Endpoint())
	if err != nil || u.Scheme != "http" || !strings.HasPrefix(u.Host, "127.0.0.1:") {
		t.Fatalf("Endpoint() = %q, want http://127.0.0.1:PORT", srv.Endpoint())
	}
	cfg, err := Config(ctx, srv.Endpoint(), "eu-west-1")
	if err != nil {
		t.Fatalf("Config(%q) = %v", srv.Endpoint(), err)
	}
	ec2c := ec2.NewFromConfig(cfg)
	s3c := s3.NewFromConfig(cfg, S3Options)
	ssmc := ssm.NewFromConfig(cfg)

	const keyName, bucket, param = "kiln-test-key", "kiln-test-bucket", "/kiln/test/param"
	if _, err := ec2c.CreateKeyPair(ctx, &ec2.CreateKeyPairInput{KeyName: aws.String(keyName)}); err != nil {
		t.Fatalf("CreateKeyPair(%q) = %v", keyName, err)
	}
	if _, err := s3c.CreateBucket(ctx, &s3.CreateBucketInput{
		Bucket: aws.String(bucket),
		// Outside us-east-1, S3 (and moto) want the Region spelled out.
		CreateBucketConfiguration: &s3types.CreateBucketConfiguration{LocationConstraint: s3types.BucketLocationConstraintEuWest1},
	}); err != nil {
		t.Fatalf("CreateBucket(%q) = %v", bucket, err)
	}
	if _, err := s3c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String("k"), Body: strings.NewReader("v")}); err != nil {
		t.Fatalf("PutObject(%q) = %v", bucket, err)
	}
	if _, err := ssmc.PutParameter(ctx, &ssm.PutParameterInput{Name: aws.String(param), Value: aws.String("v"), Type: ssmtypes.ParameterTypeString}); err != nil {
		t.Fatalf("PutParameter(%q) = %v", param, err)
	}

	type state struct{ Keys, Buckets, Params []string }
	observe := func() state {
		t.Helper()
		var st state
		kp, err := ec2c.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{})
		if err != nil {
			t.Fatalf("DescribeKeyPairs() = %v", err)
		}
		for _, k := range kp.KeyPairs {
			st.Keys = append(st.Keys, aws.ToString(k.KeyName))
		}
		bs, err := s3c.ListBuckets(ctx, &s3.ListBucketsInput{})
		if err != nil {
			t.Fatalf("ListBuckets() = %v", err)
		}
		for _, b := range bs.Buckets {
			st.Buckets = append(st.Buckets, aws.ToString(b.Name))
		}
		ps, err := ssmc.DescribeParameters(ctx, &ssm.DescribeParametersInput{})
		if err != nil {
			t.Fatalf("DescribeParameters() = %v", err)
		}
		for _, p := range ps.Parameters {
			st.Params = append(st.Params, aws.ToString(p.Name))
		}
		return st
	}

	want := state{Keys: []string{keyName}, Buckets: []string{bucket}, Params: []string{param}}
	if diff := cmp.Diff(want, observe()); diff != "" {
		t.Errorf("before Reset (-want +got):\n%s", diff)
	}
	if err := srv.Reset(ctx); err != nil {
		t.Fatalf("Reset() = %v", err)
	}
	if diff := cmp.Diff(state{}, observe()); diff != "" {
		t.Errorf("after Reset (-want +got):\n%s", diff)
	}

	if err := srv.Stop(); err != nil {
		t.Fatalf("Stop() = %v", err)
	}
	// moto writes the log from another goroutine until Stop returns.
	if !strings.Contains(log.String(), "/moto-api/reset") {
		t.Errorf("Options.Log got no request log; got:\n%s", log.String())
	}
	if err := srv.Stop(); err != nil {
		t.Errorf("second Stop() = %v, want nil", err)
	}
	// The port is free again: nothing accepts on it and we can bind it.
	if c, err := net.DialTimeout("tcp", u.Host, time.Second); err == nil {
		c.Close()
		t.Errorf("Dial(%s) after Stop succeeded, want refused", u.Host)
	}
	l, err := net.Listen("tcp", u.Host)
	if err != nil {
		t.Fatalf("Listen(%s) after Stop = %v, want the port free", u.Host, err)
	}
	l.Close()
}

// TestServerDiesWithProcess runs this test binary again as a process that
// starts moto and exits without Stop, then checks that moto died with it.
func TestServerDiesWithProcess(t *testing.T) {
	if os.Getenv("KILN_MOTO_ORPHAN") == "1" {
		srv, err := Start(context.Background(), Options{})
		if err != nil {
			fmt.Println("ERROR", err)
			os.Exit(1)
		}
		fmt.Println("MOTO", srv.cmd.Process.Pid, srv.Endpoint())
		os.Exit(0) // no Stop
	}
	startServer(t, Options{}) // install, or skip the way ForTest would

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestServerDiesWithProcess$")
	cmd.Env = append(os.Environ(), "KILN_MOTO_ORPHAN=1")
	out, err := cmd.CombinedOutput()
	var pid int
	var endpoint string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "MOTO" {
			pid, _ = strconv.Atoi(f[1])
			endpoint = f[2]
		}
	}
	if err != nil || pid == 0 {
		t.Fatalf("child test process = %v, want it to report a moto server:\n%s", err, out)
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for alive(pid) {
		select {
		case <-ctx.Done():
			t.Fatalf("moto pid %d still alive 1m after its parent exited", pid)
		case <-tick.C:
		}
	}
	// Nothing of moto's process group is left (a port check would race
	// with other test binaries reusing the freed port).
	if left := groupMembers(pid); len(left) > 0 {
		t.Errorf("moto at %s: processes %v of its group still alive after its parent exited", endpoint, left)
	}
}

// groupMembers lists the live processes in process group pgid.
func groupMembers(pgid int) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		// After ") " come state, ppid, pgrp.
		f := strings.Fields(string(stat[i+1:]))
		if len(f) >= 3 && f[0] != "Z" && f[2] == strconv.Itoa(pgid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}

func TestForTestResetsBetweenTests(t *testing.T) {
	t.Setenv(EndpointEnv, "") // this test is about the shared server
	ctx := context.Background()
	for _, name := range []string{"first", "second"} {
		t.Run(name, func(t *testing.T) {
			s3c := s3.NewFromConfig(ForTest(t), S3Options)
			out, err := s3c.ListBuckets(ctx, &s3.ListBucketsInput{})
			if err != nil {
				t.Fatalf("ListBuckets() = %v", err)
			}
			if len(out.Buckets) != 0 {
				t.Errorf("ListBuckets() = %d buckets at test start, want 0 (not reset)", len(out.Buckets))
			}
			if _, err := s3c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("kiln-shared")}); err != nil {
				t.Fatalf("CreateBucket() = %v", err)
			}
		})
	}
}

func TestStartReportsEarlyExit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := Start(ctx, Options{MotoServer: "/bin/false"})
	if err == nil {
		srv.Stop()
		t.Fatalf("Start(MotoServer: /bin/false) = nil error, want one")
	}
	if !strings.Contains(err.Error(), "exited before answering") {
		t.Errorf("Start(MotoServer: /bin/false) = %v, want it to say moto exited", err)
	}
}

func TestConfig(t *testing.T) {
	ctx := context.Background()
	cfg, err := Config(ctx, "http://127.0.0.1:5000", "eu-central-1")
	if err != nil {
		t.Fatalf("Config() = %v", err)
	}
	if got := aws.ToString(cfg.BaseEndpoint); got != "http://127.0.0.1:5000" {
		t.Errorf("Config().BaseEndpoint = %q, want http://127.0.0.1:5000", got)
	}
	if cfg.Region != "eu-central-1" {
		t.Errorf("Config().Region = %q, want eu-central-1", cfg.Region)
	}
	creds, err := cfg.Credentials.Retrieve(ctx)
	if err != nil || creds.AccessKeyID != "testing" {
		t.Errorf("Config().Credentials.Retrieve() = %+v, %v; want static test credentials", creds, err)
	}
	var o s3.Options
	S3Options(&o)
	if !o.UsePathStyle {
		t.Errorf("S3Options did not set UsePathStyle")
	}

	for _, tc := range []struct{ endpoint, region string }{
		{"127.0.0.1:5000", "us-east-1"},
		{"ftp://127.0.0.1:5000", "us-east-1"},
		{"http://", "us-east-1"},
		{"http://127.0.0.1:5000", ""},
	} {
		if _, err := Config(ctx, tc.endpoint, tc.region); err == nil {
			t.Errorf("Config(%q, %q) = nil error, want one", tc.endpoint, tc.region)
		}
	}
}

func TestExternalEndpoint(t *testing.T) {
	t.Setenv(EndpointEnv, "")
	if ep, ok := ExternalEndpoint(); ok {
		t.Errorf("ExternalEndpoint() = %q, true with %s empty; want false", ep, EndpointEnv)
	}
	t.Setenv(EndpointEnv, "http://127.0.0.1:4566")
	if ep, ok := ExternalEndpoint(); !ok || ep != "http://127.0.0.1:4566" {
		t.Errorf("ExternalEndpoint() = %q, %v; want http://127.0.0.1:4566, true", ep, ok)
	}
}

func TestInstallMissingPython(t *testing.T) {
	venv := filepath.Join(t.TempDir(), "venv")
	_, err := Install(context.Background(), InstallOptions{VenvDir: venv, Python: "kiln-no-such-python3"})
	var missing *MissingToolError
	if !errors.As(err, &missing) || missing.Tool != "kiln-no-such-python3" {
		t.Fatalf("Install(Python: missing) = %v, want a MissingToolError naming it", err)
	}
	if !errors.Is(err, ErrSetup) {
		t.Errorf("Install(Python: missing) = %v, want it to match ErrSetup", err)
	}
}

func TestLockFileExcludesAndHonoursContext(t *testing.T) {
	path := filepath.Join(t.TempDir(), "venv.lock")
	unlock, err := lockFile(context.Background(), path)
	if err != nil {
		t.Fatalf("lockFile() = %v", err)
	}
	// flock locks belong to the open file, so a second open in this
	// process contends like another process would.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if u, err := lockFile(ctx, path); err == nil {
		u()
		t.Fatalf("second lockFile() while held = nil error, want a timeout")
	}
	unlock()
	u, err := lockFile(context.Background(), path)
	if err != nil {
		t.Fatalf("lockFile() after unlock = %v", err)
	}
	u()
}

// fakeTB records what ForTest's bookkeeping does to a test.
type fakeTB struct {
	testing.TB
	name     string
	fatal    string
	cleanups []func()
}

func (f *fakeTB) Name() string      { return f.name }
func (f *fakeTB) Helper()           {}
func (f *fakeTB) Cleanup(fn func()) { f.cleanups = append(f.cleanups, fn) }
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (f *fakeTB) end() {
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
}

// tryAcquire runs acquire(tb) as a test body and reports its Fatalf message.
func tryAcquire(tb *fakeTB) string {
	done := make(chan struct{})
	go func() {
		defer close(done)
		acquire(tb)
	}()
	<-done
	return tb.fatal
}

func TestForTestRefusesConcurrentTests(t *testing.T) {
	parent, child := &fakeTB{name: "TestA"}, &fakeTB{name: "TestA/sub"}
	other := &fakeTB{name: "TestB"}
	if msg := tryAcquire(parent); msg != "" {
		t.Fatalf("acquire(TestA) failed: %s", msg)
	}
	if msg := tryAcquire(child); msg != "" {
		t.Errorf("acquire(TestA/sub) inside TestA failed: %s", msg)
	}
	if msg := tryAcquire(other); !strings.Contains(msg, "must not be parallel") {
		t.Errorf("acquire(TestB) during TestA = %q, want a parallel-use failure", msg)
	}
	child.end()
	parent.end()
	other = &fakeTB{name: "TestB"}
	if msg := tryAcquire(other); msg != "" {
		t.Errorf("acquire(TestB) after TestA ended failed: %s", msg)
	}
	other.end()
}

func TestInstalledRecognisesFinishedVenvs(t *testing.T) {
	// fakeVenv lays out the files installed looks at.
	fakeVenv := func(t *testing.T, python string, extra ...string) string {
		t.Helper()
		venv := t.TempDir()
		for _, p := range append([]string{"bin/moto_server"}, extra...) {
			p = filepath.Join(venv, p)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Symlink(python, filepath.Join(venv, "bin", "python")); err != nil {
			t.Fatal(err)
		}
		return venv
	}
	marker := "kiln-moto-" + MotoVersion + ".installed"
	distInfo := "lib/python3.11/site-packages/moto-" + MotoVersion + ".dist-info/METADATA"
	for _, tc := range []struct {
		name   string
		python string
		extra  []string
		want   bool
	}{
		{"Install's marker", "/bin/sh", []string{marker}, true},
		{"pip's dist-info (a venv the Makefile filled)", "/bin/sh", []string{distInfo}, true},
		{"another moto version", "/bin/sh", []string{"lib/python3.11/site-packages/moto-4.0.0.dist-info/METADATA"}, false},
		{"unfinished install", "/bin/sh", nil, false},
		{"interpreter gone", "/kiln/no/such/python3", []string{marker}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			venv := fakeVenv(t, tc.python, tc.extra...)
			if got := installed(venv); got != tc.want {
				t.Errorf("installed(%v) = %v, want %v", tc.extra, got, tc.want)
			}
		})
	}
}
