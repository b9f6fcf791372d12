package bake

// Additions to the shared fake (fakeaws_test.go) that the retention and
// rebuild tests need: launch templates, instances seeded on an image,
// kiln-tagged images with tagged snapshots, and S3 HeadObject.
//
// Launch templates follow AWS (API_DescribeLaunchTemplateVersions): without
// a template ID or name, Versions may only hold $Latest and $Default and
// the answer lists those versions of every template (one entry when they
// are the same version); with one, Versions may also hold numbers. An image
// may be given as resolve:ssm:<parameter>; ResolveAlias answers the
// parameter's value instead, as AWS does.

import (
	"context"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// fakeLaunchTemplate is a launch template: Images[n-1] is version n's
// image.
type fakeLaunchTemplate struct {
	ID, Name string
	Default  int64
	Images   []string
}

// fakeTemplates holds each fake world's launch templates, by Region and
// ID (fakeRegion has no field for them).
var fakeTemplates = struct {
	sync.Mutex
	m map[*fakeCloud]map[string]map[string]*fakeLaunchTemplate
}{m: map[*fakeCloud]map[string]map[string]*fakeLaunchTemplate{}}

func (c *fakeCloud) templatesLocked(region string) map[string]*fakeLaunchTemplate {
	byRegion := fakeTemplates.m[c]
	if byRegion == nil {
		byRegion = map[string]map[string]*fakeLaunchTemplate{}
		fakeTemplates.m[c] = byRegion
	}
	if byRegion[region] == nil {
		byRegion[region] = map[string]*fakeLaunchTemplate{}
	}
	return byRegion[region]
}

// AddLaunchTemplate seeds a launch template whose versions 1, 2, ... name
// images (an AMI ID or resolve:ssm:<parameter>); version 1 is the default.
// It returns the template's ID.
func (c *fakeCloud) AddLaunchTemplate(region, name string, images ...string) string {
	c.mu.Lock()
	id := c.nextID("lt")
	c.mu.Unlock()
	fakeTemplates.Lock()
	defer fakeTemplates.Unlock()
	c.templatesLocked(region)[id] = &fakeLaunchTemplate{ID: id, Name: name, Default: 1, Images: images}
	return id
}

// SetDefaultVersion makes version v a template's default.
func (c *fakeCloud) SetDefaultVersion(region, id string, v int64) {
	fakeTemplates.Lock()
	defer fakeTemplates.Unlock()
	c.templatesLocked(region)[id].Default = v
}

func (f *fakeEC2) DescribeLaunchTemplateVersions(ctx context.Context, in *ec2.DescribeLaunchTemplateVersionsInput, optFns ...func(*ec2.Options)) (*ec2.DescribeLaunchTemplateVersionsOutput, error) {
	c := f.c
	region := f.regionOf(optFns)
	return fakeDo(ctx, c, region, "DescribeLaunchTemplateVersions", func(r *fakeRegion) (*ec2.DescribeLaunchTemplateVersionsOutput, error) {
		fakeTemplates.Lock()
		defer fakeTemplates.Unlock()
		templates := c.templatesLocked(region)
		type entry struct {
			t *fakeLaunchTemplate
			v int64
		}
		var entries []entry
		add := func(t *fakeLaunchTemplate, v int64) {
			if !slices.Contains(entries, entry{t, v}) {
				entries = append(entries, entry{t, v})
			}
		}
		id := aws.ToString(in.LaunchTemplateId)
		if id == "" && in.LaunchTemplateName == nil {
			if len(in.Versions) == 0 {
				return nil, fakeAPIErr("MissingParameter", "to describe every launch template, Versions must hold $Latest or $Default")
			}
			for _, id := range slices.Sorted(maps.Keys(templates)) {
				t := templates[id]
				for _, v := range in.Versions {
					switch v {
					case "$Latest":
						add(t, int64(len(t.Images)))
					case "$Default":
						add(t, t.Default)
					default:
						return nil, fakeAPIErr("InvalidParameterValue", "version %q: without a template, only $Latest and $Default", v)
					}
				}
			}
		} else {
			t := templates[id]
			for _, x := range templates {
				if in.LaunchTemplateName != nil && x.Name == aws.ToString(in.LaunchTemplateName) {
					t = x
				}
			}
			if t == nil {
				return nil, fakeAPIErr("InvalidLaunchTemplateId.NotFound", "launch template %s does not exist", id)
			}
			for _, v := range in.Versions {
				switch v {
				case "$Latest":
					add(t, int64(len(t.Images)))
				case "$Default":
					add(t, t.Default)
				default:
					n, err := strconv.ParseInt(v, 10, 64)
					if err != nil || n < 1 || n > int64(len(t.Images)) {
						return nil, fakeAPIErr("InvalidLaunchTemplateId.VersionNotFound", "version %s of %s does not exist", v, t.ID)
					}
					add(t, n)
				}
			}
		}
		start := 0
		if in.NextToken != nil {
			start, _ = strconv.Atoi(*in.NextToken)
		}
		limit := int(aws.ToInt32(in.MaxResults))
		if limit <= 0 || limit > 200 {
			limit = 200
		}
		out := &ec2.DescribeLaunchTemplateVersionsOutput{}
		end := min(start+limit, len(entries))
		for _, e := range entries[min(start, end):end] {
			image := e.t.Images[e.v-1]
			if p, ok := strings.CutPrefix(image, "resolve:ssm:"); ok && aws.ToBool(in.ResolveAlias) {
				if param := r.params[p]; param != nil {
					image = aws.ToString(param.Value)
				}
			}
			data := &ec2types.ResponseLaunchTemplateData{}
			if image != "" {
				data.ImageId = aws.String(image)
			}
			out.LaunchTemplateVersions = append(out.LaunchTemplateVersions, ec2types.LaunchTemplateVersion{
				LaunchTemplateId: aws.String(e.t.ID), LaunchTemplateName: aws.String(e.t.Name),
				VersionNumber: aws.Int64(e.v), DefaultVersion: aws.Bool(e.v == e.t.Default), LaunchTemplateData: data,
			})
		}
		if end < len(entries) {
			out.NextToken = aws.String(strconv.Itoa(end))
		}
		return out, nil
	})
}

// AddInstanceOf seeds an instance of image in state (running, stopped or
// terminated) and returns its ID.
func (c *fakeCloud) AddInstanceOf(region, image string, state ec2types.InstanceStateName) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.regionLocked(region)
	id := c.nextID("i")
	in := &fakeInstance{Instance: ec2types.Instance{
		InstanceId: aws.String(id), ImageId: aws.String(image), InstanceType: ec2types.InstanceTypeT3Micro,
		LaunchTime: aws.Time(c.now),
	}, Reservation: c.nextID("r"), created: c.now}
	c.setInstanceState(r, in, state, 0)
	r.instances[id] = in
	return id
}

