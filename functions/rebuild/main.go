// Command rebuild is kiln's rebuild job as an AWS Lambda function
// (provided.al2023), started by the stack's schedule. It only wires: the
// job's logic is bake.Rebuild, and it starts bakes on the state machine
// KILN_STATE_MACHINE_ARN.
//
// Settings: bake.ConfigFromEnv and KILN_REBUILD_MAX_AGE_DAYS.
package main

import (
	"context"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sfn"

	"github.com/kiln-dev/kiln/pkg/bake"
)

func main() {
	log := bake.NewJSONLogger(os.Stdout)
	cfg, err := config.LoadDefaultConfig(context.Background())
	if err != nil {
		log.Error("load AWS config", "error", err.Error())
		os.Exit(1)
	}
	maxAge, err := bake.RebuildMaxAgeFromEnv()
	if err != nil {
		log.Error("rebuild settings", "error", err.Error())
		os.Exit(1)
	}
	bakes := bake.NewStepFunctions(sfn.NewFromConfig(cfg), os.Getenv("KILN_STATE_MACHINE_ARN"))
	job := bake.NewRebuild(&bake.AWS{Config: cfg}, bake.ConfigFromEnv(), bakes, maxAge)
	lambda.Start(bake.JobHandler("rebuild", job.Handle, log))
}
