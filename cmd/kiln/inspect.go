package main

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/kiln-dev/kiln/pkg/bake"
)

func runInspect(_ context.Context, args []string, stdout, stderr io.Writer) error {
	var asJSON bool
	rf, path, err := parseRecipeArgs("inspect", args, stderr, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "print the whole build plan as JSON (sensitive values masked)")
	})
	if err != nil {
		return err
	}
	plan, err := bake.Load(path, rf.options())
	if err != nil {
		return reportLoadError(stderr, err)
	}
	if asJSON {
		b, err := json.MarshalIndent(publicPlan(plan), "", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, plan.Redact(string(b)))
		return nil
	}
	var b strings.Builder
	describePlan(&b, plan, bake.ConfigFromEnv())
	fmt.Fprint(stdout, plan.Redact(b.String()))
	return nil
}

// publicPlan is the plan without the sensitive values kept for redaction.
func publicPlan(p *bake.Plan) *bake.Plan {
	c := *p
	c.Sensitive = nil
	return &c
}

// describePlan writes the summary a person reads before baking: variables,
// sources, base image, provisioners, Regions, sharing, tags and outputs.
func describePlan(w io.Writer, p *bake.Plan, conf bake.Config) {
	fmt.Fprintf(w, "Recipe %s (%s)\n  hash: %s\n  files: %s\n", p.Name, formatName(p.Format), p.Hash, strings.Join(p.Files, ", "))
	if len(p.Variables) > 0 {
		fmt.Fprintln(w, "\nVariables:")
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		for _, v := range p.Variables {
			val := string(v.Value)
			if v.Sensitive {
				val = "<sensitive>"
			}
			fmt.Fprintf(tw, "  %s\t= %s\t(%s)\t%s\n", v.Name, val, v.From, v.Description)
		}
		tw.Flush()
	}
	if len(p.Data) > 0 {
		fmt.Fprintln(w, "\nData sources (looked up at launch):")
		for _, k := range slices.Sorted(maps.Keys(p.Data)) {
			fmt.Fprintf(w, "  data.%s: %s\n", k, describeData(p.Data[k]))
		}
	}
	for _, b := range p.Builds {
		describeBuild(w, p, b, conf)
	}
	for _, warn := range p.Warnings {
		fmt.Fprintf(w, "\n%s\n", warn)
	}
}

func formatName(f string) string {
	if f == "json" {
		return "legacy JSON template"
	}
	return "HCL2"
}

func describeData(d bake.DataSource) string {
	switch d.Type {
	case "amazon-parameterstore":
		return fmt.Sprintf("SSM parameter %s", d.Parameter)
	}
	if d.Filter != nil {
		return describeFilter(*d.Filter)
	}
	return d.Type
}

func describeFilter(f bake.AMIFilter) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(f.Filters)) {
		parts = append(parts, fmt.Sprintf("%s=%q", k, f.Filters[k]))
	}
	s := fmt.Sprintf("newest image owned by %s matching %s", strings.Join(f.Owners, ", "), strings.Join(parts, " "))
	if !f.MostRecent {
		s = fmt.Sprintf("the single image owned by %s matching %s", strings.Join(f.Owners, ", "), strings.Join(parts, " "))
	}
	return s
}

