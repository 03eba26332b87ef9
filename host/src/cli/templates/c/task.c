/*
 * __IDENTIFIER__: a cronwerk scheduled task.
 *
 * `describe` tells the host who this task is; `execute` does one run. The
 * host's interfaces (log, state, config, cancellation, farm, instance) are
 * the cronwerk_task_* functions declared in bindings/scheduled_task.h,
 * generated from wit/task.wit.
 *
 * Who frees what (the canonical ABI moves every string through this
 * module's malloc):
 *   - execute's arguments (the run context and the payload) are yours:
 *     free them with the generated *_free functions before returning.
 *   - What an export returns is freed with free() after the host copied it:
 *     return malloc'd strings (scheduled_task_string_dup, or your own
 *     malloc'd buffer), never literals.
 *   - What you pass to an import is only read: literals and the stack are
 *     fine (scheduled_task_string_set).
 *   - What an import returns (state.get's value, state.set's error) is yours
 *     to free (scheduled_task_string_free).
 */

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheduled_task.h"

/* A printf into a new malloc'd string (NULL when memory runs out). */
static char *format(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *format(const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    int len = vsnprintf(NULL, 0, fmt, args);
    va_end(args);
    if (len < 0) return NULL;
    char *buf = malloc((size_t)len + 1);
    if (buf == NULL) return NULL;
    va_start(args, fmt);
    vsnprintf(buf, (size_t)len + 1, fmt, args);
    va_end(args);
    return buf;
}

/* Hands a malloc'd C string to the host as execute's message. */
static void give(scheduled_task_string_t *out, char *text) {
    if (text == NULL || text[0] == '\0') {
        /* An empty string is sent as no allocation at all. */
        free(text);
        out->ptr = NULL;
        out->len = 0;
        return;
    }
    out->ptr = (uint8_t *)text;
    out->len = strlen(text);
}

/* The value of the configuration's property `key` as a new C string, or
 * NULL when it is not set. */
static char *property(const cronwerk_task_types_run_context_t *ctx, const char *key) {
    for (size_t i = 0; i < ctx->properties.len; i++) {
        const scheduled_task_string_t *k = &ctx->properties.ptr[i].f0;
        const scheduled_task_string_t *v = &ctx->properties.ptr[i].f1;
        if (k->len == strlen(key) && memcmp(k->ptr, key, k->len) == 0)
            return strndup((const char *)v->ptr, v->len);
    }
    return NULL;
}

void exports_cronwerk_task_task_describe(exports_cronwerk_task_task_task_info_t *ret) {
    /* Called once when the host loads the component. Configurations refer
     * to the task by its identifier; keep it stable across versions. Every
     * field is duplicated: the host's post-return frees them. */
    scheduled_task_string_dup(&ret->identifier, "__IDENTIFIER__");
    scheduled_task_string_dup(&ret->display_name, "__DISPLAY_NAME__");
    scheduled_task_string_dup(&ret->description,
                              "Greets the configuration it runs for and counts its runs.");
    scheduled_task_string_dup(&ret->version, "0.1.0");
    ret->default_schedule.is_some = true;
    scheduled_task_string_dup(&ret->default_schedule.val, "every 1m");
}

/* The run itself; returns true for success and puts the run's message
 * (malloc'd) into *message either way. */
static bool run(const cronwerk_task_types_run_context_t *ctx, char **message) {
    /* Properties are set per configuration (`--property greeting=Hi`). */
    char *greeting = property(ctx, "greeting");
    if (greeting == NULL) greeting = strdup("Hello");
    if (greeting != NULL && strspn(greeting, " \t\r\n") == strlen(greeting)) {
        free(greeting);
        *message = format("property 'greeting' is empty: set a word such as Hi, or leave it out");
        return false;
    }

    /* State is kept per configuration from one run to the next. */
    unsigned long long runs = 1;
    scheduled_task_string_t key, value, error;
    scheduled_task_string_set(&key, "runs");
    if (cronwerk_task_state_get(&key, &value)) {
        char *text = strndup((const char *)value.ptr, value.len);
        char *end;
        unsigned long long previous = text ? strtoull(text, &end, 10) : 0;
        /* Not a number (edited by hand?): count again from 1. */
        if (text != NULL && end != text && *end == '\0') runs = previous + 1;
        free(text);
        scheduled_task_string_free(&value);
    }
    char runs_text[24];
    snprintf(runs_text, sizeof runs_text, "%llu", runs);
    scheduled_task_string_set(&value, runs_text);
    if (!cronwerk_task_state_set(&key, &value, &error)) {
        *message = format("cannot store the run count: %.*s", (int)error.len, (char *)error.ptr);
        scheduled_task_string_free(&error);
        free(greeting);
        return false;
    }

    /* Events land in the host's event log, tagged with this run's id. */
    const scheduled_task_string_t *name = &ctx->configuration_name;
    char *line = format("%s, %.*s!", greeting ? greeting : "", (int)name->len, (char *)name->ptr);
    scheduled_task_string_t code, text;
    scheduled_task_string_set(&code, "GREETING");
    scheduled_task_string_set(&text, line ? line : "(out of memory)");
    cronwerk_task_log_write(CRONWERK_TASK_LOG_LEVEL_INFO, &code, &text);
    free(line);
    free(greeting);

    *message = format("greeted %.*s, run %llu", (int)name->len, (char *)name->ptr, runs);
    return true;
}

bool exports_cronwerk_task_task_execute(exports_cronwerk_task_task_run_context_t *context,
                                        exports_cronwerk_task_task_payload_t *maybe_payload,
                                        scheduled_task_string_t *ret,
                                        scheduled_task_string_t *err) {
    /* One run. Returning true with *ret is success (empty: nothing to
     * report); false with *err is failure. Either message is the run's
     * result. */
    char *message = NULL;
    bool ok = run(context, &message);
    give(ok ? ret : err, message ? message : strdup("out of memory"));

    exports_cronwerk_task_task_run_context_free(context);
    if (maybe_payload != NULL) exports_cronwerk_task_task_payload_free(maybe_payload);
    return ok;
}
