package asl

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// SSHNotReadyError is what the provision Lambda returns while sshd is not
// up yet; the definition retries it.
type SSHNotReadyError struct{ Addr string }

func (e SSHNotReadyError) Error() string { return "ssh " + e.Addr + ": connection refused" }

// ProvisionerError is a provisioner that failed; nothing retries it.
type ProvisionerError struct {
	Provisioner string
	ExitStatus  int
}

func (e *ProvisionerError) Error() string {
	return fmt.Sprintf("provisioner %s exited with status %d", e.Provisioner, e.ExitStatus)
}

// fakeCloud stands in for kiln's Lambdas. It is stateful: it remembers the
// instance it launched, the image it made and the copies, answers "pending"
// until enough checks have passed, and records what cleanup was asked to
// do. Handlers move the fake clock by roughly what the real calls take.
type fakeCloud struct {
	clock *FakeClock

	// Knobs.
	pendingChecks int   // CheckInstance says pending this many times
	sshFailures   int   // Provision fails with SSHNotReadyError this many times
	provisionErr  error // then fails with this, if set
	pendingImage  int   // CheckImage says pending this many times

	mu             sync.Mutex
	instance       string
	image          string
	instanceChecks int
	imageChecks    int
	provisions     int
	copied         []string
	cleanups       []map[string]any
}

func (c *fakeCloud) handlers() map[string]Handler {
	type instanceRef struct {
		InstanceID string `json:"instance_id"`
	}
	return map[string]Handler{
		"LaunchFunctionArn": Typed(func(_ context.Context, in struct {
			BuildID string         `json:"build_id"`
			Recipe  map[string]any `json:"recipe"`
		}) (map[string]string, error) {
			c.clock.Advance(2 * time.Second)
			c.mu.Lock()
			defer c.mu.Unlock()
			c.instance = "i-0abc"
			return map[string]string{"instance_id": c.instance}, nil
		}),
		"CheckInstanceFunctionArn": Typed(func(_ context.Context, in instanceRef) (map[string]any, error) {
			c.mu.Lock()
			defer c.mu.Unlock()
			if in.InstanceID != c.instance {
				return nil, fmt.Errorf("describe %s: not found", in.InstanceID)
			}
			c.instanceChecks++
			state := "running"
			if c.instanceChecks <= c.pendingChecks {
				state = "pending"
			}
			return map[string]any{"state": state, "checks": c.instanceChecks}, nil
		}),
		"ProvisionFunctionArn": Typed(func(_ context.Context, in struct {
			InstanceID   string   `json:"instance_id"`
			Provisioners []string `json:"provisioners"`
		}) (map[string]int, error) {
			c.mu.Lock()
			c.provisions++
			n := c.provisions
			c.mu.Unlock()
			if n <= c.sshFailures {
				c.clock.Advance(3 * time.Second)
				return nil, SSHNotReadyError{Addr: "10.0.0.5:22"}
			}
			c.clock.Advance(90 * time.Second)
			if c.provisionErr != nil {
				return nil, c.provisionErr
			}
			return map[string]int{"ran": len(in.Provisioners)}, nil
		}),
		"SnapshotFunctionArn": Typed(func(_ context.Context, in struct {
			InstanceID string `json:"instance_id"`
			Name       string `json:"name"`
		}) (map[string]string, error) {
			c.clock.Advance(4 * time.Second)
			c.mu.Lock()
			defer c.mu.Unlock()
			c.image = "ami-0123"
			return map[string]string{"image_id": c.image, "name": in.Name}, nil
		}),
		"CheckImageFunctionArn": Typed(func(_ context.Context, in struct {
			ImageID string `json:"image_id"`
		}) (map[string]string, error) {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.imageChecks++
			if c.imageChecks <= c.pendingImage {
				return map[string]string{"state": "pending"}, nil
			}
			return map[string]string{"state": "available"}, nil
		}),
		"DistributeFunctionArn": Typed(func(_ context.Context, in struct {
			Region  string `json:"region"`
			ImageID string `json:"image_id"`
			Name    string `json:"name"`
		}) (map[string]string, error) {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.copied = append(c.copied, in.Region)
			return map[string]string{"region": in.Region, "image_id": "ami-" + in.Region, "name": in.Name}, nil
		}),
		"CleanupFunctionArn": Typed(func(_ context.Context, st map[string]any) (map[string]any, error) {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.cleanups = append(c.cleanups, st)
			deleted := []string{c.instance}
			if _, failed := st["error"]; failed && c.image != "" {
				deleted = append(deleted, c.image)
			}
			return map[string]any{"deleted": deleted}, nil
		}),
	}
}

func loadBake(t *testing.T) []byte {
	t.Helper()
	def, err := os.ReadFile("testdata/bake.asl.json")
	if err != nil {
		t.Fatal(err)
	}
	return def
}

const bakeInput = `{"recipe":{"name":"web","regions":["us-east-1","eu-west-1","ap-south-1"],
	"provisioners":["shell: apt-get update","shell: install nginx"]}}`

// runBake runs the testdata definition against cloud.
func runBake(t *testing.T, cloud *fakeCloud) *Result {
	t.Helper()
	cloud.clock = autoClock()
	return runDef(t, string(loadBake(t)), Options{Clock: cloud.clock, Handlers: cloud.handlers()}, bakeInput)
}

