// Running a cronwerk task's `execute` under node's test runner, with an
// in-memory host.
//
// Inside cronwerk, the `cronwerk:task/...` modules task.js imports reach
// the host. Under node they do not exist: register.js points those imports
// here, and this host answers them with what a test sets up (properties,
// settings, state, cancellation, instance, farm) and records what the task
// did (its events, broadcasts and the state it leaves).
//
//   const host = new TestHost({ configuration: 'nightly', properties: { greeting: 'Hi' } });
//   const run = await host.run(task);
//   assert.equal(run.message, 'greeted nightly, run 1');
//   assert.deepEqual(host.state, { runs: '1' });
//
// The state keeps the host's limits (keys 1 to 256 bytes, values up to
// 64 KiB, 1 MiB in all) and answers as the host does when one is crossed.
// Not reproduced: the sandbox (files, network, clocks and randomness are the
// test process's own), fuel, memory and time limits, stdout/stderr capture.
// For those, test the built component itself:
// `cronwerk test FILE --cases cases.toml`.
//
// This file is yours to extend; `cronwerk new` wrote it and nothing updates it.

const MAX_KEY_BYTES = 256;
const MAX_VALUE_BYTES = 64 * 1024;
const MAX_TOTAL_BYTES = 1024 * 1024;
const TRIGGERS = ['schedule', 'manual', 'broadcast', 'retry', 'follow-up', 'backfill', 'startup'];
const LEVELS = ['trace', 'debug', 'info', 'warning', 'error'];

// The host running a task right now, if any (runs do not overlap: `run`
// refuses a second one while the first is on).
let current = null;

const bytes = (s) => Buffer.byteLength(s, 'utf8');

/** What a failed host call throws: an Error whose `payload` is the message,
 * as the component's bindings do. */
export class HostError extends Error {
  constructor(message) {
    super(message);
    this.payload = message;
  }
}

function datetime(date) {
  const ms = date.getTime();
  return { seconds: BigInt(Math.floor(ms / 1000)), nanoseconds: (ms % 1000) * 1_000_000 };
}

function host(call) {
  if (current === null) {
    throw new Error(
      `${call} reached for cronwerk's host, which only a component running in cronwerk has; ` +
        'in a test, run the task with `await new TestHost().run(task)` (cronwerk-testing.js)',
    );
  }
  return current;
}

/**
 * An in-memory host for a task's tests. Give it what the run is told, call
 * `await run(task)`, then read the outcome and `state`. The state carries
 * over from one `run` to the next, as between runs of a configuration.
 * Defaults: a manual run (attempt 1) of configuration `test` of `Test.Task`,
 * on instance `test`, with a farm and no properties, settings or state.
 */
export class TestHost {
  constructor({
    configuration = 'test',
    identifier = 'Test.Task',
    trigger,
    attempt = 1,
    properties = {},
    settings = {},
    state = {},
    instance = 'test',
    roles = [],
    cancelled = false,
    farm = true,
    payload = null,
    scheduledFor = null,
    timeLeftMs = null,
    runCount = 0,
  } = {}) {
    // A payload makes a broadcast run, a slot a scheduled one, unless the
    // test says otherwise.
    trigger ??= payload !== null ? 'broadcast' : scheduledFor !== null ? 'schedule' : 'manual';
    if (!TRIGGERS.includes(trigger)) {
      throw new Error(`trigger '${trigger}' is not one of ${TRIGGERS.join(', ')}`);
    }
    Object.assign(this, {
      configuration,
      identifier,
      trigger,
      attempt,
      properties: { ...properties },
      settings: { ...settings },
      state: { ...state },
      instance,
      roles: [...roles],
      cancelled,
      farm,
      payload,
      scheduledFor,
      timeLeftMs,
      runCount,
    });
    this.events = [];
    this.broadcasts = [];
  }

