// __IDENTIFIER__: a cronwerk scheduled task.
//
// `task.describe` tells the host who this task is; `task.execute` does one
// run. The host's interfaces are imported as ES modules named after
// wit/task.wit: cronwerk:task/log@0.2.0, state, config, cancellation, farm
// and instance.

import { write } from 'cronwerk:task/log@0.2.0';
import * as state from 'cronwerk:task/state@0.2.0';

/** The value of the configuration's property `key`, if set. */
function property(context, key) {
  const found = context.properties.find(([name]) => name === key);
  return found === undefined ? undefined : found[1];
}

export const task = {
  // Called once when the host loads the component. Configurations refer to
  // the task by `identifier`; keep it stable across versions.
  describe() {
    return {
      identifier: '__IDENTIFIER__',
      displayName: '__DISPLAY_NAME__',
      description: 'Greets the configuration it runs for and counts its runs.',
      version: '0.1.0',
      defaultSchedule: 'every 1m',
    };
  },

  // One run. A returned string is success (empty: nothing to report); a
  // thrown string is failure. Either message is the run's result. `execute`
  // may also be `async` (to `await fetch(...)`, for example).
  execute(context, _payload) {
    // Properties are set per configuration (`--property greeting=Hi`).
    const greeting = property(context, 'greeting') ?? 'Hello';
    if (greeting.trim() === '') {
      throw "property 'greeting' is empty: set a word such as Hi, or leave it out";
    }

    // State is kept per configuration from one run to the next.
    const stored = Number.parseInt(state.get('runs') ?? '0', 10);
    const runs = (Number.isSafeInteger(stored) && stored >= 0 ? stored : 0) + 1;
    try {
      state.set('runs', String(runs));
    } catch (e) {
      // A failed import call throws an error whose `payload` is the message.
      throw `cannot store the run count: ${e?.payload ?? e}`;
    }

    // Events land in the host's event log, tagged with this run's id.
    const name = context.configurationName;
    write('info', 'GREETING', `${greeting}, ${name}!`);

    return `greeted ${name}, run ${runs}`;
  },
};