// topLevel lists the states entered at the top level, in order.
func topLevel(h []Event) []string {
	var out []string
	for _, ev := range h {
		if ev.Scope == "" {
			out = append(out, ev.State)
		}
	}
	return out
}

func TestBakeDefinitionSucceeds(t *testing.T) {
	cloud := &fakeCloud{pendingChecks: 1, sshFailures: 1, pendingImage: 1}
	res := runBake(t, cloud)
	got := succeeded(t, res)
	want := `{"build_id":"test","image_id":"ami-0123","regions":3,"deleted":["i-0abc"],"copies":[
		{"region":"us-east-1","image_id":"ami-us-east-1","name":"web-test"},
		{"region":"eu-west-1","image_id":"ami-eu-west-1","name":"web-test"},
		{"region":"ap-south-1","image_id":"ami-ap-south-1","name":"web-test"}]}`
	if diff := cmp.Diff(decoded(t, want), got); diff != "" {
		t.Errorf("manifest mismatch (-want +got):\n%s", diff)
	}
	wantPath := []string{
		"Launch", "WaitForInstance", "CheckInstance", "InstanceReady?", "WaitForInstance", "CheckInstance", "InstanceReady?",
		"Provision", "Provision", "Snapshot", "WaitForImage", "CheckImage", "ImageAvailable?", "WaitForImage", "CheckImage",
		"ImageAvailable?", "Distribute", "Cleanup", "Outcome?", "Manifest", "Baked",
	}
	if diff := cmp.Diff(wantPath, topLevel(res.History)); diff != "" {
		t.Errorf("top-level path mismatch (-want +got):\n%s", diff)
	}
	if len(cloud.cleanups) != 1 {
		t.Fatalf("cleanup ran %d times, want 1", len(cloud.cleanups))
	}
	if _, failed := cloud.cleanups[0]["error"]; failed {
		t.Errorf("cleanup saw an error on the success path: %v", cloud.cleanups[0]["error"])
	}
	rep := res.Report(Pricing{})
	if rep.Transitions != 24 || rep.Invocations != 12 {
		t.Errorf("Report() = %d transitions, %d invocations; want 24 and 12", rep.Transitions, rep.Invocations)
	}
	// Waits: 2x15 s for the instance and 2x30 s for the image; handlers
	// took 2+3+90+4 s; the SSH retry waited up to 5 s.
	if d := res.StopTime.Sub(res.StartTime); d < 189*time.Second || d > 194*time.Second {
		t.Errorf("bake took %v of fake time, want 189-194 s", d)
	}
}

func TestBakeDefinitionFailureIsCleanedUp(t *testing.T) {
	cloud := &fakeCloud{provisionErr: &ProvisionerError{Provisioner: "shell: install nginx", ExitStatus: 100}}
	res := runBake(t, cloud)
	if res.Status != StatusFailed || res.Error != "ProvisionerError" {
		t.Fatalf("Run() = %s %q, want FAILED ProvisionerError", res.Status, res.Error)
	}
	if want := `{"errorMessage":"provisioner shell: install nginx exited with status 100","errorType":"ProvisionerError"}`; res.Cause != want {
		t.Errorf("Run() cause = %s, want %s", res.Cause, want)
	}
	wantPath := []string{"Launch", "WaitForInstance", "CheckInstance", "InstanceReady?", "Provision", "Cleanup", "Outcome?", "BakeFailed"}
	if diff := cmp.Diff(wantPath, topLevel(res.History)); diff != "" {
		t.Errorf("top-level path mismatch (-want +got):\n%s", diff)
	}
	if len(cloud.cleanups) != 1 {
		t.Fatalf("cleanup ran %d times, want 1", len(cloud.cleanups))
	}
	gotErr, _ := cloud.cleanups[0]["error"].(map[string]any)
	if gotErr["Error"] != "ProvisionerError" {
		t.Errorf("cleanup saw error %v, want ProvisionerError", cloud.cleanups[0]["error"])
	}
	if cloud.provisions != 1 {
		t.Errorf("Provision ran %d times; a ProvisionerError must not be retried", cloud.provisions)
	}
}

func TestBakeDefinitionInstanceNeverRuns(t *testing.T) {
	cloud := &fakeCloud{pendingChecks: 1000}
	res := runBake(t, cloud)
	if res.Status != StatusFailed || res.Error != "InstanceNotRunning" || !strings.Contains(res.Cause, "is pending after 40 checks") {
		t.Fatalf("Run() = %s %q %q, want FAILED InstanceNotRunning after 40 checks", res.Status, res.Error, res.Cause)
	}
	// Launch, 40 rounds of Wait+Check+Choice, then InstanceFailed, Cleanup,
	// Outcome? and BakeFailed: the cost of a polling loop.
	if got := res.Report(Pricing{}).Transitions; got != 1+40*3+4 {
		t.Errorf("Report().Transitions = %d, want %d", got, 1+40*3+4)
	}
}

func TestBakeDefinitionValidates(t *testing.T) {
	if err := Validate(loadBake(t)); err != nil {
		t.Fatalf("Validate(testdata/bake.asl.json) = %v", err)
	}
	var generic map[string]any
	if err := json.Unmarshal(loadBake(t), &generic); err != nil {
		t.Fatalf("testdata/bake.asl.json is not JSON: %v", err)
	}
}
