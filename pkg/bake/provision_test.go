package bake

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/aws/smithy-go"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/ssh"
)

// provS3 is a stateful fake of the S3 reads provisioning makes: objects
// by "bucket/key".
type provS3 struct {
	mu      sync.Mutex
	objects map[string][]byte
	gets    int
}

func (f *provS3) GetObject(_ context.Context, in *s3.GetObjectInput, _ ...func(*s3.Options)) (*s3.GetObjectOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gets++
	b, ok := f.objects[aws.ToString(in.Bucket)+"/"+aws.ToString(in.Key)]
	if !ok {
		return nil, &smithy.GenericAPIError{Code: "NoSuchKey", Message: "The specified key does not exist."}
	}
	return &s3.GetObjectOutput{Body: io.NopCloser(bytes.NewReader(b)), ContentLength: aws.Int64(int64(len(b)))}, nil
}

// provSSM is a stateful fake of Parameter Store holding SecureStrings.
type provSSM struct {
	mu     sync.Mutex
	params map[string]string
	gets   int
}

func (f *provSSM) GetParameter(_ context.Context, in *ssm.GetParameterInput, _ ...func(*ssm.Options)) (*ssm.GetParameterOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gets++
	v, ok := f.params[aws.ToString(in.Name)]
	if !ok {
		return nil, &smithy.GenericAPIError{Code: "ParameterNotFound"}
	}
	if !aws.ToBool(in.WithDecryption) {
		v = "<encrypted>"
	}
	return &ssm.GetParameterOutput{Parameter: &ssmtypes.Parameter{Name: in.Name, Type: ssmtypes.ParameterTypeSecureString, Value: aws.String(v)}}, nil
}

// provClock is wall-clock time plus an offset that waits advance, so that
// a test passes the state machine's waits without waiting.
type provClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *provClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *provClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

// logSink is a slog handler that keeps every message with its attributes.
type logSink struct {
	mu    sync.Mutex
	lines []string
}

