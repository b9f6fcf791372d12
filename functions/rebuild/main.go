// Command rebuild is kiln's rebuild job as an AWS Lambda function
// (provided.al2023), started by the stack's schedule. It only wires: the
// job's logic is bake.Rebuild, and it starts bakes on the state machine
// KILN_STATE_MACHINE_ARN.
//
// Settings: bake.ConfigFromEnv and KILN_REBUILD_MAX_AGE_DAYS.
package main

import (
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/service/sfn"

	"github.com/kiln-dev/kiln/functions/internal/lambdamain"
	"github.com/kiln-dev/kiln/pkg/bake"
)

func main() {
	log, aws := lambdamain.Setup()
	maxAge, err := bake.RebuildMaxAgeFromEnv()
	if err != nil {
		lambdamain.Exit(log, "rebuild settings", err)
	}
	bakes := bake.NewStepFunctions(sfn.NewFromConfig(aws.Config), os.Getenv("KILN_STATE_MACHINE_ARN"))
	job := bake.NewRebuild(aws, bake.ConfigFromEnv(), bakes, maxAge)
	lambda.Start(bake.JobHandler("rebuild", job.Handle, log))
}
