// Tests of task.js's logic, run by `npm test` with an in-memory host.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { TestHost } from './testing/cronwerk-testing.js';
import { task } from './task.js';

test('greets the configuration and counts its runs', async () => {
  const host = new TestHost({ configuration: 'nightly', properties: { greeting: 'Hi' }, state: { runs: '41' } });
  const run = await host.run(task);
  assert.equal(run.ok, true);
  assert.equal(run.message, 'greeted nightly, run 42');
  assert.deepEqual(run.events, [{ level: 'info', code: 'GREETING', message: 'Hi, nightly!' }]);
  assert.equal(host.state.runs, '42');
  // The state carries over to the next run, as between runs of a configuration.
  assert.equal((await host.run(task)).message, 'greeted nightly, run 43');
});

test('an empty greeting fails the run and stores nothing', async () => {
  const host = new TestHost({ properties: { greeting: ' ' } });
  const run = await host.run(task);
  assert.equal(run.ok, false);
  assert.match(run.message, /property 'greeting' is empty/);
  assert.deepEqual(run.events, []);
  assert.deepEqual(host.state, {});
});
