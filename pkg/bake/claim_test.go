package bake

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// TestClaimDedupesRepeatedEvents: the first execution of a build claims it;
// a second execution of the same build (a repeated S3 event) is told it is a
// duplicate; a retry of the first execution's own plan goes on.
func TestClaimDedupesRepeatedEvents(t *testing.T) {
	e := newStageEnv(t)
	ctx := context.Background()
	st := State{BuildID: "app-0123456789ab"}
	first := "arn:aws:states:us-east-1:123456789012:execution:kiln:one"
	second := "arn:aws:states:us-east-1:123456789012:execution:kiln:two"

	got, err := e.launch.Claim(ctx, st, first)
	if err != nil || got.DuplicateOf != "" {
		t.Fatalf("Claim(first) = %+v, %v; want the claim", got.DuplicateOf, err)
	}
	got, err = e.launch.Claim(ctx, st, first)
	if err != nil || got.DuplicateOf != "" {
		t.Errorf("Claim(first again) = %q, %v; want its own claim honoured", got.DuplicateOf, err)
	}
	got, err = e.launch.Claim(ctx, st, second)
	if err != nil || got.DuplicateOf != first {
		t.Errorf("Claim(second) = %q, %v; want DuplicateOf %s", got.DuplicateOf, err, first)
	}
	// A direct call (no execution) claims nothing.
	got, err = e.launch.Claim(ctx, State{BuildID: "app-fedcba987654"}, "")
	if err != nil || got.DuplicateOf != "" {
		t.Errorf("Claim(no execution) = %q, %v", got.DuplicateOf, err)
	}
	if _, err := e.cloud.S3().GetObject(ctx, s3Get(testBucket, ClaimKey("app-fedcba987654"))); err == nil {
		t.Errorf("a claim was written for a call without an execution")
	}
}

func s3Get(bucket, key string) *s3.GetObjectInput {
	return &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)}
}