func (l *logSink) Enabled(context.Context, slog.Level) bool { return true }
func (l *logSink) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logSink) WithGroup(string) slog.Handler            { return l }
func (l *logSink) Handle(_ context.Context, r slog.Record) error {
	line := r.Message
	r.Attrs(func(a slog.Attr) bool {
		line += " " + a.Key + "=" + a.Value.String()
		return true
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, line)
	return nil
}

func (l *logSink) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// count returns how many logged lines equal line.
func (l *logSink) count(line string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, x := range l.lines {
		if x == line {
			n++
		}
	}
	return n
}

// provFixture is a build instance (a testSSHD), the fakes around it, and
// a state as launch leaves it.
type provFixture struct {
	t      *testing.T
	srv    *testSSHD
	p      *Provision
	st     State
	plan   *Plan
	logs   *logSink
	clock  *provClock
	ssm    *provSSM
	s3     *provS3
	remote string // the instance's remote_folder and TempDir
}

var provPlanSeq atomic.Int64

const (
	testInstance = "i-0123456789abcdef0"
	testKeyParam = "/kiln/builds/test/ssh-key"
	testBuildID  = "test-0123456789ab"
)

// newProvFixture makes a fixture whose build runs provs, with the recipe
// files files; edit adjusts the plan before it is stored.
func newProvFixture(t *testing.T, provs []Provisioner, files fstest.MapFS, edit ...func(*Plan)) *provFixture {
	t.Helper()
	login, loginPEM := newTestKey(t)
	host, _ := newTestKey(t)
	srv := startTestSSHD(t, host, login.PublicKey())
	remote := t.TempDir()
	for i := range provs {
		if provs[i].Pos == "" {
			provs[i].Pos = fmt.Sprintf("test.pkr.hcl:%d", 10*(i+1))
		}
		if provs[i].Shell != nil && provs[i].Shell.RemoteFolder == "" {
			provs[i].Shell.RemoteFolder = remote
		}
	}
	plan := &Plan{Name: "test", Format: "hcl2", Builds: []Build{{
		Name: "app", Type: "amazon-ebs",
		Source:       AmazonEBS{Region: "us-east-1", SSHUsername: "kiln", Communicator: "ssh", SSHInterface: "private_ip"},
		Provisioners: provs,
	}}}
	for _, e := range edit {
		e(plan)
	}
	if ec := plan.Builds[0].ErrorCleanup; ec != nil && ec.Shell != nil && ec.Shell.RemoteFolder == "" {
		ec.Shell.RemoteFolder = remote
	}
	b, err := json.Marshal(plan)
	if err != nil {
		t.Fatal(err)
	}
	key := fmt.Sprintf("builds/%s-%d/plan.json", t.Name(), provPlanSeq.Add(1))
	fs3 := &provS3{objects: map[string][]byte{"kiln-test/" + key: b}}
	fssm := &provSSM{params: map[string]string{testKeyParam: loginPEM}}
	clock := &provClock{}
	f := &provFixture{t: t, srv: srv, plan: plan, logs: &logSink{}, clock: clock, ssm: fssm, s3: fs3, remote: remote}
	f.st = State{
		BuildID: testBuildID,
		Plan:    &PlanRef{Bucket: "kiln-test", Key: key, Recipe: "test", Build: "app", Region: "us-east-1", Transport: "ssh"},
		Launch: &Launched{
			Region: "us-east-1", SourceAMI: "ami-0base", InstanceID: testInstance,
			HostKey:      strings.TrimSpace(string(ssh.MarshalAuthorizedKey(host.PublicKey()))),
			KeyParameter: testKeyParam, PrivateIP: "10.0.1.23", LaunchedAt: clock.Now().Add(-time.Minute),
		},
	}
	f.p = &Provision{
		SSM: fssm, S3: fs3, Files: FSRecipe{FS: files},
		Resolve: func(context.Context, State) (string, error) { return srv.addr, nil },
		Now:     clock.Now, Poll: 20 * time.Millisecond, TempDir: remote,
	}
	return f
}

// ctx returns a context carrying the fixture's logger.
func (f *provFixture) ctx() context.Context {
	return WithLogger(context.Background(), slog.New(f.logs))
}

// bake calls Run the way the state machine does, with each answer's state
// as the next input and the clock moved past each wait, until provisioning
// is done or fails.
func (f *provFixture) bake(max int) (State, error) {
	f.t.Helper()
	for range max {
		st, err := f.p.Run(f.ctx(), f.st)
		if err != nil {
			return st, err
		}
		f.st = st
		if st.Provision.Done {
			if st.Wait == nil || !st.Wait.Ready {
				f.t.Fatalf("Run() = done with Wait %+v, want ready", st.Wait)
			}
			return st, nil
		}
		if st.Wait == nil || st.Wait.Ready || st.Wait.Seconds < 1 {
			f.t.Fatalf("Run() = not done with Wait %+v, want not ready", st.Wait)
		}
		f.clock.advance(time.Duration(st.Wait.Seconds) * time.Second)
	}
	f.t.Fatalf("provisioning not done after %d invocations; logs:\n%s", max, f.logs.text())
	return f.st, nil
}

// mustBake bakes and fails the test on an error.
func (f *provFixture) mustBake(max int) State {
	f.t.Helper()
	st, err := f.bake(max)
	if err != nil {
		f.t.Fatalf("Run() = %v; logs:\n%s", err, f.logs.text())
	}
	return st
}

func shellInline(name string, lines ...string) Provisioner {
	return Provisioner{Type: "shell", Name: name, Shell: &Shell{Inline: lines}}
}

func TestProvisionRunsShellProvisioners(t *testing.T) {
	scripts := fstest.MapFS{
		"scripts/one.sh": {Data: []byte("#!/bin/sh\necho \"script one as $PACKER_BUILD_NAME\"\necho one >> \"$HOME/ran\"\n")},
		"scripts/two.sh": {Data: []byte("#!/bin/sh\necho script two\necho two >> \"$HOME/ran\"\n")},
	}
	f := newProvFixture(t, []Provisioner{
		shellInline("hello", "echo hello", "echo inline >> \"$HOME/ran\""),
		{Type: "shell", Shell: &Shell{Scripts: []string{"scripts/one.sh", "scripts/two.sh"}}},
	}, scripts)
	st := f.mustBake(5)

	want := Provisioned{Next: 2, Done: true}
	if diff := cmp.Diff(want, *st.Provision); diff != "" {
		t.Errorf("Run() provision state (-want +got):\n%s", diff)
	}
	ran, err := os.ReadFile(filepath.Join(f.srv.home, "ran"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(ran), "inline\none\ntwo\n"; got != want {
		t.Errorf("commands ran %q, want %q", got, want)
	}
	for _, line := range []string{
		`shell "hello" (test.pkr.hcl:10): hello`,
		`shell (test.pkr.hcl:20): script one as app`,
		`shell (test.pkr.hcl:20): script two`,
	} {
		if n := f.logs.count(line); n != 1 {
			t.Errorf("log line %q appears %d times, want 1; logs:\n%s", line, n, f.logs.text())
		}
	}
	// Scripts are removed after they ran (skip_clean is false), and so
	// are the commands' output files; their exit markers stay.
	matches, _ := filepath.Glob(filepath.Join(f.remote, "script_*"))
	if len(matches) != 0 {
		t.Errorf("scripts left on the instance: %v", matches)
	}
	outs, _ := filepath.Glob(filepath.Join(f.remote, ".kiln", testBuildID, "*", "out"))
	exits, _ := filepath.Glob(filepath.Join(f.remote, ".kiln", testBuildID, "*", "exit"))
	if len(outs) != 0 || len(exits) != 3 {
		t.Errorf("job folders hold outputs %v and exit markers %v, want none and 3", outs, exits)
	}
}

func TestProvisionInlineShebangAndSkipClean(t *testing.T) {
	f := newProvFixture(t, []Provisioner{{
		Type: "shell",
		Shell: &Shell{
			Inline:        []string{`echo "shell is $0"`, "false", "echo not reached"},
			InlineShebang: "/bin/sh -e",
			SkipClean:     true,
			// A custom execute_command that runs the script through its
			// shebang shows that the shebang is written.
			ExecuteCommand: "chmod +x {{.Path}}; {{ .Vars }} {{.Path}}",
		},
	}}, nil)
	_, err := f.bake(3)
	perr, ok := errors.AsType[*ProvisionerError](err)
	if !ok || perr.ExitStatus != 1 {
		t.Fatalf("Run() = %v, want a *ProvisionerError with exit status 1 (set -e stopped at false)", err)
	}
	if strings.Contains(f.logs.text(), "not reached") {
		t.Errorf("the script went on past false: -e of inline_shebang was not applied")
	}
	scripts, _ := filepath.Glob(filepath.Join(f.remote, "script_*.sh"))
	if len(scripts) != 1 {
		t.Fatalf("scripts on the instance = %v, want the one kept by skip_clean", scripts)
	}
	b, _ := os.ReadFile(scripts[0])
	if want := "#!/bin/sh -e\necho \"shell is $0\"\nfalse\necho not reached\n"; string(b) != want {
		t.Errorf("inline script = %q, want %q", b, want)
	}
}

func TestProvisionExitCodes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		exit   int
		valid  []int
		wantOK bool
	}{
		{"zero", 0, nil, true},
		{"three", 3, nil, false},
		{"three allowed", 3, []int{0, 3}, true},
		{"zero not allowed", 0, []int{2}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newProvFixture(t, []Provisioner{{
				Type: "shell", Name: "exits",
				Shell: &Shell{Inline: []string{"echo line one", "echo line two >&2", "exit " + strconv.Itoa(tc.exit)}, ValidExitCodes: tc.valid},
			}}, nil)
			_, err := f.bake(3)
			if tc.wantOK {
				if err != nil {
					t.Fatalf("Run() = %v, want success", err)
				}
				return
			}
			perr, ok := errors.AsType[*ProvisionerError](err)
			if !ok {
				t.Fatalf("Run() = %v, want a *ProvisionerError", err)
			}
			want := &ProvisionerError{Provisioner: `shell "exits" (test.pkr.hcl:10)`, ExitStatus: tc.exit, Tail: []string{"line one", "line two"}}
			if diff := cmp.Diff(want, perr); diff != "" {
				t.Errorf("Run() error (-want +got):\n%s", diff)
			}
			if name := ErrorName(ForLambda("provision", err)); name != "ProvisionFailed" {
				t.Errorf("ForLambda(Run() error) is %s, want ProvisionFailed", name)
			}
		})
	}
}

func TestProvisionEnvironmentQuoting(t *testing.T) {
	script := fstest.MapFS{"show.sh": {Data: []byte(`#!/bin/sh
for v in SIMPLE QUOTE DOLLAR SPACES EMPTY EQ FROM_MAP PACKER_BUILD_NAME PACKER_BUILDER_TYPE; do
	eval "printf '%s=[%s]\n' $v \"\$$v\""
done
`)}}
	f := newProvFixture(t, []Provisioner{{
		Type: "shell",
		Shell: &Shell{
			Scripts: []string{"show.sh"},
			EnvironmentVars: []string{"SIMPLE=x", "QUOTE=it's", `DOLLAR=$HOME and "double" $(id) ` + "`x`",
				"SPACES=a  b", "EMPTY=", "EQ=a=b"},
			Env: map[string]string{"FROM_MAP": "m;n"},
		},
	}}, script)
	f.mustBake(3)
	for _, want := range []string{
		"SIMPLE=[x]", "QUOTE=[it's]", "DOLLAR=[$HOME and \"double\" $(id) `x`]", "SPACES=[a  b]",
		"EMPTY=[]", "EQ=[a=b]", "FROM_MAP=[m;n]", "PACKER_BUILD_NAME=[app]", "PACKER_BUILDER_TYPE=[amazon-ebs]",
	} {
		if n := f.logs.count("shell (test.pkr.hcl:10): " + want); n != 1 {
			t.Errorf("log line %q appears %d times, want 1; logs:\n%s", want, n, f.logs.text())
		}
	}
}

