package infra

import (
	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsec2"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
)

// Network is where the provisioning Lambda and build instances run.
//
// Without KilnProps.VPCID the stack creates a small VPC with no NAT
// gateway, in two Availability Zones. Its fixed cost is three interface
// endpoints in one zone (about $22 a month) instead of a NAT gateway's
// (about $32 a month, plus traffic):
//
//   - "builds" public subnets for build instances, which get a public
//     address for egress through the internet gateway (package mirrors,
//     and Systems Manager for the session_manager transport) but admit
//     nothing except SSH from the provisioning Lambda's group (their
//     temporary groups, made by launch);
//   - "provisioner" isolated subnets for the provisioning Lambda, which
//     reaches build instances over the VPC's local route and the AWS APIs
//     it calls through endpoints open only to its group: S3 (a gateway,
//     free), Parameter Store and Run Command (ssm), CloudWatch Logs
//     (command output) and EC2 (DescribeInstances), each in one zone (every
//     subnet of the VPC resolves them). Its own logs go through the Lambda
//     service, not its network interface. The other stages, which call EC2
//     in every Region, run outside the VPC.
//
// Provisioning through this VPC thus reaches instances and AWS in the
// stack's Region only. With KilnProps.VPCID the stack adds nothing to that
// VPC but the provisioner's security group: its SubnetIDs must reach S3,
// Parameter Store, Run Command, CloudWatch Logs and EC2 (NAT or endpoints),
// and BuildSubnetID is where builds run.
type Network struct {
	// Vpc is the VPC the stack created or the one it was given.
	Vpc awsec2.IVpc
	// ProvisionerSubnets are the provisioning Lambda's subnets.
	ProvisionerSubnets *awsec2.SubnetSelection
	// ProvisionerSecurityGroup is the provisioning Lambda's group: the only
	// source a build instance's temporary group admits
	// (KILN_PROVISIONER_SECURITY_GROUP).
	ProvisionerSecurityGroup awsec2.SecurityGroup
	// InstanceSecurityGroup is the build instances' group for the SSH
	// transport: SSH from ProvisionerSecurityGroup only
	// (KILN_INSTANCE_SECURITY_GROUP). IsolatedSecurityGroup admits nothing
	// (session_manager and communicator "none";
	// KILN_ISOLATED_SECURITY_GROUP). Builds in the stack's VPC use them and
	// create no group of their own; both let instances reach out.
	InstanceSecurityGroup awsec2.SecurityGroup
	IsolatedSecurityGroup awsec2.SecurityGroup
	// BuildSubnetID is where builds run when a recipe names no subnet
	// (KILN_SUBNET_ID).
	BuildSubnetID *string
}

// Subnet group names of the VPC the stack creates.
const (
	BuildSubnetGroup       = "builds"
	ProvisionerSubnetGroup = "provisioner"
)

