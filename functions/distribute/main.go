// Command distribute is kiln's distribute stage as an AWS Lambda function
// (provided.al2023). It only wires: the stage's logic is bake.Distribute.
package main

import (
	"github.com/aws/aws-lambda-go/lambda"

	"github.com/kiln-dev/kiln/functions/internal/lambdamain"
	"github.com/kiln-dev/kiln/pkg/bake"
)

func main() {
	log, aws := lambdamain.Setup()
	stage := bake.NewDistribute(aws, bake.ConfigFromEnv())
	lambda.Start(bake.Handler("distribute", stage.Actions(), log))
}
