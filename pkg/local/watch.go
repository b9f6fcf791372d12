package local

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/kiln-dev/kiln/pkg/bake"
)

// versionLister lists a bucket's object versions.
type versionLister interface {
	s3.ListObjectVersionsAPIClient
}

// Watcher is the local stand-in for the stack's S3 → EventBridge rule,
// which starts a bake for every object created under recipes/: moto keeps
// EventBridge rules but delivers no S3 event to their targets, so the
// watcher lists the prefix's object versions (ListObjectVersions) and
// reports each version it has not seen, the way the rule would deliver one
// "Object Created" event per version.
//
// Baseline marks what is there already, which no event announces, and Poll
// returns the new versions since, oldest first. Delete markers are not
// creations and are skipped. A version is reported once; that an event can
// still arrive twice (EventBridge delivers at least once) is the bakes'
// business, which refuse a build started before.
type Watcher struct {
	// S3 lists the bucket.
	S3 versionLister
	// Bucket and Prefix are what to watch (bake.RecipePrefix).
	Bucket, Prefix string

	seen map[string]bool
}

// Baseline records the versions under the prefix now as seen, and returns
// how many there are.
func (w *Watcher) Baseline(ctx context.Context) (int, error) {
	vs, err := w.list(ctx)
	if err != nil {
		return 0, err
	}
	w.seen = map[string]bool{}
	for _, v := range vs {
		w.seen[v.id] = true
	}
	return len(vs), nil
}

// Poll returns the object versions created under the prefix since the
// last Poll (or Baseline), oldest first.
func (w *Watcher) Poll(ctx context.Context) ([]bake.RecipeRef, error) {
	vs, err := w.list(ctx)
	if err != nil {
		return nil, err
	}
	if w.seen == nil {
		w.seen = map[string]bool{}
	}
	var fresh []objectVersion
	for _, v := range vs {
		if !w.seen[v.id] {
			w.seen[v.id] = true
			fresh = append(fresh, v)
		}
	}
	sort.SliceStable(fresh, func(i, j int) bool { return fresh[i].modified.Before(fresh[j].modified) })
	out := make([]bake.RecipeRef, len(fresh))
	for i, v := range fresh {
		out[i] = v.ref
	}
	return out, nil
}

type objectVersion struct {
	ref      bake.RecipeRef
	id       string // what tells this creation from every other
	modified time.Time
}

func (w *Watcher) list(ctx context.Context) ([]objectVersion, error) {
	var out []objectVersion
	p := s3.NewListObjectVersionsPaginator(w.S3, &s3.ListObjectVersionsInput{Bucket: aws.String(w.Bucket), Prefix: aws.String(w.Prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list object versions in s3://%s/%s: %w", w.Bucket, w.Prefix, err)
		}
		for _, v := range page.Versions {
			key, version := aws.ToString(v.Key), aws.ToString(v.VersionId)
			modified := aws.ToTime(v.LastModified)
			id := key + "\x00" + version
			if version == "" || version == "null" {
				// Versioning is off (or suspended): an overwrite keeps
				// the "null" version, so tell creations apart by time
				// and content, and let the bake read the current object.
				id += "\x00" + modified.Format(time.RFC3339Nano) + aws.ToString(v.ETag)
				version = ""
			}
			out = append(out, objectVersion{
				ref:      bake.RecipeRef{Bucket: w.Bucket, Key: key, Version: version},
				id:       id,
				modified: modified,
			})
		}
	}
	return out, nil
}
