package bake

// Provisioning against a real OpenSSH sshd: pkg/sandbox runs one on
// 127.0.0.1 over a copy-on-write view of this machine, standing in for the
// build instance. An emulator's instances are not reachable, so the test
// points Provision.Resolve at the sandbox, as local mode does.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/ssh"

	"github.com/kiln-dev/kiln/pkg/emulator"
	"github.com/kiln-dev/kiln/pkg/sandbox"
)

// sandboxFixture is a sandbox "instance" and a Provision pointed at it.
type sandboxFixture struct {
	sb   *sandbox.Sandbox
	p    *Provision
	st   State
	logs *logSink
}

// newSandboxFixture starts a sandbox whose sshd presents the host key
// served, while the state pins the host key pinned (the same unless a
// test says otherwise), and stores a plan running provs.
func newSandboxFixture(t *testing.T, provs []Provisioner, files fstest.MapFS, pinned func(served ssh.PublicKey) ssh.PublicKey) *sandboxFixture {
	t.Helper()
	login, loginPEM := newTestKey(t)
	hostSigner, hostPEM := newTestKey(t)
	// A login user other than root, with passwordless sudo, as on an
	// EC2 image (and with a home folder of its own rather than this
	// machine's root's).
	sb := sandbox.ForTest(t, sandbox.Options{
		User:           "kiln",
		HostKey:        []byte(hostPEM),
		AuthorizedKeys: []string{string(ssh.MarshalAuthorizedKey(login.PublicKey()))},
	})
	pin := hostSigner.PublicKey()
	if pinned != nil {
		pin = pinned(pin)
	}
	for i := range provs {
		provs[i].Pos = fmt.Sprintf("sandbox.pkr.hcl:%d", 10*(i+1))
		if provs[i].Shell != nil && provs[i].Shell.RemoteFolder == "" {
			provs[i].Shell.RemoteFolder = "/tmp"
		}
	}
	plan := &Plan{Name: "sandbox", Format: "hcl2", Builds: []Build{{
		Name: "app", Type: "amazon-ebs",
		Source:       AmazonEBS{Region: "us-east-1", SSHUsername: sb.User(), Communicator: "ssh", SSHInterface: "private_ip", SSHTimeout: Duration(time.Minute)},
		Provisioners: provs,
	}}}
	b, err := json.Marshal(plan)
	if err != nil {
		t.Fatal(err)
	}
	key := fmt.Sprintf("builds/%s-%d/plan.json", t.Name(), provPlanSeq.Add(1))
	f := &sandboxFixture{sb: sb, logs: &logSink{}}
	f.st = State{
		BuildID: "sandbox-0123456789ab",
		Plan:    &PlanRef{Bucket: "kiln-test", Key: key, Recipe: "sandbox", Build: "app", Region: "us-east-1", Transport: "ssh"},
		Launch: &Launched{
			Region: "us-east-1", InstanceID: "i-0sandbox", KeyParameter: testKeyParam, PrivateIP: "10.9.9.9",
			HostKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pin))), LaunchedAt: time.Now(),
		},
	}
	f.p = &Provision{
		SSM:     &provSSM{params: map[string]string{testKeyParam: loginPEM}},
		S3:      &provS3{objects: map[string][]byte{"kiln-test/" + key: b}},
		Files:   FSRecipe{FS: files},
		Resolve: func(context.Context, State) (string, error) { return sb.Addr(), nil },
		Poll:    50 * time.Millisecond,
	}
	return f
}

// bake runs Run until provisioning is done or fails, passing waits
// without waiting.
func (f *sandboxFixture) bake(t *testing.T) (State, error) {
	t.Helper()
	ctx := WithLogger(context.Background(), slog.New(f.logs))
	for range 10 {
		st, err := f.p.Run(ctx, f.st)
		if err != nil || st.Provision.Done {
			return st, err
		}
		f.st = st
	}
	t.Fatalf("provisioning not done after 10 invocations; logs:\n%s", f.logs.text())
	return f.st, nil
}

