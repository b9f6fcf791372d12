// Package local is kiln's local mode: a stand-in for AWS on this machine,
// on which `kiln bake --local` runs the same state machine definition and
// the same stage code as the Lambdas do.
//
// The stand-in is moto (an AWS emulator, started here on a free loopback
// port or, when AWS_ENDPOINT_URL is set, one the user already runs) plus
// one throwaway sandbox per build instance: a real OpenSSH sshd on
// 127.0.0.1 serving a copy-on-write view of this machine's root, where the
// recipe's commands run. moto's instances are only records with
// unreachable 10.x addresses, so the Cloud plays the hypervisor's and
// cloud-init's part: it starts a sandbox for an instance the first time
// provisioning asks for its address, with the host key and login key from
// the instance's user data, and it captures what provisioning changed as
// the local image's content when the image is made.
package local

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/kiln-dev/kiln/pkg/bake"
	"github.com/kiln-dev/kiln/pkg/emulator"
	"github.com/kiln-dev/kiln/pkg/sandbox"
)

// DefaultRegion is the Region local bakes use when a recipe names none.
const DefaultRegion = "us-east-1"

// DefaultBucket is the local stand-in for the stack's kiln bucket.
const DefaultBucket = "kiln-local"

// Options configures Start.
type Options struct {
	// Endpoint is an emulator to use instead of starting moto. Empty means
	// $AWS_ENDPOINT_URL if set, else a new moto server.
	Endpoint string
	// Bucket is the kiln bucket; DefaultBucket if empty.
	Bucket string
	// Log receives the emulator's and sandboxes' diagnostics; discarded
	// if nil.
	Log io.Writer
}

// Cloud is a running local stand-in for AWS.
type Cloud struct {
	endpoint string
	server   *emulator.Server // nil when the emulator is someone else's
	bucket   string
	log      io.Writer

	mu sync.Mutex
	// groups are the security groups standing for the stack's (the
	// provisioning Lambda's, the build instances'), by "<region>/<name>".
	groups    map[string]string
	sandboxes map[string]*sandbox.Sandbox // by instance ID
	captured  map[string]bool             // image IDs whose content is stored
	agent     *Agent                      // the SSM agent's stand-in, once asked for
	profile   string                      // the build instance profile, once made
}

// Start starts (or connects to) the emulator and prepares what the stack
// would have created: the versioned kiln bucket.
func Start(ctx context.Context, opts Options) (*Cloud, error) {
	c := &Cloud{
		bucket:    opts.Bucket,
		log:       opts.Log,
		groups:    map[string]string{},
		sandboxes: map[string]*sandbox.Sandbox{},
		captured:  map[string]bool{},
	}
	if c.bucket == "" {
		c.bucket = DefaultBucket
	}
	if c.log == nil {
		c.log = io.Discard
	}
	c.endpoint = opts.Endpoint
	if c.endpoint == "" {
		c.endpoint, _ = emulator.ExternalEndpoint()
	}
	if c.endpoint == "" {
		srv, err := emulator.Start(ctx, emulator.Options{Log: c.log})
		if err != nil {
			return nil, fmt.Errorf("start local AWS emulator: %w", err)
		}
		c.server = srv
		c.endpoint = srv.Endpoint()
	}
	if err := c.ensureBucket(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Endpoint is the emulator's URL.
func (c *Cloud) Endpoint() string { return c.endpoint }

// Bucket is the kiln bucket.
func (c *Cloud) Bucket() string { return c.bucket }

// External reports whether the emulator belongs to someone else (kiln must
// leave its other contents alone).
func (c *Cloud) External() bool { return c.server == nil }

// Config returns an SDK config for region pointed at the emulator.
func (c *Cloud) Config(region string) aws.Config {
	cfg, err := emulator.Config(context.Background(), c.endpoint, region)
	if err != nil {
		// The endpoint was validated when the cloud started.
		panic(err)
	}
	return cfg
}

// EC2 returns an EC2 client for region.
func (c *Cloud) EC2(region string) *ec2.Client { return ec2.NewFromConfig(c.Config(region)) }

// SSM returns an SSM client for region.
func (c *Cloud) SSM(region string) *ssm.Client { return ssm.NewFromConfig(c.Config(region)) }

// Logs returns a CloudWatch Logs client for region.
func (c *Cloud) Logs(region string) *cloudwatchlogs.Client {
	return cloudwatchlogs.NewFromConfig(c.Config(region))
}

// S3 returns an S3 client (path-style, as the emulator needs).
func (c *Cloud) S3() *s3.Client { return s3.NewFromConfig(c.Config(DefaultRegion), emulator.S3Options) }

// EventBridge returns an EventBridge client for region.
func (c *Cloud) EventBridge(region string) *eventbridge.Client {
	return eventbridge.NewFromConfig(c.Config(region))
}

// Close stops every sandbox and, if it started one, the emulator.
func (c *Cloud) Close() error {
	c.mu.Lock()
	boxes := c.sandboxes
	c.sandboxes = map[string]*sandbox.Sandbox{}
	c.mu.Unlock()
	var errs []error
	for id, sb := range boxes {
		if err := sb.Stop(); err != nil && !errors.Is(err, sandbox.ErrStopped) {
			errs = append(errs, fmt.Errorf("stop sandbox of %s: %w", id, err))
		}
	}
	if c.server != nil {
		if err := c.server.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("stop emulator: %w", err))
		}
	}
	return errors.Join(errs...)
}