func TestShellVarsAndExecuteCommand(t *testing.T) {
	b := &Build{Name: "app", Type: "amazon-ebs"}
	vars := shellVars(b, &Shell{EnvironmentVars: []string{"B=it's", "A=1"}, Env: map[string]string{"C": "x y"}})
	want := `A='1' B='it'"'"'s' C='x y' PACKER_BUILDER_TYPE='amazon-ebs' PACKER_BUILD_NAME='app' `
	if vars != want {
		t.Errorf("shellVars() = %q, want %q", vars, want)
	}
	for _, tc := range []struct{ tmpl, want string }{
		{"", "chmod +x /tmp/s.sh; V='1'  /tmp/s.sh"},
		{"echo 'packer' | sudo -S env {{ .Vars }} {{ .Path }}", "echo 'packer' | sudo -S env V='1'  /tmp/s.sh"},
		{"{{.Vars}}bash '{{.Path}}' {{.Other}}", "V='1' bash '/tmp/s.sh' {{.Other}}"},
	} {
		if got := executeCommand(tc.tmpl, "V='1' ", "/tmp/s.sh"); got != tc.want {
			t.Errorf("executeCommand(%q) = %q, want %q", tc.tmpl, got, tc.want)
		}
	}
}

func TestProvisionExecuteCommand(t *testing.T) {
	f := newProvFixture(t, []Provisioner{{
		Type: "shell",
		Shell: &Shell{
			Inline:          []string{`echo "args: $*"`, `echo "greeting: $GREETING"`},
			EnvironmentVars: []string{"GREETING=hi there"},
			ExecuteCommand:  "env {{.Vars}} sh {{.Path}} first 'second arg'",
		},
	}}, nil)
	f.mustBake(3)
	for _, want := range []string{"args: first second arg", "greeting: hi there"} {
		if n := f.logs.count("shell (test.pkr.hcl:10): " + want); n != 1 {
			t.Errorf("log line %q appears %d times, want 1; logs:\n%s", want, n, f.logs.text())
		}
	}
}

func TestProvisionMaxRetries(t *testing.T) {
	// The command fails on its first run and succeeds on its second.
	flaky := `n=$(cat "$HOME/count" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$HOME/count"; echo "try $n"; [ $n -ge 2 ]`
	t.Run("retried", func(t *testing.T) {
		f := newProvFixture(t, []Provisioner{{Type: "shell", MaxRetries: 2, Shell: &Shell{Inline: []string{flaky}}}}, nil)
		st, err := f.p.Run(f.ctx(), f.st)
		if err != nil {
			t.Fatalf("Run() = %v, want a retry", err)
		}
		if st.Provision.Attempt != 1 || st.Provision.Next != 0 || st.Wait == nil || st.Wait.Ready {
			t.Fatalf("Run() = provision %+v, wait %+v; want attempt 1 of provisioner 0 and a wait", st.Provision, st.Wait)
		}
		f.st = st
		st = f.mustBake(3)
		if st.Provision.Next != 1 || st.Provision.Attempt != 0 {
			t.Errorf("Run() provision = %+v, want next 1, attempt 0", st.Provision)
		}
		if got := strings.TrimSpace(readFile(t, filepath.Join(f.srv.home, "count"))); got != "2" {
			t.Errorf("the command ran %s times, want 2", got)
		}
	})
	t.Run("exhausted", func(t *testing.T) {
		f := newProvFixture(t, []Provisioner{{Type: "shell", MaxRetries: 0, Shell: &Shell{Inline: []string{flaky}}}}, nil)
		_, err := f.bake(3)
		if perr, ok := errors.AsType[*ProvisionerError](err); !ok || perr.ExitStatus != 1 || !slicesContains(perr.Tail, "try 1") {
			t.Fatalf("Run() = %v, want a *ProvisionerError with exit status 1 and tail [try 1]", err)
		}
	})
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func TestProvisionTimeoutKillsCommand(t *testing.T) {
	f := newProvFixture(t, []Provisioner{{
		Type: "shell", Name: "slow", Timeout: Duration(time.Second),
		Shell: &Shell{Inline: []string{`echo $$ > "$HOME/pid"`, "echo started", "sleep 30", "echo finished"}},
	}}, nil)
	start := time.Now()
	_, err := f.bake(3)
	perr, ok := errors.AsType[*ProvisionerError](err)
	if !ok || perr.ExitStatus != -1 || perr.Err == nil || !strings.Contains(perr.Err.Error(), "timed out after 1s") {
		t.Fatalf("Run() = %v, want a *ProvisionerError that timed out after 1s", err)
	}
	if !slicesContains(perr.Tail, "started") {
		t.Errorf("error tail = %q, want it to hold %q", perr.Tail, "started")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Run() took %s to time out a 1s timeout", d)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(readFile(t, filepath.Join(f.srv.home, "pid"))))
	if err != nil {
		t.Fatal(err)
	}
	// The kill is sent before Run returns; under load the process may
	// take a moment to go.
	for deadline := time.Now().Add(5 * time.Second); processRuns(pid) && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	if processRuns(pid) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		t.Errorf("the timed-out command (pid %d) still runs 5 s after it timed out", pid)
	}
}

// processRuns reports whether process pid runs (a zombie does not).
func processRuns(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndex(s, ") ")
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestProvisionPauseBefore(t *testing.T) {
	f := newProvFixture(t, []Provisioner{
		shellInline("first", "echo first"),
		{Type: "shell", Name: "second", PauseBefore: Duration(90 * time.Second), Shell: &Shell{Inline: []string{"echo second"}}},
	}, nil)
	// The first invocation runs the first provisioner, then answers with
	// the pause as a wait rather than sleeping.
	st, err := f.p.Run(f.ctx(), f.st)
	if err != nil {
		t.Fatalf("Run() = %v", err)
	}
	if st.Provision.Next != 1 || st.Wait == nil || st.Wait.Ready || st.Wait.Seconds != 90 {
		t.Fatalf("Run() = provision %+v, wait %+v; want next 1 and a 90s wait", st.Provision, st.Wait)
	}
	_, execsBefore, _ := f.srv.counts()
	// Called again before the pause is over, it waits out the rest
	// without connecting.
	f.clock.advance(30 * time.Second)
	loginsBefore, _, _ := f.srv.counts()
	st2, err := f.p.Run(f.ctx(), st)
	if err != nil {
		t.Fatalf("Run() = %v", err)
	}
	if st2.Wait == nil || st2.Wait.Ready || st2.Wait.Seconds != 60 {
		t.Errorf("Run() during the pause = wait %+v, want 60s more", st2.Wait)
	}
	if logins, execs, _ := f.srv.counts(); logins != loginsBefore || len(execs) != len(execsBefore) {
		t.Errorf("Run() during the pause logged in or ran commands")
	}
	f.clock.advance(60 * time.Second)
	f.st = st2
	st3 := f.mustBake(2)
	if !st3.Provision.Done || f.logs.count(`shell "second" (test.pkr.hcl:20): second`) != 1 {
		t.Errorf("the second provisioner did not run after its pause; logs:\n%s", f.logs.text())
	}
}

func TestProvisionResumesAcrossInvocations(t *testing.T) {
	f := newProvFixture(t, []Provisioner{
		shellInline("long", `echo run >> "$HOME/runs"`, "echo one", "printf 'partial '", "sleep 1.5", "echo line", "echo two"),
		shellInline("after", "echo after"),
	}, nil)
	f.p.Reserve = 100 * time.Millisecond
	// Invocations with 600ms to live each stop watching before their
	// deadline and hand the running command over to the next.
	var handovers []Command
	for i := 0; f.st.Provision == nil || !f.st.Provision.Done; i++ {
		if i == 20 {
			t.Fatalf("not done after %d invocations; logs:\n%s", i, f.logs.text())
		}
		ctx, cancel := context.WithTimeout(f.ctx(), 600*time.Millisecond)
		st, err := f.p.Run(ctx, f.st)
		cancel()
		if err != nil {
			t.Fatalf("Run() = %v", err)
		}
		if r := st.Provision.Running; r != nil {
			if st.Wait == nil || st.Wait.Ready {
				t.Fatalf("Run() with a command running = wait %+v, want not ready", st.Wait)
			}
			handovers = append(handovers, *r)
		}
		f.st = st
	}
	if len(handovers) == 0 {
		t.Fatalf("no invocation handed a running command over")
	}
	// The offset is always at a line's end: "partial " waits for the rest
	// of its line. Which of them a handover lands on depends on the load.
	lineEnds := map[int64]bool{0: true}
	var n int64
	for _, l := range []string{"one\n", "partial line\n", "two\n"} {
		n += int64(len(l))
		lineEnds[n] = true
	}
	for _, r := range handovers {
		if r.ID != "p0-a0-s0" || r.Provisioner != 0 || !lineEnds[r.Offset] {
			t.Errorf("handed over %+v, want p0-a0-s0 at a line's end (0, 4, 17 or 21)", r)
		}
	}
	for _, line := range []string{"one", "partial line", "two", "after"} {
		prefix := `shell "long" (test.pkr.hcl:10): `
		if line == "after" {
			prefix = `shell "after" (test.pkr.hcl:20): `
		}
		if n := f.logs.count(prefix + line); n != 1 {
			t.Errorf("log line %q appears %d times, want 1; logs:\n%s", line, n, f.logs.text())
		}
	}
	if got := readFile(t, filepath.Join(f.srv.home, "runs")); got != "run\n" {
		t.Errorf("the command ran %d times, want once", strings.Count(got, "run"))
	}
}

func TestProvisionReattachesAfterLostInvocation(t *testing.T) {
	// An invocation dies (its output is lost) after starting a command;
	// the state machine retries it with the same input. The retry must
	// find the command and wait for it, not start it again; and a rerun
	// after everything finished must not run anything again.
	f := newProvFixture(t, []Provisioner{
		shellInline("long", `echo run >> "$HOME/runs"`, "sleep 1", "echo done"),
	}, nil)
	f.p.Reserve = 100 * time.Millisecond
	input := f.st
	started := filepath.Join(f.remote, ".kiln", testBuildID, "p0-a0-s0", "started")
	for i := 0; ; i++ {
		if _, err := os.Stat(started); err == nil {
			break
		}
		if i == 10 {
			t.Fatalf("the command did not start in %d short invocations", i)
		}
		ctx, cancel := context.WithTimeout(f.ctx(), 400*time.Millisecond)
		if _, err := f.p.Run(ctx, input); err != nil {
			t.Fatalf("Run() = %v", err)
		}
		cancel()
	}
	f.st = input
	f.mustBake(3)
	if !strings.Contains(f.logs.text(), "reattached to inline commands") {
		t.Errorf("the retried invocation did not reattach; logs:\n%s", f.logs.text())
	}
	f.st = input
	_, execsBefore, _ := f.srv.counts()
	st := f.mustBake(3)
	if !st.Provision.Done {
		t.Errorf("rerun is not done")
	}
	if got := readFile(t, filepath.Join(f.srv.home, "runs")); got != "run\n" {
		t.Errorf("the command ran %d times, want once", strings.Count(got, "run"))
	}
	_, execs, _ := f.srv.counts()
	for _, e := range execs[len(execsBefore):] {
		if strings.Contains(e, "setsid") {
			t.Errorf("the rerun started a command: %q", e)
		}
	}
}

// rebootOn simulates a reboot when the instance's file flag appears: it
// kills the commands of the build's first provisioner and drops every SSH
// connection.
func (f *provFixture) rebootOn(flag string) { f.dropOn(flag, true) }

// dropOn drops every SSH connection when the instance's file flag
// appears, and with kill also kills the commands of the build's first
// provisioner.
func (f *provFixture) dropOn(flag string, kill bool) {
	done := make(chan struct{})
	f.t.Cleanup(func() { close(done) })
	go func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(10 * time.Millisecond):
			}
			if _, err := os.Stat(flag); err != nil {
				continue
			}
			os.Remove(flag)
			b, err := os.ReadFile(filepath.Join(f.remote, ".kiln", testBuildID, "p0-a0-s0", "pid"))
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); kill && err == nil && perr == nil {
				_ = syscall.Kill(-pid, syscall.SIGKILL)
			}
			f.srv.dropAll()
		}
	}()
}

