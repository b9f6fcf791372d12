package bake

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// objectGetter reads objects (recipes, stored plans).
type objectGetter interface {
	GetObject(ctx context.Context, in *s3.GetObjectInput, optFns ...func(*s3.Options)) (*s3.GetObjectOutput, error)
}

// objectPutter writes objects (plans, manifests).
type objectPutter interface {
	PutObject(ctx context.Context, in *s3.PutObjectInput, optFns ...func(*s3.Options)) (*s3.PutObjectOutput, error)
}

// PlanKey is where a build's evaluated plan is stored in the kiln bucket.
func PlanKey(buildID string) string { return "builds/" + buildID + "/plan.json" }

// ManifestKey is where a build's manifest is stored in the kiln bucket.
func ManifestKey(buildID string) string { return "builds/" + buildID + "/manifest.json" }

// storePlan writes the plan as JSON. The bucket is encrypted and private:
// the plan may hold sensitive variable values, which is why it lives there
// and not in the state machine's state.
func storePlan(ctx context.Context, s3c objectPutter, bucket, key string, p *Plan) error {
	b, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encode plan: %w", err)
	}
	_, err = s3c.PutObject(ctx, &s3.PutObjectInput{
		Bucket:      aws.String(bucket),
		Key:         aws.String(key),
		Body:        bytes.NewReader(b),
		ContentType: aws.String("application/json"),
	})
	if err != nil {
		return fmt.Errorf("store plan s3://%s/%s: %w", bucket, key, err)
	}
	return nil
}

// planCache keeps plans a warm Lambda has read: a stored plan never changes.
var planCache sync.Map // "bucket/key" -> *Plan

// fetchPlan reads the stored plan that ref points at and selects its build.
func fetchPlan(ctx context.Context, s3c objectGetter, ref *PlanRef) (*Plan, *Build, error) {
	if ref == nil {
		return nil, nil, fmt.Errorf("fetch plan: state has no plan")
	}
	cacheKey := ref.Bucket + "/" + ref.Key
	if p, ok := planCache.Load(cacheKey); ok {
		plan := p.(*Plan)
		b, err := plan.Select(ref.Build)
		return plan, b, err
	}
	out, err := s3c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(ref.Bucket), Key: aws.String(ref.Key)})
	if err != nil {
		return nil, nil, fmt.Errorf("fetch plan s3://%s/%s: %w", ref.Bucket, ref.Key, err)
	}
	defer out.Body.Close()
	data, err := io.ReadAll(io.LimitReader(out.Body, 16<<20))
	if err != nil {
		return nil, nil, fmt.Errorf("fetch plan s3://%s/%s: %w", ref.Bucket, ref.Key, err)
	}
	var plan Plan
	if err := json.Unmarshal(data, &plan); err != nil {
		return nil, nil, fmt.Errorf("decode plan s3://%s/%s: %w", ref.Bucket, ref.Key, err)
	}
	planCache.Store(cacheKey, &plan)
	b, err := plan.Select(ref.Build)
	return &plan, b, err
}

// Select returns the build named only ("app" or "amazon-ebs.app"), or the
// plan's only build when only is empty.
func (p *Plan) Select(only string) (*Build, error) {
	if only == "" {
		if len(p.Builds) != 1 {
			names := make([]string, len(p.Builds))
			for i, b := range p.Builds {
				names[i] = b.FullName()
			}
			return nil, fmt.Errorf("recipe %s defines %d builds (%s): choose one with only", p.Name, len(p.Builds), strings.Join(names, ", "))
		}
		return &p.Builds[0], nil
	}
	for i, b := range p.Builds {
		if b.Name == only || b.FullName() == only {
			return &p.Builds[i], nil
		}
	}
	return nil, fmt.Errorf("recipe %s has no build %q", p.Name, only)
}