func TestProvisionSandbox(t *testing.T) {
	files := fstest.MapFS{
		"scripts/greet.sh": {Data: []byte(`#!/bin/sh
set -e
echo "greeting=$GREETING"
echo "other=$OTHER build=$PACKER_BUILD_NAME type=$PACKER_BUILDER_TYPE user=$(id -un)"
printf '%s' "$GREETING" > /opt/kiln-test/greeting
`), Mode: 0o644},
		"files/app.conf":    {Data: []byte("listen = 8080\n"), Mode: 0o640},
		"files/bin/tool.sh": {Data: []byte("#!/bin/sh\necho tool\n"), Mode: 0o755},
		"files/empty/.keep": {Data: nil, Mode: 0o644},
	}
	greeting := `it's "quoted" $HOME; rm -rf /`
	f := newSandboxFixture(t, []Provisioner{
		{Type: "shell", Name: "inline", Shell: &Shell{Inline: []string{
			"echo hello from the sandbox as $(id -un)", "sudo mkdir -p /opt/kiln-test", "sudo chown kiln /opt/kiln-test",
			"echo inline > /opt/kiln-test/inline",
		}}},
		{Type: "shell", Name: "script", Shell: &Shell{
			Scripts:         []string{"scripts/greet.sh"},
			ExecuteCommand:  "chmod +x {{.Path}}; sudo env {{.Vars}} {{.Path}}",
			EnvironmentVars: []string{"GREETING=" + greeting},
			Env:             map[string]string{"OTHER": "x y"},
		}},
		{Type: "file", Name: "files", File: &File{Sources: []string{"files"}, Destination: "/opt/kiln-test"}},
		{Type: "shell", Name: "check", Shell: &Shell{Inline: []string{
			"apt-get --version | head -n 1",
			"cat /opt/kiln-test/files/app.conf",
			"stat -c '%a %n' /opt/kiln-test/files/app.conf /opt/kiln-test/files/bin/tool.sh",
			"cat /opt/kiln-test/greeting; echo",
		}}},
	}, files, nil)

	st, err := f.bake(t)
	if err != nil {
		t.Fatalf("Run() = %v; logs:\n%s", err, f.logs.text())
	}
	if !st.Provision.Done || st.Provision.Next != 4 {
		t.Errorf("Run() provision = %+v, want all 4 done", st.Provision)
	}
	for _, line := range []string{
		`shell "inline" (sandbox.pkr.hcl:10): hello from the sandbox as kiln`,
		`shell "script" (sandbox.pkr.hcl:20): greeting=` + greeting,
		`shell "script" (sandbox.pkr.hcl:20): other=x y build=app type=amazon-ebs user=root`,
		`shell "check" (sandbox.pkr.hcl:40): listen = 8080`,
		`shell "check" (sandbox.pkr.hcl:40): 640 /opt/kiln-test/files/app.conf`,
		`shell "check" (sandbox.pkr.hcl:40): 755 /opt/kiln-test/files/bin/tool.sh`,
		`shell "check" (sandbox.pkr.hcl:40): ` + greeting,
	} {
		if f.logs.count(line) != 1 {
			t.Errorf("log line %q missing; logs:\n%s", line, f.logs.text())
		}
	}
	if !strings.Contains(f.logs.text(), `shell "check" (sandbox.pkr.hcl:40): apt `) {
		t.Errorf("apt-get --version did not run in the sandbox; logs:\n%s", f.logs.text())
	}

	changed, err := f.sb.Changed()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{
		"/opt/kiln-test/inline", "/opt/kiln-test/greeting",
		"/opt/kiln-test/files/app.conf", "/opt/kiln-test/files/bin/tool.sh", "/opt/kiln-test/files/empty/.keep",
	} {
		if !slices.Contains(changed, p) {
			t.Errorf("the sandbox lacks %s; changed: %q", p, changed)
		}
	}
	// kiln leaves no scripts and no command output behind, only the exit
	// markers that make a rerun safe.
	for _, p := range changed {
		if strings.HasPrefix(p, "/tmp/script_") || strings.HasSuffix(p, "/out") || strings.HasSuffix(p, "/cmd") {
			t.Errorf("the sandbox keeps %s", p)
		}
	}
	if _, err := os.Stat(filepath.Join("/opt/kiln-test")); err == nil {
		t.Errorf("the recipe wrote /opt/kiln-test on the host, outside the sandbox")
	}
}

func TestProvisionSandboxFailure(t *testing.T) {
	f := newSandboxFixture(t, []Provisioner{
		{Type: "shell", Name: "ok", Shell: &Shell{Inline: []string{"echo fine"}}},
		{Type: "shell", Name: "fails", Shell: &Shell{Inline: []string{"echo step one", "echo failing now >&2", "exit 3", "echo not reached"}}},
		{Type: "shell", Name: "never", Shell: &Shell{Inline: []string{"touch /tmp/never"}}},
	}, nil, nil)
	st, err := f.bake(t)
	perr, ok := errors.AsType[*ProvisionerError](err)
	if !ok {
		t.Fatalf("Run() = %v, want a *ProvisionerError", err)
	}
	want := &ProvisionerError{Provisioner: `shell "fails" (sandbox.pkr.hcl:20)`, ExitStatus: 3, Tail: []string{"step one", "failing now"}}
	if diff := cmp.Diff(want, perr); diff != "" {
		t.Errorf("Run() error (-want +got):\n%s", diff)
	}
	if msg := err.Error(); !strings.Contains(msg, `provisioner shell "fails" (sandbox.pkr.hcl:20) exited with status 3`) || !strings.Contains(msg, "failing now") {
		t.Errorf("Run() error = %q, want it to name the provisioner, its status and its last lines", msg)
	}
	if st.Provision == nil || st.Provision.Next != 1 || st.Provision.Done {
		t.Errorf("Run() provision = %+v, want stopped at provisioner 1", st.Provision)
	}
	changed, err := f.sb.Changed()
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(changed, "/tmp/never") {
		t.Errorf("a provisioner after the failed one ran")
	}
}