func TestProvisionExpectDisconnect(t *testing.T) {
	for _, expect := range []bool{true, false} {
		t.Run(fmt.Sprintf("expect_disconnect=%v", expect), func(t *testing.T) {
			f := newProvFixture(t, []Provisioner{
				{Type: "shell", Name: "reboot", Shell: &Shell{
					// The pause lets the command's start finish first, so
					// that the reboot cuts the connection while Run watches.
					Inline:           []string{"echo going down", "sleep 0.3", `touch "$HOME/reboot"`, "sleep 30"},
					ExpectDisconnect: expect,
				}},
				shellInline("after", "echo back up"),
			}, nil)
			f.rebootOn(filepath.Join(f.srv.home, "reboot"))
			st, err := f.p.Run(f.ctx(), f.st)
			if err != nil {
				t.Fatalf("Run() = %v", err)
			}
			if st.Wait == nil || st.Wait.Ready {
				t.Fatalf("Run() across a disconnect = wait %+v, want a wait to reconnect", st.Wait)
			}
			f.st = st
			if expect {
				if st.Provision.Next != 1 || st.Provision.Running != nil {
					t.Fatalf("Run() = provision %+v, want the reboot provisioner done", st.Provision)
				}
				f.mustBake(3)
				if f.logs.count(`shell "after" (test.pkr.hcl:20): back up`) != 1 {
					t.Errorf("the provisioner after the reboot did not run; logs:\n%s", f.logs.text())
				}
				return
			}
			if st.Provision.Next != 0 || st.Provision.Running == nil {
				t.Fatalf("Run() = provision %+v, want provisioner 0 still running", st.Provision)
			}
			_, err = f.bake(3)
			perr, ok := errors.AsType[*ProvisionerError](err)
			if !ok || perr.ExitStatus != -1 || !strings.Contains(err.Error(), "ended without an exit status") || !slicesContains(perr.Tail, "going down") {
				t.Fatalf("Run() after an unexpected reboot = %v, want a *ProvisionerError saying it ended without an exit status", err)
			}
		})
	}
}

