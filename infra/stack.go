package infra

import (
	"fmt"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/jsii-runtime-go"
)

// DefaultStackName is the stack's name unless the context's kiln:stackName
// sets another.
const DefaultStackName = "Kiln"

// CtxStackName is the context key naming the stack.
const CtxStackName = "kiln:stackName"

// NewStack defines a stack holding kiln alone, configured from app's
// context (PropsFromContext) over base, which may be nil. The stack is
// environment-agnostic: it deploys to the account and Region of the
// credentials `cdk deploy` uses, and synthesizes without looking anything
// up.
func NewStack(app awscdk.App, base *KilnProps) (awscdk.Stack, *Kiln, error) {
	props, err := PropsFromContext(app.Node())
	if err != nil {
		return nil, nil, err
	}
	if base != nil {
		props = merge(*base, props)
	}
	name := DefaultStackName
	if v, ok := app.Node().TryGetContext(jsii.String(CtxStackName)).(string); ok && v != "" {
		name = v
	}
	stack := awscdk.NewStack(app, jsii.String(name), &awscdk.StackProps{
		Description: jsii.String("kiln: bake AMIs from Packer recipes uploaded to S3"),
	})
	var k *Kiln
	err = catch(func() { k = NewKiln(stack, "Kiln", &props) })
	return stack, k, err
}

// merge returns base with the fields set in over replacing its own.
func merge(base, over KilnProps) KilnProps {
	str := func(b *string, o string) {
		if o != "" {
			*b = o
		}
	}
	num := func(b *int, o int) {
		if o != 0 {
			*b = o
		}
	}
	str(&base.VPCID, over.VPCID)
	if len(over.SubnetIDs) > 0 {
		base.SubnetIDs = over.SubnetIDs
	}
	str(&base.BuildSubnetID, over.BuildSubnetID)
	if len(over.Regions) > 0 {
		base.Regions = over.Regions
	}
	str(&base.ParameterPrefix, over.ParameterPrefix)
	str(&base.KeyPrefix, over.KeyPrefix)
	str(&base.CommandLogPrefix, over.CommandLogPrefix)
	str(&base.EventBus, over.EventBus)
	str(&base.DefaultTransport, over.DefaultTransport)
	str(&base.KMSKeyARN, over.KMSKeyARN)
	str(&base.RebuildSchedule, over.RebuildSchedule)
	str(&base.RetentionSchedule, over.RetentionSchedule)
	str(&base.ScheduleTimeZone, over.ScheduleTimeZone)
	num(&base.RetentionKeep, over.RetentionKeep)
	num(&base.RetentionDays, over.RetentionDays)
	num(&base.RebuildMaxAgeDays, over.RebuildMaxAgeDays)
	num(&base.RetentionDeprecateDays, over.RetentionDeprecateDays)
	num(&base.LogRetentionDays, over.LogRetentionDays)
	return base
}

// catch runs f and returns what it panicked with as an error.
func catch(f func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			if e, ok := r.(error); ok {
				err = e
			} else {
				err = fmt.Errorf("%v", r)
			}
		}
	}()
	f()
	return nil
}
