// replay.mjs runs a States Language definition in aws-local-stepfunctions
// with every Task answered from a recording of kiln's runner, and prints
// what happened as one JSON document. Go (crosscheck.Run) starts it with
// the repository root as its working directory and writes
// {definition, recording, context} to its stdin.
//
// Output: {status, output, error, cause, path, calls}. path has the shape
// of asl.Path; calls lists every Task call in order as {scope, state,
// input}. Task calls are keyed as kiln keys them: the state's name and its
// scope ("CopyToRegions[1]" inside iteration 1 of that Map).
import { AsyncLocalStorage } from 'node:async_hooks';
import { StateMachine, ExecutionError, ExecutionTimeoutError, ExecutionAbortedError } from 'aws-local-stepfunctions';

const { definition, recording, context } = JSON.parse(await readStdin());

// Task states are overridden, Wait states and retry intervals take no
// time: the library's documented overrides, all keyed by state name.
const taskResourceLocalHandlers = {};
const waitTimeOverrides = {};
const retryIntervalOverrides = {};
// owners maps a Map's ItemProcessor (or Iterator) and each Parallel branch,
// by identity, to the state that runs it: the library runs them as nested
// StateMachines of those very objects.
const owners = new Map();
walk(definition, (name, state) => {
  switch (state.Type) {
    case 'Task':
      if (String(state.Resource).startsWith('arn:aws:states:::')) {
        fail(`state ${JSON.stringify(name)}: service integration ${state.Resource} cannot be replayed`);
      }
      taskResourceLocalHandlers[name] = replay(name);
      break;
    case 'Wait':
      waitTimeOverrides[name] = 0;
      break;
    case 'Map':
      owners.set(state.ItemProcessor ?? state.Iterator, { kind: 'Map', state: name });
      break;
    case 'Parallel':
      state.Branches.forEach((b, i) => owners.set(b, { kind: 'Parallel', state: name, branch: i }));
      break;
  }
  if (state.Retry) retryIntervalOverrides[name] = 0;
});

// Recorded results, queued per scope and state in call order.
const queues = new Map();
for (const c of recording.calls) {
  const key = callKey(c.scope ?? '', c.state);
  if (!queues.has(key)) queues.set(key, []);
  queues.get(key).push(c);
}
const calls = [];

// A Task error as the library sees errors: Retry and Catch match its name,
// and a Catch's Cause (and the execution's) is its message.
class TaskError extends Error {
  constructor(name, cause) {
    super(cause);
    this.name = name;
  }
  // States.Runtime is never retried or caught, as in the library's own.
  get isRetryable() {
    return this.name !== 'States.Runtime';
  }
  get isCatchable() {
    return this.name !== 'States.Runtime';
  }
}

function replay(state) {
  return async (input) => {
    const scope = als.getStore()?.scope ?? '';
    calls.push({ scope, state, input });
    const c = queues.get(callKey(scope, state))?.shift();
    if (!c) {
      throw new TaskError('Crosscheck.NoRecordedCall', `kiln's runner made no more calls of ${scope ? scope + '/' : ''}${state}`);
    }
    if (c.aborted) {
      throw new TaskError('Crosscheck.AbortedCall', `kiln's runner did not wait for this call of ${scope ? scope + '/' : ''}${state}`);
    }
    if (c.error) throw new TaskError(c.error, c.cause ?? '');
    return c.output ?? null;
  };
}

function callKey(scope, state) {
  return JSON.stringify([scope, state]);
}

// Each execution, the top-level one and every Map iteration or Parallel
// branch, runs in an AsyncLocalStorage context that names its scope, so
// that a Task handler knows which iteration called it, and records its own
// events into a run record.
const als = new AsyncLocalStorage();
const pending = [];
const origRun = StateMachine.prototype.run;
const mapIterations = new WeakMap(); // iterator StateMachine -> {group, next}
const seen = Symbol('crosscheck.seen');
let topLevel; // the run record of the execution itself

function newRun() {
  return { steps: [], retries: new Map(), groups: new Map() };
}