func describeBuild(w io.Writer, p *bake.Plan, b bake.Build, conf bake.Config) {
	s := b.Source
	fmt.Fprintf(w, "\nBuild %s", b.FullName())
	if b.BuildName != "" {
		fmt.Fprintf(w, " (build %q)", b.BuildName)
	}
	fmt.Fprintln(w, ":")
	switch {
	case s.SourceAMI != "":
		fmt.Fprintf(w, "  base image:   %s\n", s.SourceAMI)
	case s.SourceAMIFilter != nil:
		fmt.Fprintf(w, "  base image:   %s\n", describeFilter(*s.SourceAMIFilter))
	case s.SourceAMIData != "":
		fmt.Fprintf(w, "  base image:   data.%s (looked up at launch)\n", s.SourceAMIData)
	}
	fmt.Fprintf(w, "  instance:     %s in %s", s.InstanceType, s.Region)
	if s.SubnetID != "" {
		fmt.Fprintf(w, ", subnet %s", s.SubnetID)
	}
	fmt.Fprintf(w, ", IMDS tokens %s\n", s.MetadataOptions.HTTPTokens)
	fmt.Fprintf(w, "  transport:    %s\n", describeTransport(s, conf))
	regions := append([]string{s.Region}, s.AMIRegions...)
	fmt.Fprintf(w, "  image:        %s\n  regions:      %s\n", s.AMIName, strings.Join(slices.Compact(slices.Sorted(slices.Values(regions))), ", "))
	if s.EncryptBoot != nil && *s.EncryptBoot {
		key := s.KMSKeyID
		if key == "" {
			key = "the AWS-managed EBS key"
		}
		fmt.Fprintf(w, "  encryption:   boot volume encrypted with %s\n", key)
	}
	var share []string
	for _, x := range []struct {
		what string
		v    []string
	}{{"accounts", s.AMIUsers}, {"groups", s.AMIGroups}, {"organizations", s.AMIOrgARNs}, {"OUs", s.AMIOUARNs}, {"snapshot accounts", s.SnapshotUsers}, {"snapshot groups", s.SnapshotGroups}} {
		if len(x.v) > 0 {
			share = append(share, x.what+" "+strings.Join(x.v, ", "))
		}
	}
	if len(share) > 0 {
		fmt.Fprintf(w, "  sharing:      %s\n", strings.Join(share, "; "))
	}
	if len(s.Tags) > 0 {
		fmt.Fprintf(w, "  tags:         %s\n", formatMap(s.Tags))
	}
	if s.DeprecateAt != "" {
		fmt.Fprintf(w, "  deprecate at: %s\n", s.DeprecateAt)
	}
	if len(b.Provisioners) > 0 {
		fmt.Fprintln(w, "  provisioners:")
		for i, pr := range b.Provisioners {
			fmt.Fprintf(w, "    %d. %s: %s\n", i+1, pr.Label(), describeProvisioner(pr))
		}
	}
	if b.ErrorCleanup != nil {
		fmt.Fprintf(w, "  on failure:   %s: %s\n", b.ErrorCleanup.Label(), describeProvisioner(*b.ErrorCleanup))
	}
	param := conf.ParameterPrefix + "/" + p.Name + "/latest"
	if len(p.Builds) > 1 {
		param = conf.ParameterPrefix + "/" + p.Name + "/" + b.Name + "/latest"
	}
	fmt.Fprintf(w, "  outputs:      SSM parameter %s in each region; EventBridge event kiln.image.baked", param)
	for _, pp := range b.PostProcessors {
		if pp.Manifest != nil {
			fmt.Fprintf(w, "; manifest %s", pp.Manifest.Output)
		}
	}
	fmt.Fprintln(w)
}

// describeTransport says how provisioning will reach the instance: by the
// recipe's ssh_interface or, when it sets none, by the stack's default
// transport (KILN_DEFAULT_TRANSPORT).
func describeTransport(s bake.AmazonEBS, conf bake.Config) string {
	why := fmt.Sprintf("ssh_interface = %q", s.SSHInterface)
	if s.SSHInterface == "" {
		why = "ssh_interface unset: the stack's default transport, " + conf.WithDefaults().DefaultTransport
	}
	switch bake.ResolveTransport(s, conf) {
	case "none":
		return "none (communicator = \"none\": no provisioning)"
	case "session_manager":
		return fmt.Sprintf("SSM Run Command as %s (%s): no inbound port, no key pair", cmp.Or(s.SSHUsername, "root"), why)
	}
	return fmt.Sprintf("SSH as %s via %s, host key pinned (temporary %s key; %s)",
		s.SSHUsername, cmp.Or(s.SSHInterface, "private_ip"), s.TemporaryKeyPairType, why)
}

func describeProvisioner(p bake.Provisioner) string {
	switch {
	case p.Shell != nil:
		var parts []string
		if n := len(p.Shell.Inline); n > 0 {
			parts = append(parts, fmt.Sprintf("%d inline command(s)", n))
		}
		if len(p.Shell.Scripts) > 0 {
			parts = append(parts, "scripts "+strings.Join(p.Shell.Scripts, ", "))
		}
		if len(p.Shell.EnvironmentVars)+len(p.Shell.Env) > 0 {
			parts = append(parts, fmt.Sprintf("%d environment variable(s)", len(p.Shell.EnvironmentVars)+len(p.Shell.Env)))
		}
		return strings.Join(parts, ", ")
	case p.File != nil:
		src := strings.Join(p.File.Sources, ", ")
		if src == "" {
			src = "inline content"
		}
		return src + " -> " + p.File.Destination
	case p.Ansible != nil:
		return "playbook " + p.Ansible.PlaybookFile + " (run on the instance)"
	}
	return p.Type
}

func formatMap(m map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, " ")
}