func (c *Cloud) ensureBucket(ctx context.Context) error {
	s3c := c.S3()
	_, err := s3c.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(c.bucket)})
	if err != nil {
		if _, err := s3c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(c.bucket)}); err != nil {
			return fmt.Errorf("create bucket %s: %w", c.bucket, err)
		}
	}
	_, err = s3c.PutBucketVersioning(ctx, &s3.PutBucketVersioningInput{
		Bucket:                  aws.String(c.bucket),
		VersioningConfiguration: &s3types.VersioningConfiguration{Status: s3types.BucketVersioningStatusEnabled},
	})
	if err != nil {
		return fmt.Errorf("enable versioning on %s: %w", c.bucket, err)
	}
	return nil
}

// ProvisionerSecurityGroup returns the security group standing for the
// provisioning Lambda's in region's default VPC, creating it once. Build
// instances' groups admit SSH from it only, as in AWS.
func (c *Cloud) ProvisionerSecurityGroup(ctx context.Context, region string) (string, error) {
	return c.securityGroup(ctx, region, "kiln-local-provisioner", "stands for kiln's provisioning Lambda in local mode", "")
}

// InstanceSecurityGroups returns the groups the stack gives build
// instances in its VPC, here in region's default VPC, creating them once:
// one admitting SSH from the provisioner only (KILN_INSTANCE_SECURITY_GROUP)
// and one admitting nothing (KILN_ISOLATED_SECURITY_GROUP).
func (c *Cloud) InstanceSecurityGroups(ctx context.Context, region string) (ssh, isolated string, err error) {
	provisioner, err := c.ProvisionerSecurityGroup(ctx, region)
	if err != nil {
		return "", "", err
	}
	if ssh, err = c.securityGroup(ctx, region, "kiln-local-instances-ssh", "kiln build instances: SSH from the provisioner only", provisioner); err != nil {
		return "", "", err
	}
	if isolated, err = c.securityGroup(ctx, region, "kiln-local-instances-isolated", "kiln build instances: no inbound traffic", ""); err != nil {
		return "", "", err
	}
	return ssh, isolated, nil
}

// securityGroup finds or creates the group name in region's default VPC,
// admitting SSH from sshFrom if that is set and nothing else.
func (c *Cloud) securityGroup(ctx context.Context, region, name, desc, sshFrom string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if id, ok := c.groups[region+"/"+name]; ok {
		return id, nil
	}
	e := c.EC2(region)
	find := func() (string, error) {
		out, err := e.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{
			Filters: []ec2types.Filter{{Name: aws.String("group-name"), Values: []string{name}}},
		})
		if err != nil {
			return "", fmt.Errorf("find security group %s: %w", name, err)
		}
		if len(out.SecurityGroups) == 0 {
			return "", nil
		}
		c.groups[region+"/"+name] = aws.ToString(out.SecurityGroups[0].GroupId)
		return c.groups[region+"/"+name], nil
	}
	if id, err := find(); id != "" || err != nil {
		return id, err
	}
	vpcs, err := e.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{
		Filters: []ec2types.Filter{{Name: aws.String("is-default"), Values: []string{"true"}}},
	})
	if err != nil || len(vpcs.Vpcs) == 0 {
		return "", fmt.Errorf("find the default VPC in %s: %v", region, err)
	}
	sg, err := e.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{
		GroupName:   aws.String(name),
		Description: aws.String(desc),
		VpcId:       vpcs.Vpcs[0].VpcId,
	})
	if bake.AWSCode(err) == "InvalidGroup.Duplicate" {
		// Another Cloud on the same emulator made it just now.
		return find()
	}
	if err != nil {
		return "", fmt.Errorf("create security group %s: %w", name, err)
	}
	id := aws.ToString(sg.GroupId)
	if sshFrom != "" {
		_, err := e.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{
			GroupId: aws.String(id),
			IpPermissions: []ec2types.IpPermission{{
				IpProtocol: aws.String("tcp"), FromPort: aws.Int32(22), ToPort: aws.Int32(22),
				UserIdGroupPairs: []ec2types.UserIdGroupPair{{GroupId: aws.String(sshFrom)}},
			}},
		})
		if err != nil {
			return "", fmt.Errorf("allow SSH into security group %s: %w", name, err)
		}
	}
	c.groups[region+"/"+name] = id
	return id, nil
}

