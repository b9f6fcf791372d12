package local

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/kiln-dev/kiln/pkg/bake"
)

// Inventory lists the resources a build owns in the emulator, found the
// way an auditor would: by kiln's tag, never by "everything this account
// owns" (the emulator preloads unrelated images and snapshots).
type Inventory struct {
	Instances      []string // not terminated
	Volumes        []string
	SecurityGroups []string
	KeyPairs       []string
	StoredKeys     []string // SSM parameters under the key prefix
	Images         []string // "region:ami-id"
	Snapshots      []string // "region:snap-id"
	StagedObjects  []string
	// LogGroups are session_manager builds' command log groups.
	LogGroups []string
}

// Temporaries lists what must never outlive a build, failed or not.
func (inv Inventory) Temporaries() []string {
	var all []string
	all = append(all, prefixed("instance", inv.Instances)...)
	all = append(all, prefixed("volume", inv.Volumes)...)
	all = append(all, prefixed("security group", inv.SecurityGroups)...)
	all = append(all, prefixed("key pair", inv.KeyPairs)...)
	all = append(all, prefixed("stored key", inv.StoredKeys)...)
	all = append(all, prefixed("staged object", inv.StagedObjects)...)
	all = append(all, prefixed("log group", inv.LogGroups)...)
	return all
}

// All lists every resource, outputs included.
func (inv Inventory) All() []string {
	all := inv.Temporaries()
	all = append(all, prefixed("image", inv.Images)...)
	return append(all, prefixed("snapshot", inv.Snapshots)...)
}

func prefixed(kind string, ids []string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = kind + " " + id
	}
	return out
}

// Take lists the resources of build buildID (or of any kiln build when
// buildID is empty) in each of regions.
func (c *Cloud) Take(ctx context.Context, buildID string, regions []string, conf bake.Config) (Inventory, error) {
	var inv Inventory
	filter := ec2types.Filter{Name: aws.String("tag-key"), Values: []string{bake.TagBuild}}
	if buildID != "" {
		filter = ec2types.Filter{Name: aws.String("tag:" + bake.TagBuild), Values: []string{buildID}}
	}
	slices.Sort(regions)
	for _, region := range slices.Compact(regions) {
		e := c.EC2(region)
		insts, err := e.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []ec2types.Filter{filter}})
		if err != nil {
			return inv, fmt.Errorf("inventory instances in %s: %w", region, err)
		}
		for _, r := range insts.Reservations {
			for _, in := range r.Instances {
				if in.State != nil && in.State.Name != ec2types.InstanceStateNameTerminated {
					inv.Instances = append(inv.Instances, region+":"+aws.ToString(in.InstanceId))
				}
			}
		}
		vols, err := e.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: []ec2types.Filter{filter}})
		if err != nil {
			return inv, fmt.Errorf("inventory volumes in %s: %w", region, err)
		}
		for _, v := range vols.Volumes {
			inv.Volumes = append(inv.Volumes, region+":"+aws.ToString(v.VolumeId))
		}
		sgs, err := e.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []ec2types.Filter{filter}})
		if err != nil {
			return inv, fmt.Errorf("inventory security groups in %s: %w", region, err)
		}
		for _, g := range sgs.SecurityGroups {
			inv.SecurityGroups = append(inv.SecurityGroups, region+":"+aws.ToString(g.GroupId))
		}
		keys, err := e.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{Filters: []ec2types.Filter{filter}})
		if err != nil {
			return inv, fmt.Errorf("inventory key pairs in %s: %w", region, err)
		}
		for _, k := range keys.KeyPairs {
			inv.KeyPairs = append(inv.KeyPairs, region+":"+aws.ToString(k.KeyName))
		}
		imgs, err := e.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}, Filters: []ec2types.Filter{filter}})
		if err != nil {
			return inv, fmt.Errorf("inventory images in %s: %w", region, err)
		}
		for _, im := range imgs.Images {
			inv.Images = append(inv.Images, region+":"+aws.ToString(im.ImageId))
		}
		snaps, err := e.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}, Filters: []ec2types.Filter{filter}})
		if err != nil {
			return inv, fmt.Errorf("inventory snapshots in %s: %w", region, err)
		}
		for _, s := range snaps.Snapshots {
			inv.Snapshots = append(inv.Snapshots, region+":"+aws.ToString(s.SnapshotId))
		}
		groups := conf.CommandLogPrefix + "/"
		if buildID != "" {
			groups += buildID
		}
		lgs := cloudwatchlogs.NewDescribeLogGroupsPaginator(c.Logs(region), &cloudwatchlogs.DescribeLogGroupsInput{LogGroupNamePrefix: aws.String(groups)})
		for lgs.HasMorePages() {
			page, err := lgs.NextPage(ctx)
			if err != nil {
				return inv, fmt.Errorf("inventory log groups in %s: %w", region, err)
			}
			for _, g := range page.LogGroups {
				inv.LogGroups = append(inv.LogGroups, region+":"+aws.ToString(g.LogGroupName))
			}
		}
		path := conf.KeyPrefix
		if buildID != "" {
			path += "/" + buildID
		}
		pager := ssm.NewGetParametersByPathPaginator(c.SSM(region), &ssm.GetParametersByPathInput{Path: aws.String(path), Recursive: aws.Bool(true)})
		for pager.HasMorePages() {
			page, err := pager.NextPage(ctx)
			if err != nil {
				return inv, fmt.Errorf("inventory stored keys in %s: %w", region, err)
			}
			for _, p := range page.Parameters {
				if p.Type == ssmtypes.ParameterTypeSecureString {
					inv.StoredKeys = append(inv.StoredKeys, region+":"+aws.ToString(p.Name))
				}
			}
		}
	}
	prefix := "builds/"
	if buildID != "" {
		prefix += buildID + "/"
	}
	objs := s3.NewListObjectsV2Paginator(c.S3(), &s3.ListObjectsV2Input{Bucket: aws.String(c.bucket), Prefix: aws.String(prefix)})
	for objs.HasMorePages() {
		page, err := objs.NextPage(ctx)
		if err != nil {
			return inv, fmt.Errorf("inventory staged objects: %w", err)
		}
		for _, o := range page.Contents {
			if k := aws.ToString(o.Key); strings.Contains(k, "/staged/") {
				inv.StagedObjects = append(inv.StagedObjects, k)
			}
		}
	}
	return inv, nil
}
