// Acme.CacheWarmup: requests each URL of a list so the caches behind them are
// warm before users arrive, and reports which ones answered.
//
// Property `urls` (required): the URLs, separated by commas and/or whitespace.
// Config `user-agent`: the User-Agent header sent (shared by all configurations).
// State: `status:<url>` is each URL's last status (or `error`), so a change
// between runs is logged; `runs` counts the runs.
//
// The host denies outbound HTTP unless the operator grants the hosts; a denied
// request is a failed URL like any other.
//
// Built with componentize-js. `execute` is async: componentize-js runs the
// JavaScript event loop until the returned promise settles, which is what
// lets `fetch` work inside an exported function. A returned string is the
// `ok` result, a thrown string the `err` result.

import { write } from 'cronwerk:task/log@0.2.0';
import { get as configGet } from 'cronwerk:task/config@0.2.0';
import * as state from 'cronwerk:task/state@0.2.0';
import { isCancelled } from 'cronwerk:task/cancellation@0.2.0';

const DEFAULT_USER_AGENT = 'cronwerk-cache-warmup/1.0';

function property(context, name) {
  const found = context.properties.find(([key]) => key === name);
  return found === undefined ? undefined : found[1];
}

/** The URLs of the `urls` property, in order, without duplicates. */
function parseUrls(raw) {
  return [...new Set(raw.split(/[\s,]+/).filter((url) => url !== ''))];
}

function setState(key, value) {
  try {
    state.set(key, value);
  } catch (e) {
    // A result<_, string> import throws its err value wrapped in an error
    // whose `payload` is the string.
    throw `cannot store state key '${key}': ${e?.payload ?? e}`;
  }
}

function storedCount(key) {
  const n = Number.parseInt(state.get(key) ?? '0', 10);
  return Number.isSafeInteger(n) && n >= 0 ? n : 0;
}

/** One GET; resolves to { status, bytes } or { error }. */
async function warm(url, userAgent) {
  let response;
  try {
    response = await fetch(url, {
      headers: { 'user-agent': userAgent },
      redirect: 'manual',
    });
  } catch (e) {
    return { error: e?.message ? String(e.message) : String(e) };
  }
  // Read the whole body: warming a cache means letting it serve everything.
  let bytes = 0;
  try {
    bytes = (await response.arrayBuffer()).byteLength;
  } catch (e) {
    return { status: response.status, error: `reading the body failed: ${e?.message ?? e}` };
  }
  return { status: response.status, bytes };
}

function ok(status) {
  return status >= 200 && status < 400;
}

export const task = {
  describe() {
    return {
      identifier: 'Acme.CacheWarmup',
      displayName: 'Cache warm-up',
      description:
        'Requests each URL of a list so the caches behind them are warm, ' +
        'and logs which ones answered and which status codes changed.',
      version: '1.0.0',
      defaultSchedule: 'every 5m',
    };
  },

  async execute(context, _payload) {
    const raw = property(context, 'urls');
    const urls = raw === undefined ? [] : parseUrls(raw);
    if (urls.length === 0) {
      throw "property 'urls' is required: list the URLs to warm, separated by commas";
    }
    const userAgent = configGet('user-agent') ?? DEFAULT_USER_AGENT;
    setState('runs', String(storedCount('runs') + 1));

    let warmed = 0;
    let failed = 0;
    // One at a time: a warm-up should not itself be a burst of load.
    for (const url of urls) {
      if (isCancelled()) {
        write('warning', 'WARM_CANCELLED', `stopped early on request; ${urls.length - warmed - failed} URLs skipped`);
        break;
      }
      const outcome = await warm(url, userAgent);
      let recorded;
      if (outcome.error === undefined && ok(outcome.status)) {
        warmed += 1;
        recorded = String(outcome.status);
        write('info', 'WARMED', `${url}: ${outcome.status}, ${outcome.bytes} bytes`);
      } else {
        failed += 1;
        recorded = outcome.status === undefined ? 'error' : String(outcome.status);
        const reason = outcome.error ?? `status ${outcome.status}`;
        write('warning', 'WARM_FAILED', `${url}: ${reason}`);
      }
      const key = `status:${url}`;
      const previous = state.get(key);
      if (previous !== undefined && previous !== recorded) {
        write('info', 'STATUS_CHANGED', `${url}: ${previous} -> ${recorded}`);
      }
      setState(key, recorded);
    }

    if (warmed === 0) {
      throw `warmed 0 of ${urls.length} URLs`;
    }
    let result = `warmed ${warmed} of ${urls.length} URLs`;
    if (failed > 0) {
      result += `, ${failed} failed`;
    }
    return result;
  },
};
