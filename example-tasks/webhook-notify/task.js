// Acme.WebhookNotify: posts a line about a run that ended to a webhook, for
// follow-up runs (`cronwerk task edit Nightly --on-failure "Page me"`).
//
// Setting `url` (the `config` import, shared by all configurations): the
// webhook URL. Keep it a secret when its path carries a token:
//   cronwerk config set --secret Acme.WebhookNotify url < webhook-url.txt
// Property `url`: overrides the setting for one configuration.
// Property `prefix`: put before the text, e.g. `[prod] `.
//
// Grant: the configuration must allow the webhook's host, or the request is
// refused before it leaves: `--allow-http HOST[:PORT]` (without a port only
// 80 and 443), e.g. `--allow-http hooks.example.com`. A refused request
// leaves an HTTP_DENIED event naming the grant, and the run fails.
//
// A follow-up run has a payload with target `follow-up` whose text is the
// ended run as a JSON object; the task POSTs (Content-Type: application/json)
//   {"text": "Nightly failed: disk full (run …, instance web-1)", "run": {…}}
// which Slack and Mattermost incoming webhooks and any JSON receiver take.
// Without a payload (`cronwerk task run`, `cronwerk exec`) it posts a test
// message with `"run": null`. Any other payload is an error, and so is a
// response outside 2xx. The URL is never logged or returned (its path may be
// a secret): messages name only its host. The text is sent as is (no Slack
// escaping of `<`, `>` and `&`).
//
// Built with componentize-js by `cargo xtask build-examples`, with the pinned
// tools of example-tasks/cache-warmup/package.json. `execute` is async so
// that `fetch` works; a returned string is `ok`, a thrown string `err`.

import { write } from 'cronwerk:task/log@0.2.0';
import { get as configGet } from 'cronwerk:task/config@0.2.0';

const IDENTIFIER = 'Acme.WebhookNotify';
const FOLLOW_UP_TARGET = 'follow-up';
/** How much of the ended run's message goes into the one-line text. */
const MAX_MESSAGE_CHARS = 500;
/** How much of an error response's body an `err` quotes. */
const MAX_ANSWER_CHARS = 200;

function property(context, name) {
  const found = context.properties.find(([key]) => key === name);
  return found === undefined ? undefined : found[1];
}

/** `text` on one line: runs of whitespace (newlines too) become one space. */
function oneLine(text, max) {
  const line = String(text).replace(/\s+/g, ' ').trim();
  return line.length > max ? `${line.slice(0, max - 1)}…` : line;
}

/** A non-empty string field of the ended run, or undefined. */
function field(run, name) {
  const value = run[name];
  return typeof value === 'string' && value.trim() !== '' ? value : undefined;
}

/** The webhook URL and where it came from; throws (err) when there is none. */
function webhook(context) {
  let raw = property(context, 'url')?.trim();
  let source = "the property 'url'";
  if (!raw) {
    raw = configGet('url')?.trim();
    source = `the setting 'url' of ${IDENTIFIER}`;
  }
  if (!raw) {
    throw (
      `no webhook URL: run \`cronwerk config set --secret ${IDENTIFIER} url\` and paste ` +
      `the URL when asked (or give this configuration the property url)`
    );
  }
  let url;
  try {
    url = new URL(raw);
  } catch {
    // Not echoed: a mistyped URL may still hold the secret.
    throw `${source} is not a URL`;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw `${source} is not an http or https URL`;
  }
  return url;
}

/** The ended run, parsed from a follow-up payload; throws (err) on any other. */
function endedRun(payload) {
  if (payload.target !== FOLLOW_UP_TARGET) {
    throw (
      `payload target is '${oneLine(payload.target, 100)}', not '${FOLLOW_UP_TARGET}': ` +
      `this task posts follow-up runs only`
    );
  }
  let run;
  try {
    run = JSON.parse(payload.text);
  } catch {
    throw 'the follow-up payload text is not a JSON object (it is not JSON)';
  }
  if (run === null || typeof run !== 'object' || Array.isArray(run)) {
    throw 'the follow-up payload text is not a JSON object';
  }
  return run;
}

/** `Nightly failed: disk full (run 0193…, instance web-1)`. */
function summary(run) {
  const name = field(run, 'configuration') ?? field(run, 'identifier') ?? 'a configuration';
  let line = `${name} ${field(run, 'outcome') ?? 'ended'}`;
  const message = field(run, 'message');
  if (message !== undefined) {
    line += `: ${oneLine(message, MAX_MESSAGE_CHARS)}`;
  }
  const where = [];
  if (field(run, 'run_id') !== undefined) where.push(`run ${run.run_id}`);
  if (field(run, 'instance') !== undefined) where.push(`instance ${run.instance}`);
  if (where.length > 0) {
    line += ` (${where.join(', ')})`;
  }
  return oneLine(line, 4 * MAX_MESSAGE_CHARS);
}

/** `text` with every spelling of the URL beyond its host replaced by the host. */
function scrub(text, url) {
  let out = String(text);
  for (const secret of [url.href, `${url.pathname}${url.search}`]) {
    if (secret.length > 1) {
      out = out.split(secret).join('…');
    }
  }
  return out;
}

export const task = {
  describe() {
    return {
      identifier: IDENTIFIER,
      displayName: 'Webhook notification',
      description:
        'Posts a one-line summary of a run that ended (a follow-up run) to a webhook ' +
        'as JSON, the shape Slack and Mattermost incoming webhooks take.',
      version: '1.0.0',
      defaultSchedule: undefined,
    };
  },

  async execute(context, payload) {
    const url = webhook(context);
    const host = url.host;
    let run = null;
    let text;
    let what;
    if (payload === undefined) {
      text = `test notification from cronwerk configuration ${context.configurationName}`;
      what = 'a test notification';
    } else {
      run = endedRun(payload);
      text = summary(run);
      what = `the end of '${oneLine(field(run, 'configuration') ?? '?', 100)}' run ${oneLine(field(run, 'run_id') ?? '?', 100)}`;
    }
    text = `${property(context, 'prefix') ?? ''}${text}`;

    let response;
    try {
      response = await fetch(url.href, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ text, run }),
        // A webhook that redirects is misconfigured; following it could
        // send the message to a host nobody granted.
        redirect: 'manual',
      });
    } catch (e) {
      throw `cannot post to the webhook at ${host}: ${scrub(e?.message ?? e, url)}`;
    }
    let answer = '';
    try {
      answer = await response.text();
    } catch {
      // The status is what counts; the body only explains an error.
    }
    write('info', 'WEBHOOK_POSTED', `posted ${what} to ${host}: ${response.status}`);
    if (response.status < 200 || response.status > 299) {
      const said = oneLine(scrub(answer, url), MAX_ANSWER_CHARS);
      throw `the webhook at ${host} answered ${response.status}${said === '' ? '' : `: ${said}`}`;
    }
    return `notified ${host} (${response.status})`;
  },
};