func TestProvisionSandboxHostKeyMismatch(t *testing.T) {
	var other ssh.PublicKey
	f := newSandboxFixture(t, []Provisioner{
		{Type: "shell", Shell: &Shell{Inline: []string{"touch /tmp/ran"}}},
		{Type: "file", File: &File{Content: "x", Destination: "/tmp/uploaded"}},
	}, nil, func(ssh.PublicKey) ssh.PublicKey {
		s, _ := newTestKey(t)
		other = s.PublicKey()
		return other
	})
	before, err := f.sb.Changed()
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.bake(t)
	hk, ok := errors.AsType[*HostKeyError](err)
	if !ok || hk.Want != ssh.FingerprintSHA256(other) || hk.Got != ssh.FingerprintSHA256(f.sb.HostKey()) {
		t.Fatalf("Run() = %v, want a *HostKeyError with both fingerprints", err)
	}
	after, err := f.sb.Changed()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("the sandbox changed although the host key did not match (-before +after):\n%s", diff)
	}
	if f.p.SSM.(*provSSM).gets != 1 {
		t.Errorf("the login key was read %d times, want 1", f.p.SSM.(*provSSM).gets)
	}
}

// TestProvisionSandboxMoto reads the login key (a SecureString) and the
// recipe bundle (a versioned object) through the real SDK clients from
// moto, and provisions the sandbox with the bundle's script and files.
func TestProvisionSandboxMoto(t *testing.T) {
	f := newSandboxFixture(t, []Provisioner{
		{Type: "shell", Name: "from bundle", Shell: &Shell{Scripts: []string{"scripts/hello.sh"}}},
		{Type: "file", File: &File{Sources: []string{"conf/"}, Destination: "kiln-moto/"}}, // relative: to the home folder
		{Type: "shell", Shell: &Shell{Inline: []string{"cat ~/kiln-moto/app.conf"}}},
	}, nil, nil)
	cfg := emulator.ForTest(t)
	ctx := context.Background()
	s3c := s3.NewFromConfig(cfg, emulator.S3Options)
	ssmc := ssm.NewFromConfig(cfg)

	// The recipe bundle, uploaded to a versioned bucket, and the plan.
	var bundle bytes.Buffer
	if err := WriteBundle(filepath.Join("testdata", "provision", "bundle"), &bundle, BundleTarGz); err != nil {
		t.Fatal(err)
	}
	for _, bucket := range []string{"recipes", "kiln-test"} {
		if _, err := s3c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
			t.Fatalf("CreateBucket(%s) = %v", bucket, err)
		}
	}
	if _, err := s3c.PutBucketVersioning(ctx, &s3.PutBucketVersioningInput{Bucket: aws.String("recipes"),
		VersioningConfiguration: &s3types.VersioningConfiguration{Status: s3types.BucketVersioningStatusEnabled}}); err != nil {
		t.Fatalf("PutBucketVersioning() = %v", err)
	}
	put, err := s3c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("recipes"), Key: aws.String("app.tar.gz"), Body: bytes.NewReader(bundle.Bytes())})
	if err != nil {
		t.Fatalf("PutObject(recipe) = %v", err)
	}
	// A later upload of the same key must not be what this build reads.
	if _, err := s3c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("recipes"), Key: aws.String("app.tar.gz"), Body: strings.NewReader("not a bundle")}); err != nil {
		t.Fatalf("PutObject(newer recipe) = %v", err)
	}
	f.st.Recipe = RecipeRef{Bucket: "recipes", Key: "app.tar.gz", Version: aws.ToString(put.VersionId)}
	fakeS3 := f.p.S3.(*provS3)
	if _, err := s3c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("kiln-test"), Key: aws.String(f.st.Plan.Key),
		Body: bytes.NewReader(fakeS3.objects["kiln-test/"+f.st.Plan.Key])}); err != nil {
		t.Fatalf("PutObject(plan) = %v", err)
	}
	loginPEM := f.p.SSM.(*provSSM).params[testKeyParam]
	if _, err := ssmc.PutParameter(ctx, &ssm.PutParameterInput{Name: aws.String(testKeyParam), Value: aws.String(loginPEM),
		Type: ssmtypes.ParameterTypeSecureString}); err != nil {
		t.Fatalf("PutParameter() = %v", err)
	}
	f.p.S3, f.p.SSM, f.p.Files = s3c, ssmc, nil

	st, err := f.bake(t)
	if err != nil {
		t.Fatalf("Run() = %v; logs:\n%s", err, f.logs.text())
	}
	if !st.Provision.Done {
		t.Errorf("Run() provision = %+v, want done", st.Provision)
	}
	for _, line := range []string{
		`shell "from bundle" (sandbox.pkr.hcl:10): hello from the bundle`,
		`shell (sandbox.pkr.hcl:30): from = bundle`,
	} {
		if f.logs.count(line) != 1 {
			t.Errorf("log line %q missing; logs:\n%s", line, f.logs.text())
		}
	}
}
