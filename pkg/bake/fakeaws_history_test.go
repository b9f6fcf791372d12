package bake

import (
	"context"

	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
)

// GetParameterHistory answers with the parameter's current version only:
// the fake keeps no history. The restore-on-failure path that needs real
// history is covered against moto (pkg/local TestBakeFailureRestoresParameters).
func (f *fakeSSM) GetParameterHistory(ctx context.Context, in *ssm.GetParameterHistoryInput, optFns ...func(*ssm.Options)) (*ssm.GetParameterHistoryOutput, error) {
	out, err := f.GetParameter(ctx, &ssm.GetParameterInput{Name: in.Name}, optFns...)
	if err != nil {
		return nil, err
	}
	p := out.Parameter
	return &ssm.GetParameterHistoryOutput{Parameters: []ssmtypes.ParameterHistory{{
		Name: p.Name, Value: p.Value, Type: p.Type, Version: p.Version, DataType: p.DataType,
	}}}, nil
}
