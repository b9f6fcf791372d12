package bake

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// keptVolumeSource is the test source with an extra launch volume that
// outlives the instance (delete_on_termination = false, which the AMI's
// mapping inherits), and with the recipe's own security group when ownSG
// is set (then no temporary group makes cleanup wait).
func (e *stageEnv) keptVolumeSource(ownSG bool) AmazonEBS {
	src := e.testSource()
	src.LaunchBlockDeviceMappings = []BlockDevice{
		{DeviceName: "/dev/xvdb", VolumeSize: 10, VolumeType: "gp3", DeleteOnTermination: aws.Bool(false)},
	}
	if ownSG {
		src.SecurityGroupIDs = []string{e.cloud.AddSecurityGroup(testRegion, e.vpc, "users-own")}
	}
	return src
}

// keptVolume returns the instance's volume that is not deleted on
// termination.
func (e *stageEnv) keptVolume(st State) string {
	e.t.Helper()
	inst, _ := e.cloud.Instance(testRegion, st.Launch.InstanceID)
	for _, m := range inst.BlockDeviceMappings {
		if m.Ebs != nil && !aws.ToBool(m.Ebs.DeleteOnTermination) {
			return aws.ToString(m.Ebs.VolumeId)
		}
	}
	e.t.Fatalf("instance %s has no volume kept on termination: %+v", st.Launch.InstanceID, inst.BlockDeviceMappings)
	return ""
}

// TestCleanupKeptVolume: a launch volume with delete_on_termination =
// false survives TerminateInstances; cleanup waits while the instance shuts
// down (the volume is still attached) and then deletes it.
func TestCleanupKeptVolume(t *testing.T) {
	for _, c := range []struct {
		name  string
		ownSG bool
	}{
		{name: "temporary group"},
		// Nothing else to wait for: the volume alone must hold the round.
		{name: "own group", ownSG: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newStageEnv(t)
			st := e.launched(e.keptVolumeSource(c.ownSG))
			vol := e.keptVolume(st)
			if v, _ := e.cloud.Volume(testRegion, vol); tagOf(v.Tags, TagBuild) != st.BuildID {
				t.Fatalf("volume %s tags = %v, want %s=%s", vol, v.Tags, TagBuild, st.BuildID)
			}

			st, err := e.cleanup.Run(context.Background(), st)
			if err != nil {
				t.Fatalf("Cleanup.Run while the instance shuts down: %v", err)
			}
			if st.Wait == nil || st.Wait.Ready || !strings.Contains(st.Wait.For, "volume "+vol) {
				t.Fatalf("Cleanup.Run while the instance shuts down: Wait = %+v, want not ready for volume %s", st.Wait, vol)
			}
			if len(st.Cleanup.Failed) != 0 {
				t.Errorf("Cleanup.Run while the instance shuts down: failed %q, want none", st.Cleanup.Failed)
			}
			if _, ok := e.cloud.Volume(testRegion, vol); !ok {
				t.Fatalf("volume %s gone while its instance shuts down", vol)
			}

			st, err, rounds := e.cleanupUntilDone(st)
			if err != nil {
				t.Fatalf("Cleanup.Run: %v", err)
			}
			if rounds > 3 {
				t.Errorf("cleanup took %d more rounds", rounds)
			}
			if left := e.cloud.Leftovers(st.BuildID); len(left) > 0 {
				t.Errorf("after cleanup: %v", left)
			}
			if want := testRegion + " volume " + vol; !slices.Contains(st.Cleanup.Deleted, want) {
				t.Errorf("st.Cleanup.Deleted = %q, missing %q", st.Cleanup.Deleted, want)
			}

			// Idempotent: again, nothing to do.
			again, err := e.cleanup.Run(context.Background(), st)
			if err != nil || !again.Wait.Ready {
				t.Errorf("Cleanup.Run again = %+v, %v; want ready", again.Wait, err)
			}
		})
	}
}

// TestCleanupVolumesDeletedOnTermination: volumes EC2 deletes with the
// instance hold no round up: a build without a temporary group is done at
// once, as before cleanup deleted volumes.
func TestCleanupVolumesDeletedOnTermination(t *testing.T) {
	e := newStageEnv(t)
	src := e.keptVolumeSource(true)
	src.LaunchBlockDeviceMappings = nil
	st := e.launched(src)
	st, err := e.cleanup.Run(context.Background(), st)
	if err != nil || st.Wait == nil || !st.Wait.Ready {
		t.Fatalf("Cleanup.Run = %+v, %v; want ready", st.Wait, err)
	}
	e.cloud.Advance(time.Minute)
	if left := e.cloud.Leftovers(st.BuildID); len(left) > 0 {
		t.Errorf("after termination: %v", left)
	}
	if slices.ContainsFunc(st.Cleanup.Deleted, func(d string) bool { return strings.Contains(d, " volume ") }) {
		t.Errorf("st.Cleanup.Deleted = %q, want no volume (EC2 deletes them)", st.Cleanup.Deleted)
	}
}

// TestCleanupKeptVolumeWaitIsBounded: an instance stuck shutting down keeps
// its volume attached; after the bound cleanup reports the volume.
func TestCleanupKeptVolumeWaitIsBounded(t *testing.T) {
	e := newStageEnv(t)
	e.cloud.Delays.Terminating = time.Hour
	st := e.launched(e.keptVolumeSource(true))
	vol := e.keptVolume(st)
	st, err, _ := e.cleanupUntilDone(st)
	var ce *CleanupError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "volume "+vol) {
		t.Fatalf("Cleanup.Run with an instance stuck shutting down = %v, want a CleanupError naming volume %s", err, vol)
	}
	if elapsed := e.cloud.Now().Sub(st.Cleanup.StartedAt); elapsed < DefaultCleanupTimeout || elapsed > DefaultCleanupTimeout+2*time.Minute {
		t.Errorf("gave up after %s, want about %s", elapsed, DefaultCleanupTimeout)
	}
	if _, ok := e.cloud.Volume(testRegion, vol); !ok {
		t.Errorf("volume %s deleted while attached", vol)
	}
}

func TestCleanupKeptVolumeErrors(t *testing.T) {
	for _, c := range []struct {
		name  string
		fault fakeFault
	}{
		{name: "describe", fault: fakeFault{Action: "DescribeVolumes", Code: "UnauthorizedOperation", Times: 100}},
		{name: "delete", fault: fakeFault{Action: "DeleteVolume", Code: "UnauthorizedOperation", Times: 100}},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newStageEnv(t)
			st := e.launched(e.keptVolumeSource(false))
			vol := e.keptVolume(st)
			e.cloud.Fail(c.fault)
			st, err, _ := e.cleanupUntilDone(st)
			var ce *CleanupError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), "volume") || !strings.Contains(err.Error(), c.fault.Code) {
				t.Fatalf("Cleanup.Run = %v, want a CleanupError about the volume (%s)", err, c.fault.Code)
			}
			if got := routedName(ForLambda("cleanup", err)); got != "CleanupIncomplete" {
				t.Errorf("ForLambda = %s, want CleanupIncomplete", got)
			}
			// The state machine retries: the next run finishes the job.
			e.cloud.faults = nil
			st, err, _ = e.cleanupUntilDone(st)
			if err != nil {
				t.Fatalf("Cleanup.Run retried: %v", err)
			}
			if left := e.cloud.Leftovers(st.BuildID); len(left) > 0 {
				t.Errorf("after the retry: %v", left)
			}
			if _, ok := e.cloud.Volume(testRegion, vol); ok {
				t.Errorf("volume %s left", vol)
			}
		})
	}
}