func TestProvisionSurvivesLostConnection(t *testing.T) {
	// The network drops while a command runs; the command goes on, and the
	// next invocation reconnects, reattaches and collects its output and
	// exit status.
	f := newProvFixture(t, []Provisioner{
		shellInline("steady", `echo run >> "$HOME/runs"`, "echo before", "sleep 0.3", `touch "$HOME/drop"`, "sleep 0.5", "echo after"),
	}, nil)
	f.dropOn(filepath.Join(f.srv.home, "drop"), false)
	st, err := f.p.Run(f.ctx(), f.st)
	if err != nil {
		t.Fatalf("Run() = %v", err)
	}
	if st.Provision.Running == nil || st.Provision.Running.ID != "p0-a0-s0" || st.Provision.SSHSince.IsZero() || st.Wait == nil || st.Wait.Ready {
		t.Fatalf("Run() after losing the connection = provision %+v, wait %+v; want the command running and a wait for SSH", st.Provision, st.Wait)
	}
	f.st = st
	f.mustBake(3)
	for _, line := range []string{"before", "after"} {
		if n := f.logs.count(`shell "steady" (test.pkr.hcl:10): ` + line); n != 1 {
			t.Errorf("log line %q appears %d times, want 1; logs:\n%s", line, n, f.logs.text())
		}
	}
	if got := readFile(t, filepath.Join(f.srv.home, "runs")); got != "run\n" {
		t.Errorf("the command ran %d times, want once", strings.Count(got, "run"))
	}
}

func TestProvisionRedactsSensitiveValues(t *testing.T) {
	f := newProvFixture(t, []Provisioner{{
		Type: "shell", Name: "secret",
		Shell: &Shell{Inline: []string{`echo "password is $PASSWORD"`, "exit 4"}, EnvironmentVars: []string{"PASSWORD=hunter2"}},
	}}, nil, func(p *Plan) { p.Sensitive = []string{"hunter2"} })
	st, err := f.bake(3)
	perr, ok := errors.AsType[*ProvisionerError](err)
	if !ok || perr.ExitStatus != 4 {
		t.Fatalf("Run() = %v, want a *ProvisionerError with exit status 4", err)
	}
	if f.logs.count(`shell "secret" (test.pkr.hcl:10): password is <sensitive>`) != 1 {
		t.Errorf("the output line was not logged redacted; logs:\n%s", f.logs.text())
	}
	stateJSON, _ := json.Marshal(st)
	loginKey := f.ssm.params[testKeyParam]
	for what, text := range map[string]string{"logs": f.logs.text(), "error": err.Error(), "state": string(stateJSON)} {
		if strings.Contains(text, "hunter2") {
			t.Errorf("%s hold the sensitive value:\n%s", what, text)
		}
		if strings.Contains(text, "PRIVATE KEY") || strings.Contains(text, strings.Split(loginKey, "\n")[1]) {
			t.Errorf("%s hold the login key", what)
		}
	}
}

func TestProvisionHostKeyMismatch(t *testing.T) {
	f := newProvFixture(t, []Provisioner{shellInline("never", `touch "$HOME/ran"`)}, nil)
	other, _ := newTestKey(t)
	f.st.Launch.HostKey = string(ssh.MarshalAuthorizedKey(other.PublicKey()))
	_, err := f.p.Run(f.ctx(), f.st)
	hk, ok := errors.AsType[*HostKeyError](err)
	if !ok {
		t.Fatalf("Run() = %v, want a *HostKeyError", err)
	}
	if hk.Want != ssh.FingerprintSHA256(other.PublicKey()) || hk.Got != ssh.FingerprintSHA256(f.srv.hostKey.PublicKey()) || hk.Addr != f.srv.addr {
		t.Errorf("Run() error = %+v, want the pinned and presented fingerprints", hk)
	}
	if logins, execs, sftps := f.srv.counts(); logins != 0 || len(execs) != 0 || sftps != 0 {
		t.Errorf("after a host key mismatch the server saw %d logins, execs %q, %d SFTP sessions; want none", logins, execs, sftps)
	}
	if ents, _ := os.ReadDir(f.remote); len(ents) != 0 {
		t.Errorf("the instance's remote folder holds %d entries, want none", len(ents))
	}
	if name := ErrorName(ForLambda("provision", err)); name != "HostKeyMismatch" {
		t.Errorf("ForLambda(Run() error) is %s, want HostKeyMismatch", name)
	}
}

func TestProvisionHostKeyOfAnotherType(t *testing.T) {
	// The server has only an ed25519 key; the state pins an ECDSA key: the
	// key negotiation fails, which is a mismatch too, not a wait.
	f := newProvFixture(t, []Provisioner{shellInline("never", "true")}, nil)
	f.st.Launch.HostKey = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEmKSENjQEezOmxkZMy7opKgwFB9nkt5YRrYMjNuG5N87uRgg6CLrbo5wAdT/y6v0mKV0U2w0WZ2YB/++Tpockg="
	_, err := f.p.Run(f.ctx(), f.st)
	hk, ok := errors.AsType[*HostKeyError](err)
	if !ok || !strings.Contains(hk.Got, "no ecdsa-sha2-nistp256 host key") {
		t.Fatalf("Run() = %v, want a *HostKeyError saying the server has no such key", err)
	}
	if _, execs, _ := f.srv.counts(); len(execs) != 0 {
		t.Errorf("commands ran: %q", execs)
	}
}

func TestProvisionWaitsForSSH(t *testing.T) {
	for _, tc := range []struct {
		name string
		addr func(t *testing.T, f *provFixture) string
	}{
		{"connection refused", func(t *testing.T, _ *provFixture) string { return closedAddr(t) }},
		{"closed before banner", func(t *testing.T, _ *provFixture) string { return hangUpAddr(t) }},
		{"login refused", func(_ *testing.T, f *provFixture) string {
			f.srv.mu.Lock()
			f.srv.refused = true
			f.srv.mu.Unlock()
			return f.srv.addr
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newProvFixture(t, []Provisioner{shellInline("x", "true")}, nil)
			addr := tc.addr(t, f)
			f.p.Resolve = func(context.Context, State) (string, error) { return addr, nil }
			st, err := f.p.Run(f.ctx(), f.st)
			if err != nil {
				t.Fatalf("Run() = %v, want a wait", err)
			}
			wantFor := "ssh to " + testInstance + " at " + addr
			if st.Wait == nil || st.Wait.Ready || st.Wait.For != wantFor || st.Wait.Polls != 1 || st.Wait.Seconds < 1 {
				t.Errorf("Run() wait = %+v, want not ready for %q, poll 1", st.Wait, wantFor)
			}
			if st.Provision == nil || st.Provision.SSHSince.IsZero() || st.Provision.Done {
				t.Errorf("Run() provision = %+v, want SSHSince set", st.Provision)
			}
			// The wait continues: polls count up and SSHSince stays.
			f.clock.advance(time.Minute)
			st2, err := f.p.Run(f.ctx(), st)
			if err != nil || st2.Wait.Polls != 2 || !st2.Provision.SSHSince.Equal(st.Provision.SSHSince) {
				t.Errorf("second Run() = wait %+v, provision %+v, err %v; want poll 2 with the same SSHSince", st2.Wait, st2.Provision, err)
			}
		})
	}
}