  /** The run context the task's `execute` is given. */
  context() {
    return {
      configurationName: this.configuration,
      identifier: this.identifier,
      runId: '00000000-0000-7000-8000-000000000000',
      trigger: this.trigger,
      attempt: this.attempt,
      deadline: this.timeLeftMs === null ? undefined : datetime(new Date(Date.now() + this.timeLeftMs)),
      scheduledFor: this.scheduledFor === null ? undefined : datetime(this.scheduledFor),
      lastRun: undefined,
      nextRun: undefined,
      runCount: BigInt(this.runCount),
      instanceName: this.instance,
      properties: Object.entries(this.properties),
    };
  }

  /**
   * Runs `task.execute` once (awaiting it if it is async) and returns
   * `{ ok, message, events, broadcasts }` as cronwerk would record them:
   * a returned string is success, a thrown string (or a failed host call's
   * error, left uncaught) is failure. Anything else thrown is the test's.
   */
  async run(task) {
    if (current !== null) {
      throw new Error('a TestHost run is already on; await each run before the next');
    }
    const payload =
      this.payload === null
        ? undefined
        : { target: this.payload.target ?? '', text: this.payload.text ?? '', data: Uint8Array.from(this.payload.data ?? []) };
    this.events = [];
    this.broadcasts = [];
    current = this;
    let ok = true;
    let message;
    try {
      message = await task.execute(this.context(), payload);
      if (typeof message !== 'string') {
        throw new TypeError(`execute returned ${typeof message}; cronwerk records a string (or a thrown one)`);
      }
    } catch (thrown) {
      if (typeof thrown === 'string') {
        [ok, message] = [false, thrown];
      } else if (thrown instanceof HostError) {
        [ok, message] = [false, thrown.payload];
      } else {
        throw thrown;
      }
    } finally {
      current = null;
    }
    this.runCount += 1;
    return { ok, message, events: this.events, broadcasts: this.broadcasts };
  }

  setState(key, value) {
    if (bytes(key) === 0 || bytes(key) > MAX_KEY_BYTES) {
      throw new HostError(`state key must be 1 to ${MAX_KEY_BYTES} bytes, got ${bytes(key)}`);
    }
    if (bytes(value) > MAX_VALUE_BYTES) {
      throw new HostError(`state value for '${key}' is ${bytes(value)} bytes; the limit is ${MAX_VALUE_BYTES}`);
    }
    let total = bytes(key) + bytes(value);
    for (const [k, v] of Object.entries(this.state)) {
      if (k !== key) total += bytes(k) + bytes(v);
    }
    if (total > MAX_TOTAL_BYTES) {
      throw new HostError(`state would hold ${total} bytes; the limit is ${MAX_TOTAL_BYTES} per configuration`);
    }
    this.state[key] = value;
  }

  broadcast(identifier, payload) {
    if (!this.farm) {
      throw new HostError('no farm: this run was started without one (cronwerk exec)');
    }
    const { target, text, data } = payload;
    this.broadcasts.push({ identifier, target, text, data: Uint8Array.from(data ?? []) });
    return `test-broadcast-${this.broadcasts.length}`;
  }
}

/** Every import of wit/task.wit's world, answered by the running TestHost:
 * what `import ... from 'cronwerk:task/NAME@VERSION'` gets under test. */
export const interfaces = {
  log: {
    write(level, code, message) {
      if (!LEVELS.includes(level)) {
        throw new TypeError(`log level '${level}' is not one of ${LEVELS.join(', ')}`);
      }
      host('log.write').events.push({ level, code, message });
    },
  },
  cancellation: {
    isCancelled: () => host('cancellation.isCancelled').cancelled,
  },
  config: {
    get: (key) => host('config.get').settings[key],
    getAll: () => Object.entries(host('config.getAll').settings).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
  },
  state: {
    get: (key) => host('state.get').state[key],
    set: (key, value) => host('state.set').setState(key, value),
    remove: (key) => {
      delete host('state.remove').state[key];
    },
    keys: () => Object.keys(host('state.keys').state).sort(),
  },
  farm: {
    broadcast: (identifier, payload) => host('farm.broadcast').broadcast(identifier, payload),
  },
  instance: {
    name: () => host('instance.name').instance,
    roles: () => [...host('instance.roles').roles],
  },
};
