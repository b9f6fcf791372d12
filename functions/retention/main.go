// Command retention is kiln's retention job as an AWS Lambda function
// (provided.al2023), started by the stack's schedule. It only wires: the
// job's logic is bake.Retention.
//
// Settings: bake.ConfigFromEnv, the policy from KILN_RETENTION_KEEP and
// KILN_RETENTION_DAYS (or KILN_KEEP and KILN_MAX_AGE_DAYS) and
// KILN_RETENTION_DEPRECATE_DAYS, and the Regions from KILN_REGIONS.
package main

import (
	"context"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/config"

	"github.com/kiln-dev/kiln/pkg/bake"
)

func main() {
	log := bake.NewJSONLogger(os.Stdout)
	cfg, err := config.LoadDefaultConfig(context.Background())
	if err != nil {
		log.Error("load AWS config", "error", err.Error())
		os.Exit(1)
	}
	policy, err := bake.RetentionPolicyFromEnv()
	if err != nil {
		log.Error("retention settings", "error", err.Error())
		os.Exit(1)
	}
	job := bake.NewRetention(&bake.AWS{Config: cfg}, bake.ConfigFromEnv(), policy, bake.RegionsFromEnv())
	lambda.Start(bake.JobHandler("retention", job.Handle, log))
}