func TestProvisionSSHTimeout(t *testing.T) {
	f := newProvFixture(t, []Provisioner{shellInline("x", "true")}, nil)
	addr := closedAddr(t)
	f.p.Resolve = func(context.Context, State) (string, error) { return addr, nil }
	f.st.Provision = &Provisioned{SSHSince: f.clock.Now().Add(-5*time.Minute - time.Second)}
	_, err := f.p.Run(f.ctx(), f.st)
	wt, ok := errors.AsType[*WaitTimeoutError](err)
	if !ok || wt.After != DefaultSSHTimeout {
		t.Fatalf("Run() = %v, want a *WaitTimeoutError after 5m", err)
	}
	if want := "ssh to " + testInstance + " at " + addr + ": not ready after 5m0s"; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("Run() error = %q, want it to start with %q", err, want)
	}
	if name := ErrorName(ForLambda("provision", err)); name != "WaitTimedOut" {
		t.Errorf("ForLambda(Run() error) is %s, want WaitTimedOut", name)
	}
	// The recipe's ssh_timeout is the bound.
	f2 := newProvFixture(t, []Provisioner{shellInline("x", "true")}, nil, func(p *Plan) { p.Builds[0].Source.SSHTimeout = Duration(20 * time.Minute) })
	f2.p.Resolve = f.p.Resolve
	f2.st.Provision = &Provisioned{SSHSince: f2.clock.Now().Add(-10 * time.Minute)}
	if st, err := f2.p.Run(f2.ctx(), f2.st); err != nil || st.Wait == nil || st.Wait.Ready {
		t.Errorf("Run() 10m into a 20m ssh_timeout = %v, %+v; want a wait", err, st.Wait)
	}
}

func TestProvisionDefaultAddress(t *testing.T) {
	// Without Resolve, provisioning dials the instance's private IP (or
	// its public IP for ssh_interface = "public_ip") on port 22. The dialer
	// here records the address instead of dialing it.
	for _, tc := range []struct{ iface, want string }{
		{"private_ip", "10.0.1.23:22"},
		{"", "10.0.1.23:22"},
		{"public_ip", "203.0.113.7:22"},
	} {
		t.Run(cmpOrName(tc.iface), func(t *testing.T) {
			f := newProvFixture(t, []Provisioner{shellInline("x", "true")}, nil, func(p *Plan) { p.Builds[0].Source.SSHInterface = tc.iface })
			f.st.Launch.PublicIP = "203.0.113.7"
			f.p.Resolve = nil
			var dialed string
			f.p.Dial = func(_ context.Context, addr string, cfg *ssh.ClientConfig) (*ssh.Client, error) {
				dialed = addr
				if cfg.User != "kiln" || cfg.HostKeyCallback == nil || len(cfg.HostKeyAlgorithms) != 1 || cfg.HostKeyAlgorithms[0] != ssh.KeyAlgoED25519 {
					t.Errorf("Dial() config = user %q, host key algorithms %q; want kiln and the pinned key's", cfg.User, cfg.HostKeyAlgorithms)
				}
				return nil, errors.New("connect: connection refused")
			}
			st, err := f.p.Run(f.ctx(), f.st)
			if err != nil || dialed != tc.want || st.Wait == nil || st.Wait.Ready {
				t.Errorf("Run() dialed %q (err %v, wait %+v), want %q and a wait", dialed, err, st.Wait, tc.want)
			}
		})
	}
	if _, err := instanceSSHAddr(&Launched{InstanceID: "i-1"}, "public_ip"); err == nil {
		t.Errorf("instanceSSHAddr() without a public IP = nil error, want one")
	}
}

func cmpOrName(s string) string {
	if s == "" {
		return "default"
	}
	return s
}

func TestProvisionCommunicatorNone(t *testing.T) {
	f := newProvFixture(t, []Provisioner{shellInline("x", "true")}, nil, func(p *Plan) { p.Builds[0].Source.Communicator = "none" })
	f.p.Dial = func(context.Context, string, *ssh.ClientConfig) (*ssh.Client, error) {
		t.Error("Dial() called for communicator none")
		return nil, errors.New("no")
	}
	st, err := f.p.Run(f.ctx(), f.st)
	if err != nil || !st.Provision.Done || st.Wait == nil || !st.Wait.Ready {
		t.Errorf("Run() = %v, provision %+v, wait %+v; want done", err, st.Provision, st.Wait)
	}
}

func TestProvisionMissingLoginKey(t *testing.T) {
	f := newProvFixture(t, []Provisioner{shellInline("x", "true")}, nil)
	delete(f.ssm.params, testKeyParam)
	_, err := f.p.Run(f.ctx(), f.st)
	if err == nil || !IsNotFound(err) || !strings.Contains(err.Error(), testKeyParam) {
		t.Errorf("Run() = %v, want a ParameterNotFound error naming %s", err, testKeyParam)
	}
	if logins, _, _ := f.srv.counts(); logins != 0 {
		t.Errorf("Run() logged in without a key")
	}
}

func TestProvisionFileUploads(t *testing.T) {
	files := fstest.MapFS{
		"files/app.conf":     {Data: []byte("port = 8080\n"), Mode: 0o640},
		"files/sub/tool.sh":  {Data: []byte("#!/bin/sh\n"), Mode: 0o755},
		"files/sub/deep/x":   {Data: []byte("x"), Mode: 0o600},
		"single.txt":         {Data: []byte("single\n"), Mode: 0o644},
		"other/readme.md":    {Data: []byte("readme\n"), Mode: 0o644},
		"templates/motd.txt": {Data: []byte("motd\n"), Mode: 0o644},
	}
	var f *provFixture
	dst := func(p string) string { return filepath.Join(f.remote, p) }
	upload := func(dest string, sources ...string) Provisioner {
		return Provisioner{Type: "file", File: &File{Sources: sources, Destination: dest}}
	}
	f = newProvFixture(t, nil, files)
	if err := os.MkdirAll(dst("existing"), 0o755); err != nil {
		t.Fatal(err)
	}
	f.plan.Builds[0].Provisioners = []Provisioner{
		upload(dst("asfolder"), "files"),                                                           // folder: uploaded as a folder
		upload(dst("contents"), "files/"),                                                          // trailing slash: its contents
		upload(dst("a/b/renamed.txt"), "single.txt"),                                               // a file to a file path; parents made
		upload(dst("into")+"/", "single.txt"),                                                      // into a folder named with a slash
		upload(dst("existing"), "single.txt"),                                                      // into an existing folder
		upload(dst("multi"), "single.txt", "other/readme.md"),                                      // several sources: into the folder
		upload(dst("mixed"), "templates", "./files/sub/tool.sh"),                                   // a folder and a file
		{Type: "file", File: &File{Content: "literal\n", Destination: dst("content/literal.txt")}}, // content
	}
	b, _ := json.Marshal(f.plan)
	f.s3.objects[f.st.Plan.Bucket+"/"+f.st.Plan.Key] = b
	f.mustBake(3)

	want := map[string]struct {
		content string
		mode    os.FileMode
	}{
		"asfolder/files/app.conf":    {"port = 8080\n", 0o640},
		"asfolder/files/sub/tool.sh": {"#!/bin/sh\n", 0o755},
		"asfolder/files/sub/deep/x":  {"x", 0o600},
		"contents/app.conf":          {"port = 8080\n", 0o640},
		"contents/sub/tool.sh":       {"#!/bin/sh\n", 0o755},
		"contents/sub/deep/x":        {"x", 0o600},
		"a/b/renamed.txt":            {"single\n", 0o644},
		"into/single.txt":            {"single\n", 0o644},
		"existing/single.txt":        {"single\n", 0o644},
		"multi/single.txt":           {"single\n", 0o644},
		"multi/readme.md":            {"readme\n", 0o644},
		"mixed/templates/motd.txt":   {"motd\n", 0o644},
		"mixed/tool.sh":              {"#!/bin/sh\n", 0o755},
		"content/literal.txt":        {"literal\n", 0o644},
	}
	got := map[string]struct {
		content string
		mode    os.FileMode
	}{}
	err := filepath.WalkDir(f.remote, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			if d != nil && d.IsDir() && d.Name() == ".kiln" {
				return filepath.SkipDir
			}
			return err
		}
		rel, _ := filepath.Rel(f.remote, p)
		fi, _ := d.Info()
		b, _ := os.ReadFile(p)
		got[rel] = struct {
			content string
			mode    os.FileMode
		}{string(b), fi.Mode().Perm()}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(struct {
		content string
		mode    os.FileMode
	}{})); diff != "" {
		t.Errorf("uploaded files (-want +got):\n%s", diff)
	}
}