// localProfile is the local stand-in for the stack's build instance
// profile, which session_manager builds get.
const localProfile = "kiln-local-build"

// BuildInstanceProfile returns the build instance profile, as the stack
// provides it (KILN_INSTANCE_PROFILE), creating it in the emulator once:
// EC2 launches an instance only with a profile that exists.
func (c *Cloud) BuildInstanceProfile(ctx context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.profile != "" {
		return c.profile, nil
	}
	i := iam.NewFromConfig(c.Config(DefaultRegion))
	_, err := i.GetInstanceProfile(ctx, &iam.GetInstanceProfileInput{InstanceProfileName: aws.String(localProfile)})
	if bake.AWSCode(err) == "NoSuchEntity" {
		trust := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}`
		if _, err := i.CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String(localProfile), AssumeRolePolicyDocument: aws.String(trust)}); err != nil && bake.AWSCode(err) != "EntityAlreadyExists" {
			return "", fmt.Errorf("create role %s: %w", localProfile, err)
		}
		// Another Cloud on the same emulator may be making it too: what
		// it made first is as good.
		_, err := i.CreateInstanceProfile(ctx, &iam.CreateInstanceProfileInput{InstanceProfileName: aws.String(localProfile)})
		switch {
		case bake.AWSCode(err) == "EntityAlreadyExists":
		case err != nil:
			return "", fmt.Errorf("create instance profile %s: %w", localProfile, err)
		default:
			_, err := i.AddRoleToInstanceProfile(ctx, &iam.AddRoleToInstanceProfileInput{InstanceProfileName: aws.String(localProfile), RoleName: aws.String(localProfile)})
			if err != nil && bake.AWSCode(err) != "LimitExceeded" {
				return "", fmt.Errorf("add role to instance profile %s: %w", localProfile, err)
			}
		}
	} else if err != nil {
		return "", fmt.Errorf("find instance profile %s: %w", localProfile, err)
	}
	c.profile = localProfile
	return c.profile, nil
}

// addSandbox records the sandbox standing in for instance id.
func (c *Cloud) addSandbox(id string, sb *sandbox.Sandbox) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sandboxes[id] = sb
}

// Resolve is the provision stage's address override in local mode: it
// returns the SSH address of the sandbox standing in for the build's
// instance, starting the sandbox the first time, the way the instance would
// boot and run cloud-init: with the host key and the login user and key that
// kiln put in the instance's user data.
func (c *Cloud) Resolve(ctx context.Context, st bake.State) (string, error) {
	if st.Launch == nil || st.Launch.InstanceID == "" {
		return "", fmt.Errorf("resolve instance address: the state has no instance")
	}
	id := st.Launch.InstanceID
	c.mu.Lock()
	sb, ok := c.sandboxes[id]
	c.mu.Unlock()
	if ok {
		return sb.Addr(), nil
	}
	attr, err := c.EC2(st.Launch.Region).DescribeInstanceAttribute(ctx, &ec2.DescribeInstanceAttributeInput{
		InstanceId: aws.String(id),
		Attribute:  ec2types.InstanceAttributeNameUserData,
	})
	if err != nil {
		return "", fmt.Errorf("read user data of %s: %w", id, err)
	}
	if attr.UserData == nil || attr.UserData.Value == nil {
		return "", fmt.Errorf("instance %s has no user data: kiln's cloud-config is missing", id)
	}
	raw, err := base64.StdEncoding.DecodeString(aws.ToString(attr.UserData.Value))
	if err != nil {
		return "", fmt.Errorf("decode user data of %s: %w", id, err)
	}
	boot, err := bake.ParseKilnUserData(raw)
	if err != nil {
		return "", fmt.Errorf("user data of %s: %w", id, err)
	}
	if len(boot.HostKey) == 0 {
		return "", fmt.Errorf("user data of %s: kiln's cloud-config has no SSH host key", id)
	}
	sb, err = sandbox.Start(ctx, sandbox.Options{
		HostKey:        []byte(boot.HostKey),
		AuthorizedKeys: boot.AuthorizedKeys,
		User:           boot.User,
	})
	if err != nil {
		return "", fmt.Errorf("boot sandbox for %s: %w", id, err)
	}
	c.mu.Lock()
	c.sandboxes[id] = sb
	c.mu.Unlock()
	fmt.Fprintf(c.log, "sandbox for %s listening on %s as %s\n", id, sb.Addr(), sb.User())
	return sb.Addr(), nil
}

// CaptureImage stores what provisioning changed in the instance's sandbox
// as the image's content: s3://<bucket>/images/<image-id>.tar.gz, so that a
// local AMI is more than a name. An instance without a sandbox (nothing was
// provisioned) gives an empty layer.
func (c *Cloud) CaptureImage(ctx context.Context, instanceID, imageID string) error {
	c.mu.Lock()
	sb := c.sandboxes[instanceID]
	done := c.captured[imageID]
	c.mu.Unlock()
	if done || imageID == "" {
		return nil
	}
	var buf bytes.Buffer
	if sb != nil {
		if err := sb.Capture(&buf); err != nil {
			return fmt.Errorf("capture sandbox of %s: %w", instanceID, err)
		}
	}
	_, err := c.S3().PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(c.bucket),
		Key:    aws.String(ImageContentKey(imageID)),
		Body:   bytes.NewReader(buf.Bytes()),
	})
	if err != nil {
		return fmt.Errorf("store content of %s: %w", imageID, err)
	}
	c.mu.Lock()
	c.captured[imageID] = true
	c.mu.Unlock()
	return nil
}

// ImageContentKey is where a local image's content is stored.
func ImageContentKey(imageID string) string { return "images/" + imageID + ".tar.gz" }

// StopSandbox stops the sandbox of a terminated instance.
func (c *Cloud) StopSandbox(instanceID string) {
	c.mu.Lock()
	sb := c.sandboxes[instanceID]
	delete(c.sandboxes, instanceID)
	agent := c.agent
	c.mu.Unlock()
	if agent != nil {
		agent.stop(instanceID)
	}
	if sb != nil {
		_ = sb.Stop()
	}
}

// Sandboxes returns how many sandboxes are running.
func (c *Cloud) Sandboxes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.sandboxes)
}

// Upload puts a recipe into the kiln bucket as an upload would: a template
// file as it is, a folder as a bundle. It returns the object's location
// and version, the state machine's input.
func (c *Cloud) Upload(ctx context.Context, path string) (bake.RecipeRef, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return bake.RecipeRef{}, fmt.Errorf("upload recipe: %w", err)
	}
	name := bake.RecipeName(path)
	var body []byte
	key := "recipes/"
	switch {
	case fi.IsDir():
		var buf bytes.Buffer
		if err := bake.WriteBundle(path, &buf, "tar.gz"); err != nil {
			return bake.RecipeRef{}, fmt.Errorf("bundle %s: %w", path, err)
		}
		body, key = buf.Bytes(), key+name+".tar.gz"
	default:
		body, err = os.ReadFile(path)
		if err != nil {
			return bake.RecipeRef{}, fmt.Errorf("upload recipe: %w", err)
		}
		key += fi.Name()
	}
	out, err := c.S3().PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(c.bucket),
		Key:    aws.String(key),
		Body:   bytes.NewReader(body),
	})
	if err != nil {
		return bake.RecipeRef{}, fmt.Errorf("upload recipe to s3://%s/%s: %w", c.bucket, key, err)
	}
	return bake.RecipeRef{Bucket: c.bucket, Key: key, Version: aws.ToString(out.VersionId)}, nil
}
