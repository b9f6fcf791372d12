// Command retention is kiln's retention job as an AWS Lambda function
// (provided.al2023), started by the stack's schedule. It only wires: the
// job's logic is bake.Retention.
//
// Settings: bake.ConfigFromEnv, the policy from KILN_RETENTION_KEEP and
// KILN_RETENTION_DAYS (or KILN_KEEP and KILN_MAX_AGE_DAYS) and
// KILN_RETENTION_DEPRECATE_DAYS, and the Regions from KILN_REGIONS.
package main

import (
	"github.com/aws/aws-lambda-go/lambda"

	"github.com/kiln-dev/kiln/functions/internal/lambdamain"
	"github.com/kiln-dev/kiln/pkg/bake"
)

func main() {
	log, aws := lambdamain.Setup()
	policy, err := bake.RetentionPolicyFromEnv()
	if err != nil {
		lambdamain.Exit(log, "retention settings", err)
	}
	job := bake.NewRetention(aws, bake.ConfigFromEnv(), policy, bake.RegionsFromEnv())
	lambda.Start(bake.JobHandler("retention", job.Handle, log))
}