func TestProvisionFileSourceMissing(t *testing.T) {
	f := newProvFixture(t, []Provisioner{{Type: "file", Name: "conf", File: &File{Sources: []string{"nope.conf"}, Destination: "/tmp/x"}}}, fstest.MapFS{})
	_, err := f.bake(2)
	perr, ok := errors.AsType[*ProvisionerError](err)
	if !ok || perr.Provisioner != `file "conf" (test.pkr.hcl:10)` || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Run() = %v, want a *ProvisionerError for the missing source", err)
	}
}

func TestProvisionAnsible(t *testing.T) {
	files := fstest.MapFS{
		"ansible/site.yml":            {Data: []byte("- hosts: all\n")},
		"ansible/requirements.yml":    {Data: []byte("roles: []\n")},
		"ansible/group_vars/all.yml":  {Data: []byte("x: 1\n")},
		"roles/web/tasks/main.yml":    {Data: []byte("- debug: msg=hi\n")},
		"moreroles/db/tasks/main.yml": {Data: []byte("- debug: msg=db\n")},
	}
	ansible := func(typ string) Provisioner {
		return Provisioner{Type: typ, Name: "play", Ansible: &Ansible{
			PlaybookFile: "ansible/site.yml", PlaybookDir: "ansible", GalaxyFile: "ansible/requirements.yml",
			RolesPath: map[string]string{"ansible-local": "roles/web", "ansible": "moreroles"}[typ], ExtraArguments: []string{"--tags", "web"},
		}}
	}
	t.Run("missing", func(t *testing.T) {
		f := newProvFixture(t, []Provisioner{ansible("ansible-local")}, files)
		if _, err := os.Stat("/usr/bin/ansible-galaxy"); err == nil {
			t.Skip("this machine has Ansible installed")
		}
		_, err := f.bake(2)
		perr, ok := errors.AsType[*ProvisionerError](err)
		if !ok || !errors.Is(err, errMissingCommand) || !strings.Contains(err.Error(), "ansible-galaxy is not installed on the instance") {
			t.Fatalf("Run() = %v, want a *ProvisionerError saying ansible-galaxy is missing", err)
		}
		_ = perr
	})
	for _, typ := range []string{"ansible-local", "ansible"} {
		t.Run(typ, func(t *testing.T) {
			f := newProvFixture(t, []Provisioner{ansible(typ)}, files)
			f.srv.addProgram("ansible-galaxy", "#!/bin/sh\necho \"galaxy $*\"\nmkdir -p roles/fromgalaxy\n")
			f.srv.addProgram("ansible-playbook", "#!/bin/sh\necho \"playbook $*\"\necho \"roles path $ANSIBLE_ROLES_PATH\"\nfind . -type f | sort\n")
			f.mustBake(3)
			staging := filepath.Join(f.remote, "packer-provisioner-ansible-local", testBuildID+"-p0-a0")
			label := typ + ` "play" (test.pkr.hcl:10): `
			roleFile := "./roles/web/tasks/main.yml"
			if typ == "ansible" {
				roleFile = "./roles/db/tasks/main.yml"
			}
			for _, line := range []string{
				"galaxy install -r requirements.yml -p roles",
				"playbook site.yml --extra-vars packer_build_name=app packer_builder_type=amazon-ebs packer_http_addr= -c local -i inventory --tags web",
				"roles path " + staging + "/roles",
				"./group_vars/all.yml", "./inventory", "./requirements.yml", "./site.yml", roleFile,
			} {
				if f.logs.count(label+line) != 1 {
					t.Errorf("log line %q missing; logs:\n%s", label+line, f.logs.text())
				}
			}
			ranOnInstance := strings.Contains(f.logs.text(), "kiln runs Ansible on the instance")
			if ranOnInstance != (typ == "ansible") {
				t.Errorf("the note that kiln runs Ansible on the instance is logged: %v, want %v", ranOnInstance, typ == "ansible")
			}
		})
	}
}

