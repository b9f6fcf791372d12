package bake

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// TestLaunchUsesStackSecurityGroups: a build in the stack's VPC uses the
// stack's group for its transport, creating none, and its cleanup is done
// in one round, without waiting for the instance to terminate; a group
// that admits more than it should, or that is in another VPC, is passed
// over for a temporary group.
func TestLaunchUsesStackSecurityGroups(t *testing.T) {
	for _, c := range []struct {
		name      string
		transport string
		// setup adds the groups and returns what Config names.
		setup      func(e *stageEnv) (ssh, isolated string)
		wantShared bool
	}{
		{name: "ssh", transport: "private_ip", wantShared: true, setup: func(e *stageEnv) (string, string) {
			return e.group(e.vpc, e.provSG, ""), e.group(e.vpc, "", "")
		}},
		{name: "session_manager", transport: "session_manager", wantShared: true, setup: func(e *stageEnv) (string, string) {
			return e.group(e.vpc, e.provSG, ""), e.group(e.vpc, "", "")
		}},
		{name: "ssh group open to the world", transport: "private_ip", setup: func(e *stageEnv) (string, string) {
			return e.group(e.vpc, e.provSG, "0.0.0.0/0"), e.group(e.vpc, "", "")
		}},
		{name: "ssh group without the provisioner", transport: "private_ip", setup: func(e *stageEnv) (string, string) {
			return e.group(e.vpc, "", ""), e.group(e.vpc, "", "")
		}},
		{name: "isolated group with ingress", transport: "session_manager", setup: func(e *stageEnv) (string, string) {
			return e.group(e.vpc, e.provSG, ""), e.group(e.vpc, e.provSG, "")
		}},
		{name: "another VPC", transport: "private_ip", setup: func(e *stageEnv) (string, string) {
			other := e.cloud.AddVPC(testRegion, "10.9.0.0/16", nil)
			return e.group(other, e.provSG, ""), e.group(other, "", "")
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newStageEnv(t)
			ssh, isolated := c.setup(e)
			e.cfg.InstanceSecurityGroup, e.cfg.IsolatedSecurityGroup = ssh, isolated
			e.launch.Config, e.cleanup.Config = e.cfg, e.cfg
			src := e.testSource()
			src.SSHInterface = c.transport
			want := ssh
			if c.transport == "session_manager" {
				want = isolated
			}
			st := e.launched(src)
			inst, _ := e.cloud.Instance(testRegion, st.Launch.InstanceID)
			var got []string
			for _, g := range inst.SecurityGroups {
				got = append(got, aws.ToString(g.GroupId))
			}
			creates := e.cloud.Calls("CreateSecurityGroup")
			if c.wantShared {
				if !slices.Equal(got, []string{want}) || st.Launch.SharedSecurityGroup != want || st.Launch.SecurityGroupID != "" || creates != 0 {
					t.Fatalf("instance groups %v, launch %+v, %d groups created; want the stack's %s only", got, st.Launch, creates, want)
				}
			} else if st.Launch.SharedSecurityGroup != "" || st.Launch.SecurityGroupID == "" || !slices.Equal(got, []string{st.Launch.SecurityGroupID}) || creates != 1 {
				t.Fatalf("instance groups %v, launch %+v, %d groups created; want a temporary group", got, st.Launch, creates)
			}

			st, err, rounds := e.cleanupUntilDone(st)
			if err != nil {
				t.Fatalf("cleanup: %v", err)
			}
			if c.wantShared && rounds != 1 {
				t.Errorf("cleanup took %d rounds, want 1: nothing waits on the instance's termination", rounds)
			}
			// What cleanup started (the termination) AWS finishes.
			e.cloud.Advance(5 * time.Minute)
			if left := e.cloud.Leftovers(st.BuildID); len(left) > 0 {
				t.Errorf("left after cleanup: %v", left)
			}
			for _, id := range []string{ssh, isolated, e.provSG} {
				if _, ok := e.cloud.Group(testRegion, id); !ok {
					t.Errorf("cleanup deleted the stack's group %s", id)
				}
			}
		})
	}
}

// group adds a security group to vpc admitting SSH from the group sshFrom
// and from the CIDR cidr, where set.
func (e *stageEnv) group(vpc, sshFrom, cidr string) string {
	e.t.Helper()
	id := e.cloud.AddSecurityGroup(testRegion, vpc, "stack-"+vpc+"-"+sshFrom+cidr)
	perm := ec2types.IpPermission{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(22), ToPort: aws.Int32(22)}
	if sshFrom != "" {
		perm.UserIdGroupPairs = []ec2types.UserIdGroupPair{{GroupId: aws.String(sshFrom)}}
	}
	if cidr != "" {
		perm.IpRanges = []ec2types.IpRange{{CidrIp: aws.String(cidr)}}
	}
	if sshFrom == "" && cidr == "" {
		return id
	}
	_, err := e.cloud.EC2(testRegion).AuthorizeSecurityGroupIngress(context.Background(), &ec2.AuthorizeSecurityGroupIngressInput{
		GroupId: aws.String(id), IpPermissions: []ec2types.IpPermission{perm},
	})
	if err != nil {
		e.t.Fatalf("AuthorizeSecurityGroupIngress: %v", err)
	}
	return id
}
