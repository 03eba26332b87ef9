// `node --import ./testing/register.js --test`: makes task.js's imports of
// `cronwerk:task/...` load the in-memory host of cronwerk-testing.js.
// Module hooks (`register`) need node 18.19, or 20.6 or newer.

import { register } from 'node:module';

register('./hooks.js', import.meta.url);
