package main

import (
	"testing"

	"github.com/kiln-dev/kiln/pkg/bake"
)

// TestDescribeTransport: kiln inspect names the transport a build will
// use, the stack's default one for a recipe that sets no ssh_interface.
func TestDescribeTransport(t *testing.T) {
	ssh := bake.Config{DefaultTransport: "ssh"}
	ssm := bake.Config{DefaultTransport: "session_manager"}
	for _, c := range []struct {
		name string
		src  bake.AmazonEBS
		conf bake.Config
		want string
	}{
		{"recipe ssm", bake.AmazonEBS{Communicator: "ssh", SSHInterface: "session_manager"}, ssh,
			`SSM Run Command as root (ssh_interface = "session_manager"): no inbound port, no key pair`},
		{"default ssm", bake.AmazonEBS{Communicator: "ssh", SSHUsername: "ubuntu"}, ssm,
			`SSM Run Command as ubuntu (ssh_interface unset: the stack's default transport, session_manager): no inbound port, no key pair`},
		{"default ssh", bake.AmazonEBS{Communicator: "ssh", SSHUsername: "ubuntu", TemporaryKeyPairType: "ed25519"}, ssh,
			`SSH as ubuntu via private_ip, host key pinned (temporary ed25519 key; ssh_interface unset: the stack's default transport, ssh)`},
		{"recipe ssh over a default ssm", bake.AmazonEBS{Communicator: "ssh", SSHUsername: "ec2-user", SSHInterface: "public_ip", TemporaryKeyPairType: "ed25519"}, ssm,
			`SSH as ec2-user via public_ip, host key pinned (temporary ed25519 key; ssh_interface = "public_ip")`},
		{"none", bake.AmazonEBS{Communicator: "none"}, ssm, `none (communicator = "none": no provisioning)`},
	} {
		if got := describeTransport(c.src, c.conf); got != c.want {
			t.Errorf("%s: describeTransport() = %q, want %q", c.name, got, c.want)
		}
	}
}