func TestProvisionErrorCleanup(t *testing.T) {
	cleanup := func(p *Plan) {
		p.Builds[0].ErrorCleanup = &Provisioner{Type: "shell", Name: "tidy", Pos: "test.pkr.hcl:99", Shell: &Shell{
			Inline: []string{"echo cleaning up", `touch "$HOME/cleaned"`, "exit 5"},
		}}
	}
	f := newProvFixture(t, []Provisioner{shellInline("fails", "exit 3")}, nil, cleanup)
	_, err := f.bake(2)
	if err == nil {
		t.Fatal("Run() = nil, want the provisioner's failure")
	}
	// The state machine's catch keeps the last good state and adds the
	// error.
	f.st.Error = &Failure{Error: ErrorName(ForLambda("provision", err)), Cause: err.Error()}
	st, err := f.p.ErrorCleanup(f.ctx(), f.st)
	if err != nil {
		t.Fatalf("ErrorCleanup() = %v, want nil: its own failure is only logged", err)
	}
	if st.Provision == nil || !st.Provision.ErrorCleanupRan || st.Error == nil || st.Error.Error != "ProvisionFailed" {
		t.Errorf("ErrorCleanup() = provision %+v, error %+v; want ErrorCleanupRan and the original error kept", st.Provision, st.Error)
	}
	if _, err := os.Stat(filepath.Join(f.srv.home, "cleaned")); err != nil {
		t.Errorf("error-cleanup-provisioner did not run: %v", err)
	}
	logs := f.logs.text()
	for _, want := range []string{`shell "tidy" (test.pkr.hcl:99): cleaning up`, `error-cleanup-provisioner shell "tidy" (test.pkr.hcl:99) failed`} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q:\n%s", want, logs)
		}
	}
	// Called again (a retried task), it does nothing.
	_, execsBefore, _ := f.srv.counts()
	if _, err := f.p.ErrorCleanup(f.ctx(), st); err != nil {
		t.Fatal(err)
	}
	if _, execs, _ := f.srv.counts(); len(execs) != len(execsBefore) {
		t.Errorf("a second ErrorCleanup() ran commands: %q", execs[len(execsBefore):])
	}

	t.Run("unreachable", func(t *testing.T) {
		f := newProvFixture(t, []Provisioner{shellInline("fails", "exit 3")}, nil, cleanup)
		addr := closedAddr(t)
		f.p.Resolve = func(context.Context, State) (string, error) { return addr, nil }
		st, err := f.p.ErrorCleanup(f.ctx(), f.st)
		if err != nil || !st.Provision.ErrorCleanupRan || !strings.Contains(f.logs.text(), "skipped") {
			t.Errorf("ErrorCleanup() = %v, provision %+v; want a logged skip and nil", err, st.Provision)
		}
	})
	t.Run("host key mismatch", func(t *testing.T) {
		f := newProvFixture(t, []Provisioner{shellInline("fails", "exit 3")}, nil, cleanup)
		other, _ := newTestKey(t)
		f.st.Launch.HostKey = string(ssh.MarshalAuthorizedKey(other.PublicKey()))
		if _, err := f.p.ErrorCleanup(f.ctx(), f.st); err != nil {
			t.Errorf("ErrorCleanup() = %v, want nil", err)
		}
		if logins, execs, _ := f.srv.counts(); logins != 0 || len(execs) != 0 {
			t.Errorf("ErrorCleanup() ran on a host with the wrong key")
		}
	})
	t.Run("none defined", func(t *testing.T) {
		f := newProvFixture(t, []Provisioner{shellInline("fails", "exit 3")}, nil)
		st, err := f.p.ErrorCleanup(f.ctx(), f.st)
		if err != nil || st.Provision != nil {
			t.Errorf("ErrorCleanup() without error-cleanup-provisioner = %v, provision %+v; want nothing done", err, st.Provision)
		}
		if logins, _, _ := f.srv.counts(); logins != 0 {
			t.Errorf("ErrorCleanup() without error-cleanup-provisioner logged in")
		}
	})
}

func TestProvisionActions(t *testing.T) {
	p := &Provision{}
	acts := p.Actions()
	for _, name := range []string{"run", "error-cleanup"} {
		if acts[name] == nil {
			t.Errorf("Actions()[%q] is missing", name)
		}
	}
	if len(acts) != 2 {
		t.Errorf("Actions() has %d actions, want 2", len(acts))
	}
}

func TestS3RecipeReadsBundle(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "scripts"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "app.pkr.hcl"), []byte("# recipe\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "scripts", "setup.sh"), []byte("echo setup\n"), 0o755)
	var bundle bytes.Buffer
	if err := WriteBundle(dir, &bundle, BundleTarGz); err != nil {
		t.Fatal(err)
	}
	fs3 := &provS3{objects: map[string][]byte{"recipes/app.tar.gz": bundle.Bytes(), "recipes/plain.pkr.hcl": []byte("# plain\n")}}
	src := &S3Recipe{S3: fs3}
	st := State{Recipe: RecipeRef{Bucket: "recipes", Key: "app.tar.gz", Version: fmt.Sprintf("v%d", time.Now().UnixNano())}}
	fsys, err := src.Open(context.Background(), st)
	if err != nil {
		t.Fatalf("Open() = %v", err)
	}
	if b, err := fs.ReadFile(fsys, "scripts/setup.sh"); err != nil || string(b) != "echo setup\n" {
		t.Errorf("ReadFile(scripts/setup.sh) = %q, %v", b, err)
	}
	// A versioned recipe is read once per warm Lambda.
	if _, err := src.Open(context.Background(), st); err != nil || fs3.gets != 1 {
		t.Errorf("second Open() = %v with %d GetObject calls, want 1", err, fs3.gets)
	}
	fsys, err = src.Open(context.Background(), State{Recipe: RecipeRef{Bucket: "recipes", Key: "plain.pkr.hcl"}})
	if err != nil {
		t.Fatalf("Open(plain template) = %v", err)
	}
	if b, err := fs.ReadFile(fsys, "plain.pkr.hcl"); err != nil || string(b) != "# plain\n" {
		t.Errorf("ReadFile(plain.pkr.hcl) = %q, %v", b, err)
	}
	if _, err := src.Open(context.Background(), State{Recipe: RecipeRef{Bucket: "recipes", Key: "gone.tar.gz"}}); !IsNotFound(err) {
		t.Errorf("Open(missing) = %v, want NoSuchKey", err)
	}
}

func TestLineLog(t *testing.T) {
	sink := &logSink{}
	l := &lineLog{log: slog.New(sink), prefix: "p: ", redact: func(s string) string { return redact(s, []string{"secret"}) }}
	l.write([]byte("one\r\ntw"))
	l.write([]byte("o secret\nthree"))
	if got, want := sink.lines, []string{"p: one", "p: two <sensitive>"}; !cmp.Equal(got, want) {
		t.Errorf("lines after two writes = %q, want %q", got, want)
	}
	if string(l.partial) != "three" {
		t.Errorf("unfinished line = %q, want %q", l.partial, "three")
	}
	l.flush()
	l.write(bytes.Repeat([]byte("x"), maxLine+10))
	if n := len(sink.lines); n != 4 || sink.lines[2] != "p: three" || len(sink.lines[3]) != len("p: ")+maxLine+10 {
		t.Errorf("after flush and a long line: %d lines, want 4 with the long line whole up to its length", n)
	}
	if len(l.partial) != 0 {
		t.Errorf("a line longer than maxLine is kept waiting (%d bytes)", len(l.partial))
	}
}

func TestHostKeyAlgorithms(t *testing.T) {
	ed, _ := newTestKey(t)
	if got := hostKeyAlgorithms(ed.PublicKey()); !cmp.Equal(got, []string{ssh.KeyAlgoED25519}) {
		t.Errorf("hostKeyAlgorithms(ed25519) = %q", got)
	}
	rsaKey, _, _, _, err := ssh.ParseAuthorizedKey([]byte("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDDHr/jh2Jy4yALcK4JyWbVkPRaWmhck3IgCoeOO3z1e2dBowLh64QAM+Qb72pxekALga2oi4GvT+TlWNhzPH4V4aCHnU4qeq1JNPIDNPY3aKr+iCSEhD1LFOBMiBs0Bq6yTVwK/oamZqzY8XfsZK1xBOmDrdHzsfG3pTKIWXq10w=="))
	if err != nil {
		t.Fatal(err)
	}
	if got := hostKeyAlgorithms(rsaKey); !cmp.Equal(got, []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}) {
		t.Errorf("hostKeyAlgorithms(rsa) = %q", got)
	}
}