// TagImageSnapshots sets tags on the snapshots of an image's block device
// mappings, as the snapshot stage does once the image is available.
func (c *fakeCloud) TagImageSnapshots(region, image string, tags map[string]string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.regionLocked(region)
	img := r.images[image]
	if img == nil {
		panic("TagImageSnapshots: no image " + image + " in " + region)
	}
	ids := imageSnapshotIDs(img.Image)
	for _, id := range ids {
		r.snapshots[id].Tags = fakeMergeTags(r.snapshots[id].Tags, fakeTags(tags))
	}
	return ids
}

// AddSnapshot seeds a completed snapshot started at start with tags and
// returns its ID.
func (c *fakeCloud) AddSnapshot(region string, start time.Time, tags map[string]string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.regionLocked(region)
	id := c.nextID("snap")
	r.snapshots[id] = &fakeSnapshot{Snapshot: ec2types.Snapshot{
		SnapshotId: aws.String(id), OwnerId: aws.String(c.account), State: ec2types.SnapshotStateCompleted,
		VolumeSize: aws.Int32(8), StartTime: aws.Time(start), Tags: fakeTags(tags), Progress: aws.String("100%"),
		VolumeId: aws.String("vol-ffffffff"), Encrypted: aws.Bool(false),
	}}
	return id
}

// SetImageDeprecation sets an image's deprecation time (seeding).
func (c *fakeCloud) SetImageDeprecation(region, image string, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.regionLocked(region).images[image].DeprecationTime = aws.String(fakeTime(at))
}

// HeadObject answers an object's metadata; a missing key is NotFound, as
// S3 answers a HEAD (no body, so no NoSuchKey).
func (f *fakeS3) HeadObject(ctx context.Context, in *s3.HeadObjectInput, optFns ...func(*s3.Options)) (*s3.HeadObjectOutput, error) {
	c := f.c
	return fakeDo(ctx, c, "", "HeadObject", func(*fakeRegion) (*s3.HeadObjectOutput, error) {
		b, err := c.bucketLocked(aws.ToString(in.Bucket))
		if err != nil {
			return nil, err
		}
		o := b.current[aws.ToString(in.Key)]
		if in.VersionId != nil {
			o = b.versions[*in.VersionId]
		}
		if o == nil || o.Key != aws.ToString(in.Key) {
			return nil, fakeAPIErr("NotFound", "Not Found")
		}
		return &s3.HeadObjectOutput{
			VersionId: aws.String(o.Version), ContentLength: aws.Int64(int64(len(o.Body))),
			ETag: aws.String(`"` + o.Version + `"`), LastModified: aws.Time(o.Modified),
		}, nil
	})
}

// SetImagePending makes an image pending for d (a bake or copy still
// making it).
func (c *fakeCloud) SetImagePending(region, image string, d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	img := c.regionLocked(region).images[image]
	img.State, img.until = ec2types.ImageStatePending, c.now.Add(d)
}
