package statemachine

// The bake lifecycle, top to bottom. This is the one definition of the flow:
// `go generate ./statemachine` writes it to kiln.asl.json, which infra/
// deploys (with the Lambda ARNs substituted) and `kiln bake --local` runs.
//
// Each readiness wait is a loop of Wait → check task → Choice. The check
// task answers with $.wait = {ready, seconds}: it sleeps through most of the
// expected time in one Wait and then polls briskly, so a bake notices
// readiness within seconds while paying few state transitions.

//go:generate go run ./gen -o kiln.asl.json

// Flow returns the state machine definition as a JSON-marshalable value.
func Flow() map[string]any {
	s := states{}

	// Plan: load and validate the recipe and claim the build's identity;
	// nothing is created yet. EventBridge delivers at least once: a second
	// execution for the same recipe version finds the claim taken and ends.
	s.add("Plan", planTask().next("AlreadyBaking?"))
	s.add("AlreadyBaking?", choice("Launch", rule(isPresent("$.duplicate_of"), "AlreadyBaking")))
	s.add("AlreadyBaking", map[string]any{"Type": "Succeed", "Comment": "another execution owns this build"})

	// Launch: security group, login key, instance; wait until it runs.
	s.add("Launch", task("launch", "run", 300).next("WaitForInstance"))
	s.add("WaitForInstance", wait("until the instance is likely running", "CheckInstance"))
	s.add("CheckInstance", task("launch", "check", 60).next("InstanceRunning?"))
	s.add("InstanceRunning?", choice("WaitForInstance",
		rule(and(isTrue("$.wait.ready"), stringEquals("$.plan.transport", "none")), "StopInstance"),
		rule(isTrue("$.wait.ready"), "Provision")))

	// Provision: run the provisioners, across as many invocations as they
	// take; waits cover SSH coming up, pause_before and long commands.
	s.add("Provision", task("provision", "run", 900).
		catchFirst([]string{"ProvisionFailed"}, "ErrorCleanupProvisioner").
		next("Provisioned?"))
	s.add("Provisioned?", choice("WaitForProvisioning", rule(isTrue("$.provision.done"), "StopInstance")))
	s.add("WaitForProvisioning", wait("until SSH answers, a pause ends or a long provisioner may have finished", "Provision"))

	// Snapshot: stop the instance, make the image, wait until available.
	s.add("StopInstance", task("snapshot", "stop", 120).next("WaitForStop"))
	s.add("WaitForStop", wait("until the instance is likely stopped", "CheckStopped"))
	s.add("CheckStopped", task("snapshot", "check-stopped", 60).next("Stopped?"))
	s.add("Stopped?", choice("WaitForStop", rule(isTrue("$.wait.ready"), "CreateImage")))
	s.add("CreateImage", task("snapshot", "create", 120).next("WaitForImage"))
	s.add("WaitForImage", wait("until the image is likely available", "CheckImage"))
	s.add("CheckImage", task("snapshot", "check", 120).next("ImageAvailable?"))
	s.add("ImageAvailable?", choice("WaitForImage", rule(isTrue("$.wait.ready"), "CopyToRegions")))

	// Distribute: copy to every extra Region at once, wait for the copies,
	// then share, publish the SSM parameters, the manifest and the event.
	s.add("CopyToRegions", copyToRegions().next("CheckCopies"))
	s.add("CheckCopies", task("distribute", "check", 120).next("CopiesAvailable?"))
	s.add("CopiesAvailable?", choice("WaitForCopies", rule(isTrue("$.wait.ready"), "Publish")))
	s.add("WaitForCopies", wait("until the copies are likely available", "CheckCopies"))
	s.add("Publish", task("distribute", "publish", 300).next("Cleanup"))

	// Failure path: a failed provisioner first runs error-cleanup-provisioner.
	s.add("ErrorCleanupProvisioner", task("provision", "error-cleanup", 900).
		catchAll("$.error_cleanup", "Cleanup").
		next("Cleanup"))

	// Cleanup: always, on success and failure; on failure it also removes
	// the half-made images. It loops while the instance is still going.
	s.add("Cleanup", task("cleanup", "run", 300).
		retry(retrier{ErrorEquals: []string{"CleanupIncomplete"}, IntervalSeconds: 15, MaxAttempts: 4, BackoffRate: 2, JitterStrategy: "FULL"}).
		catchAll("$.cleanup_error", "CleanupFailed").
		next("CleanedUp?"))
	s.add("CleanedUp?", choice("WaitForCleanup", rule(isTrue("$.wait.ready"), "Outcome?")))
	s.add("WaitForCleanup", wait("until the instance is gone so its security group can go", "Cleanup"))
	s.add("Outcome?", choice("Baked", rule(isPresent("$.error"), "BakeFailed")))
	s.add("Baked", map[string]any{"Type": "Succeed"})
	s.add("BakeFailed", fail("the failed stage's named error and its message", "$.error"))
	s.add("CleanupFailed", fail("cleanup could not remove everything: the cause lists what remains", "$.cleanup_error"))

	return map[string]any{
		"Comment": "kiln: bake an AMI from a Packer recipe. plan, launch, provision, snapshot, distribute, publish, cleanup; every failure ends in cleanup.",
		"StartAt": "Plan",
		"States":  s.m,
	}
}

// planTask also passes the execution's ID, which the build's claim records.
func planTask() taskState {
	t := task("launch", "plan", 300)
	t["Parameters"] = map[string]any{"action": "plan", "execution.$": "$$.Execution.Id", "state.$": "$"}
	return t
}

// copyToRegions is the Map that copies the image to each extra Region; each
// iteration's result is one Copy, gathered into $.copies.
func copyToRegions() taskState {
	copyTask := task("distribute", "copy", 120)
	delete(copyTask, "Catch") // the Map's Catch covers its iterations
	copyTask["Parameters"] = map[string]any{"action": "copy", "region.$": "$.region", "state.$": "$.state"}
	copyTask["ResultSelector"] = map[string]any{"copy.$": "$.copies[0]"}
	copyTask["OutputPath"] = "$.copy"
	copyTask["End"] = true
	m := taskState{
		"Type":         "Map",
		"Comment":      "copy the image to every extra Region at once",
		"ItemsPath":    "$.plan.regions",
		"ItemSelector": map[string]any{"region.$": "$$.Map.Item.Value", "state.$": "$"},
		"ItemProcessor": map[string]any{
			"ProcessorConfig": map[string]any{"Mode": "INLINE"},
			"StartAt":         "CopyImage",
			"States":          map[string]any{"CopyImage": copyTask},
		},
		"ResultPath": "$.copies",
	}
	return m.catchAll("$.error", "Cleanup")
}