func newNetwork(scope constructs.Construct, p KilnProps) *Network {
	n := &Network{}
	sshTo := awsec2.Peer_AnyIpv4()
	var vpc awsec2.Vpc // the VPC the stack creates, if it does
	if p.VPCID == "" {
		vpc = awsec2.NewVpc(scope, jsii.String("Vpc"), &awsec2.VpcProps{
			IpAddresses: awsec2.IpAddresses_Cidr(jsii.String("10.80.0.0/16")),
			MaxAzs:      jsii.Number(2),
			NatGateways: jsii.Number(0),
			SubnetConfiguration: &[]*awsec2.SubnetConfiguration{
				{Name: jsii.String(BuildSubnetGroup), SubnetType: awsec2.SubnetType_PUBLIC, CidrMask: jsii.Number(20), MapPublicIpOnLaunch: jsii.Bool(true)},
				{Name: jsii.String(ProvisionerSubnetGroup), SubnetType: awsec2.SubnetType_PRIVATE_ISOLATED, CidrMask: jsii.Number(24)},
			},
			// The default group is never used; leaving it alone avoids the
			// custom resource that would empty it.
			RestrictDefaultSecurityGroup: jsii.Bool(false),
		})
		n.Vpc = vpc
		n.ProvisionerSubnets = &awsec2.SubnetSelection{SubnetGroupName: jsii.String(ProvisionerSubnetGroup)}
		n.BuildSubnetID = (*vpc.PublicSubnets())[0].SubnetId()
		sshTo = awsec2.Peer_Ipv4(vpc.VpcCidrBlock())
		vpc.AddGatewayEndpoint(jsii.String("S3"), &awsec2.GatewayVpcEndpointOptions{Service: awsec2.GatewayVpcEndpointAwsService_S3()})
	} else {
		n.Vpc = awsec2.Vpc_FromVpcAttributes(scope, jsii.String("Vpc"), &awsec2.VpcAttributes{
			VpcId:             jsii.String(p.VPCID),
			AvailabilityZones: awscdk.Stack_Of(scope).AvailabilityZones(),
		})
		var subnets []awsec2.ISubnet
		for i, id := range p.SubnetIDs {
			subnets = append(subnets, awsec2.Subnet_FromSubnetId(scope, jsii.String("ProvisionerSubnet"+string(rune('A'+i))), jsii.String(id)))
		}
		n.ProvisionerSubnets = &awsec2.SubnetSelection{Subnets: &subnets}
		n.BuildSubnetID = jsii.String(p.BuildSubnetID)
	}

	n.ProvisionerSecurityGroup = awsec2.NewSecurityGroup(scope, jsii.String("ProvisionerSecurityGroup"), &awsec2.SecurityGroupProps{
		Vpc:              n.Vpc,
		Description:      jsii.String("kiln provisioner: the only source build instances admit SSH from"),
		AllowAllOutbound: jsii.Bool(false),
	})
	n.ProvisionerSecurityGroup.AddEgressRule(sshTo, awsec2.Port_Tcp(jsii.Number(22)), jsii.String("SSH to build instances"), nil)
	n.ProvisionerSecurityGroup.AddEgressRule(awsec2.Peer_AnyIpv4(), awsec2.Port_Tcp(jsii.Number(443)), jsii.String("HTTPS to Parameter Store and S3 endpoints"), nil)

	n.InstanceSecurityGroup = awsec2.NewSecurityGroup(scope, jsii.String("InstanceSecurityGroup"), &awsec2.SecurityGroupProps{
		Vpc:              n.Vpc,
		Description:      jsii.String("kiln build instances: SSH from the kiln provisioner only"),
		AllowAllOutbound: jsii.Bool(true),
	})
	n.InstanceSecurityGroup.AddIngressRule(n.ProvisionerSecurityGroup, awsec2.Port_Tcp(jsii.Number(22)), jsii.String("SSH from the kiln provisioner"), nil)
	n.IsolatedSecurityGroup = awsec2.NewSecurityGroup(scope, jsii.String("IsolatedSecurityGroup"), &awsec2.SecurityGroupProps{
		Vpc:              n.Vpc,
		Description:      jsii.String("kiln build instances without SSH: no inbound traffic"),
		AllowAllOutbound: jsii.Bool(true),
	})

	if vpc != nil {
		endpointGroup := awsec2.NewSecurityGroup(scope, jsii.String("EndpointSecurityGroup"), &awsec2.SecurityGroupProps{
			Vpc:              vpc,
			Description:      jsii.String("kiln endpoints: HTTPS from the provisioner only"),
			AllowAllOutbound: jsii.Bool(false),
		})
		endpointGroup.AddIngressRule(n.ProvisionerSecurityGroup, awsec2.Port_Tcp(jsii.Number(443)), jsii.String("HTTPS from the kiln provisioner"), nil)
		for _, ep := range []struct {
			id      string
			service awsec2.InterfaceVpcEndpointAwsService
		}{
			{"Ssm", awsec2.InterfaceVpcEndpointAwsService_SSM()},
			{"Logs", awsec2.InterfaceVpcEndpointAwsService_CLOUDWATCH_LOGS()},
			{"Ec2", awsec2.InterfaceVpcEndpointAwsService_EC2()},
		} {
			vpc.AddInterfaceEndpoint(jsii.String(ep.id), &awsec2.InterfaceVpcEndpointOptions{
				Service:           ep.service,
				PrivateDnsEnabled: jsii.Bool(true),
				Open:              jsii.Bool(false),
				SecurityGroups:    &[]awsec2.ISecurityGroup{endpointGroup},
				Subnets:           &awsec2.SubnetSelection{Subnets: &[]awsec2.ISubnet{(*vpc.IsolatedSubnets())[0]}},
			})
		}
	}
	return n
}
