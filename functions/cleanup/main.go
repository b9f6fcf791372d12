// Command cleanup is kiln's cleanup stage as an AWS Lambda function
// (provided.al2023). It only wires: the stage's logic is bake.Cleanup.
package main

import (
	"github.com/aws/aws-lambda-go/lambda"

	"github.com/kiln-dev/kiln/functions/internal/lambdamain"
	"github.com/kiln-dev/kiln/pkg/bake"
)

func main() {
	log, aws := lambdamain.Setup()
	stage := bake.NewCleanup(aws, bake.ConfigFromEnv())
	lambda.Start(bake.Handler("cleanup", stage.Actions(), log))
}