StateMachine.prototype.run = function (input, options) {
  const parent = als.getStore();
  const run = newRun();
  let scope = '';
  if (!parent) {
    topLevel = run;
  } else {
    const owner = owners.get(this.definition);
    if (!owner) fail('a nested state machine that no Map or Parallel state owns');
    const groups = parent.run.groups.get(owner.state) ?? [];
    parent.run.groups.set(owner.state, groups);
    let group, index;
    if (owner.kind === 'Map') {
      // One StateMachine per attempt of the Map state; its iterations
      // start in item order (p-limit is first in, first out).
      let it = mapIterations.get(this);
      if (!it) {
        it = { group: { branches: [] }, next: 0 };
        groups.push(it.group);
        mapIterations.set(this, it);
      }
      group = it.group;
      index = it.next++;
    } else {
      // One StateMachine per branch, started in branch order.
      group = groups.at(-1);
      if (!group || group.branches[owner.branch] !== undefined) {
        group = { branches: [] };
        groups.push(group);
      }
      index = owner.branch;
    }
    group.branches[index] = run;
    scope = `${parent.scope ? parent.scope + '/' : ''}${owner.state}[${index}]`;
  }
  const execution = als.run({ scope, run }, () => origRun.call(this, input, options));
  const events = execution.eventLogs;
  let done;
  pending.push(new Promise((resolve) => (done = resolve)));
  // Nested executions forward their events to the parent's log, where
  // they would be recorded twice: each run records only events no run
  // has marked yet.
  execution.eventLogs = (async function* () {
    try {
      for await (const ev of events) {
        if (!ev[seen]) {
          ev[seen] = true;
          record(run, ev);
        }
        yield ev;
      }
    } finally {
      done();
    }
  })();
  return execution;
};

function record(run, ev) {
  switch (ev.type) {
    case 'StateEntered':
      run.retries.set(ev.state.name, 0);
      run.steps.push({ state: ev.state.name, type: ev.state.type, retry: 0 });
      break;
    case 'StateRetried': {
      const n = (run.retries.get(ev.state.name) ?? 0) + 1;
      run.retries.set(ev.state.name, n);
      run.steps.push({ state: ev.state.name, type: ev.state.type, retry: n });
      break;
    }
  }
}

// path turns a run record into an asl.Path: the k-th attempt of a Map or
// Parallel state owns the k-th group of nested runs it started.
function path(run) {
  const used = new Map();
  return run.steps.map((s) => {
    const step = { state: s.state };
    if (s.retry) step.retry = s.retry;
    if (s.type === 'Map' || s.type === 'Parallel') {
      const k = used.get(s.state) ?? 0;
      used.set(s.state, k + 1);
      const group = run.groups.get(s.state)?.[k];
      if (group && group.branches.length > 0) {
        step.branches = Array.from(group.branches, (b) => (b ? path(b) : []));
      }
    }
    return step;
  });
}

const result = { status: 'SUCCEEDED' };
// The library's validation is asl-validator, which statemachine's tests run
// on kiln's definition already; compiling its schemas costs half a second.
const machine = new StateMachine(definition, { validationOptions: { noValidate: true } });
const execution = machine.run(recording.input ?? {}, {
  overrides: { taskResourceLocalHandlers, waitTimeOverrides, retryIntervalOverrides },
  context,
});
// Events are recorded as they are read: drain the top-level log, and wait
// for the Map and Parallel states' forwarding of their nested logs.
const drained = (async () => {
  for await (const _ of execution.eventLogs);
})();
try {
  result.output = await execution.result;
} catch (err) {
  if (err instanceof ExecutionError) {
    result.status = 'FAILED';
    const e = err.cause;
    result.error = e?.name ?? '';
    result.cause = e?.cause ?? e?.message ?? '';
  } else if (err instanceof ExecutionTimeoutError) {
    result.status = 'TIMED_OUT';
    result.error = 'States.Timeout';
  } else if (err instanceof ExecutionAbortedError) {
    result.status = 'ABORTED';
  } else {
    throw err;
  }
}
await drained;
await Promise.all(pending);
result.path = path(topLevel);
result.calls = calls;
process.stdout.write(JSON.stringify(result) + '\n');

function walk(machine, fn) {
  for (const [name, state] of Object.entries(machine.States ?? {})) {
    fn(name, state);
    const inner = state.ItemProcessor ?? state.Iterator;
    if (inner) walk(inner, fn);
    for (const b of state.Branches ?? []) walk(b, fn);
  }
}

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

function fail(message) {
  process.stderr.write(`replay: ${message}\n`);
  process.exit(2);
}
