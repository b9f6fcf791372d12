package asl

import (
	"fmt"
	"time"
)

// Pricing holds the prices a Report uses. A zero field takes its default,
// the us-east-1 list price for Standard workflows and arm64 Lambda
// (https://aws.amazon.com/step-functions/pricing/,
// https://aws.amazon.com/lambda/pricing/); free tiers are ignored.
type Pricing struct {
	// PerTransition is the price of one state transition; default
	// $0.000025 ($0.025 per 1,000).
	PerTransition float64
	// PerGBSecond is Lambda compute per GB-second; default $0.0000133334
	// (arm64).
	PerGBSecond float64
	// PerRequest is the price of one Lambda invocation; default
	// $0.0000002 ($0.20 per 1M).
	PerRequest float64
	// MemoryMB is each handler's configured memory by Handlers key;
	// handlers not listed get DefaultMemoryMB.
	MemoryMB map[string]int
	// DefaultMemoryMB defaults to 128.
	DefaultMemoryMB int
}

// Default prices.
const (
	// DefaultPerTransition is $0.025 per 1,000 state transitions.
	DefaultPerTransition = 0.025 / 1000
	// DefaultPerGBSecond is arm64 Lambda compute per GB-second.
	DefaultPerGBSecond = 0.0000133334
	// DefaultPerRequest is $0.20 per 1M Lambda requests.
	DefaultPerRequest = 0.20 / 1_000_000
	// DefaultLambdaMemoryMB is the memory a handler is priced at unless
	// Pricing.MemoryMB says otherwise.
	DefaultLambdaMemoryMB = 128
)

const (
	// Lambda bills duration in 1 ms steps.
	lambdaBillingGranule = time.Millisecond
	megabytesPerGigabyte = 1024.0
)

func (p Pricing) withDefaults() Pricing {
	if p.PerTransition == 0 {
		p.PerTransition = DefaultPerTransition
	}
	if p.PerGBSecond == 0 {
		p.PerGBSecond = DefaultPerGBSecond
	}
	if p.PerRequest == 0 {
		p.PerRequest = DefaultPerRequest
	}
	if p.DefaultMemoryMB == 0 {
		p.DefaultMemoryMB = DefaultLambdaMemoryMB
	}
	return p
}

// Report is what an execution would cost on AWS.
type Report struct {
	// Transitions counts billable state transitions (len(History)).
	Transitions int
	// Invocations counts handler calls, retries included.
	Invocations int
	// TaskTime is the handlers' total run time; BilledTaskTime rounds each
	// call up to the millisecond as Lambda bills.
	TaskTime, BilledTaskTime time.Duration
	// GBSeconds is Lambda compute: billed time times memory.
	GBSeconds float64
	// TransitionCost, ComputeCost and RequestCost add up to Total, in USD.
	TransitionCost, ComputeCost, RequestCost, Total float64
}

// Report prices the execution's history.
func (r *Result) Report(p Pricing) Report {
	return Cost(r.History, p)
}

// Cost prices a history (for example Execution.History while running).
func Cost(history []Event, p Pricing) Report {
	p = p.withDefaults()
	rep := Report{Transitions: len(history)}
	for _, ev := range history {
		if !ev.Invoked {
			continue
		}
		rep.Invocations++
		rep.TaskTime += ev.TaskDuration
		billed := ev.TaskDuration.Round(0)
		if rem := billed % lambdaBillingGranule; rem != 0 {
			billed += lambdaBillingGranule - rem
		}
		if billed == 0 {
			billed = lambdaBillingGranule
		}
		rep.BilledTaskTime += billed
		mem := p.DefaultMemoryMB
		if m, ok := p.MemoryMB[ev.Resource]; ok {
			mem = m
		}
		rep.GBSeconds += billed.Seconds() * float64(mem) / megabytesPerGigabyte
	}
	rep.TransitionCost = float64(rep.Transitions) * p.PerTransition
	rep.ComputeCost = rep.GBSeconds * p.PerGBSecond
	rep.RequestCost = float64(rep.Invocations) * p.PerRequest
	rep.Total = rep.TransitionCost + rep.ComputeCost + rep.RequestCost
	return rep
}

// String summarizes the report on one line.
func (r Report) String() string {
	return fmt.Sprintf("%d transitions, %d task invocations, %s task time (%.3f GB-s): $%.6f (transitions $%.6f, compute $%.6f, requests $%.6f)",
		r.Transitions, r.Invocations, r.TaskTime, r.GBSeconds, r.Total, r.TransitionCost, r.ComputeCost, r.RequestCost)
}
