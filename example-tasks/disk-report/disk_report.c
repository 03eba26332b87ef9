/*
 * Acme.DiskReport: reports the sizes of the files in a folder the operator
 * granted (e.g. `--grant-dir /srv/uploads:/data`), lists the largest ones as
 * events and says how the total changed since the previous run.
 *
 * Property (per configuration):
 *   folder          the folder as the task sees it (default `/data`)
 * Setting (per identifier, `cronwerk config set Acme.DiskReport top 10`):
 *   top             how many of the largest files to list (default 5)
 * State (per configuration, between runs):
 *   total-bytes     the total the previous complete run found
 *
 * Only the folder's own regular files count: subfolders are not entered and
 * symbolic links are not followed.
 *
 * Who frees what. The bindings (guest-c/bindings, made by `wit-bindgen c`)
 * pass every string and list as a pointer and a length, and the canonical ABI
 * moves memory between host and guest with the guest's malloc. The rules:
 *   - The arguments of an export (`execute`'s context and payload) belong to
 *     this code: free them with the generated *_free functions when done.
 *   - What an export returns is freed by the generated post-return function
 *     with free() once the host has copied it, so it must come from malloc
 *     (scheduled_task_string_dup, or a buffer of our own), never a literal.
 *   - What we pass to an import is only borrowed by the host, so literals and
 *     stack memory are fine there (scheduled_task_string_set).
 *   - What an import returns (an option<string> from config.get or state.get,
 *     the error of state.set) was allocated in our memory and is ours to free.
 * A run's instance is thrown away when it ends, so a leak would not outlive
 * the run, but this file is meant to be copied into tasks that loop, so it
 * frees everything it owns.
 */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "scheduled_task.h"

#define DEFAULT_FOLDER "/data"
#define DEFAULT_TOP 5
/* The host keeps 1,000 events per run; a larger `top` would only be cut. */
#define MAX_TOP 900

/* ---------------------------------------------------------------- helpers */

/* A printf into a new malloc'd buffer, NULL if memory ran out. */
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

/*
 * Hands a malloc'd C string to the host as an export's result; the
 * post-return function frees it. An empty or missing string is sent as an
 * empty one, which post-return leaves alone, so it is freed here instead.
 */
static void give(scheduled_task_string_t *out, char *text) {
    if (text == NULL || text[0] == '\0') {
        free(text);
        out->ptr = NULL;
        out->len = 0;
        return;
    }
    out->ptr = (uint8_t *)text;
    out->len = strlen(text);
}

/* Copies a string the host gave us into a C string and frees the original. */
static char *take(scheduled_task_string_t *s) {
    char *copy = strndup((const char *)s->ptr, s->len);
    scheduled_task_string_free(s);
    return copy;
}

static void log_event(cronwerk_task_log_level_t level, const char *code,
                      const char *message) {
    scheduled_task_string_t code_s, message_s;
    scheduled_task_string_set(&code_s, code);
    scheduled_task_string_set(&message_s, message ? message : "(out of memory)");
    cronwerk_task_log_write(level, &code_s, &message_s);
}

/* The value of a configuration property as a new C string, NULL if unset. */
static char *property(const cronwerk_task_types_run_context_t *ctx,
                      const char *key) {
    size_t key_len = strlen(key);
    for (size_t i = 0; i < ctx->properties.len; i++) {
        const scheduled_task_string_t *k = &ctx->properties.ptr[i].f0;
        const scheduled_task_string_t *v = &ctx->properties.ptr[i].f1;
        if (k->len == key_len && memcmp(k->ptr, key, key_len) == 0)
            return strndup((const char *)v->ptr, v->len);
    }
    return NULL;
}

/* An identifier setting as a new C string, NULL if unset. */
static char *setting(const char *key) {
    scheduled_task_string_t key_s, value;
    scheduled_task_string_set(&key_s, key);
    /* When the result is false `value` is untouched garbage: nothing to free. */
    if (!cronwerk_task_config_get(&key_s, &value)) return NULL;
    return take(&value);
}

static char *state_get(const char *key) {
    scheduled_task_string_t key_s, value;
    scheduled_task_string_set(&key_s, key);
    if (!cronwerk_task_state_get(&key_s, &value)) return NULL;
    return take(&value);
}

/* Stores a value; on failure returns the host's reason (malloc'd). */
static char *state_set(const char *key, const char *value) {
    scheduled_task_string_t key_s, value_s, err;
    scheduled_task_string_set(&key_s, key);
    scheduled_task_string_set(&value_s, value);
    if (cronwerk_task_state_set(&key_s, &value_s, &err)) return NULL;
    return take(&err);
}

/* Parses a whole decimal number, rejecting signs, blanks and trailing text. */
static bool parse_u64(const char *text, uint64_t *out) {
    if (text == NULL || text[0] < '0' || text[0] > '9') return false;
    char *end;
    errno = 0;
    unsigned long long n = strtoull(text, &end, 10);
    if (errno != 0 || *end != '\0') return false;
    *out = n;
    return true;
}

/* ------------------------------------------------------------ the survey */

struct file_size {
    char *name;
    uint64_t bytes;
};

struct survey {
    struct file_size *files;
    size_t count, capacity;
    uint64_t total_bytes;
    size_t skipped; /* subfolders, links and other non-files */
    bool cancelled;
};

static void survey_free(struct survey *s) {
    for (size_t i = 0; i < s->count; i++) free(s->files[i].name);
    free(s->files);
    s->files = NULL;
    s->count = s->capacity = 0;
}

static bool survey_add(struct survey *s, const char *name, uint64_t bytes) {
    if (s->count == s->capacity) {
        size_t capacity = s->capacity ? s->capacity * 2 : 64;
        struct file_size *grown = realloc(s->files, capacity * sizeof *grown);
        if (grown == NULL) return false;
        s->files = grown;
        s->capacity = capacity;
    }
    char *copy = strdup(name);
    if (copy == NULL) return false;
    s->files[s->count++] = (struct file_size){copy, bytes};
    s->total_bytes += bytes;
    return true;
}

/* Largest first; equal sizes by name, so the event log is reproducible. */
static int by_size_desc(const void *a, const void *b) {
    const struct file_size *x = a, *y = b;
    if (x->bytes != y->bytes) return x->bytes < y->bytes ? 1 : -1;
    return strcmp(x->name, y->name);
}

/*
 * Lists `folder` into `s`. Returns NULL on success, else a malloc'd message
 * for the run's result. A cancelled survey is a success with s->cancelled set.
 */
static char *survey_folder(const char *folder, struct survey *s) {
    DIR *dir = opendir(folder);
    if (dir == NULL) {
        /* WASI sees only granted folders, so "not found" usually means "not
         * granted": say how to grant it. */
        return format("cannot read folder '%s' (%s): grant it to the task, "
                      "e.g. --grant-dir /srv/files:%s, or set the property "
                      "'folder' to a granted path",
                      folder, strerror(errno), folder);
    }
    char *failure = NULL;
    struct dirent *entry;
    while ((errno = 0, entry = readdir(dir)) != NULL) {
        /* A poll per entry is cheap next to the stat it precedes, and lets a
         * huge folder stop within the host's grace period. */
        if (cronwerk_task_cancellation_is_cancelled()) {
            s->cancelled = true;
            break;
        }
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0)
            continue;
        struct stat st;
        if (fstatat(dirfd(dir), entry->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            /* A file removed while we list is not worth failing the run. */
            char *why = format("%s/%s: %s", folder, entry->d_name, strerror(errno));
            log_event(CRONWERK_TASK_LOG_LEVEL_WARNING, "DISK_UNREADABLE", why);
            free(why);
            continue;
        }
        if (!S_ISREG(st.st_mode)) {
            s->skipped++;
            continue;
        }
        if (!survey_add(s, entry->d_name, (uint64_t)st.st_size)) {
            failure = format("out of memory after %zu files", s->count);
            break;
        }
    }
    if (failure == NULL && entry == NULL && errno != 0)
        failure = format("cannot list folder '%s': %s", folder, strerror(errno));
    closedir(dir);
    return failure;
}

/* ------------------------------------------------------- the task export */

void exports_cronwerk_task_task_describe(exports_cronwerk_task_task_task_info_t *ret) {
    /* Duplicated, not borrowed: post-return frees every field. */
    scheduled_task_string_dup(&ret->identifier, "Acme.DiskReport");
    scheduled_task_string_dup(&ret->display_name, "Disk report");
    scheduled_task_string_dup(&ret->description,
        "Reports the sizes of the files in a granted folder, lists the largest "
        "and says how the total changed since the previous run.");
    scheduled_task_string_dup(&ret->version, "0.1.0");
    ret->default_schedule.is_some = true;
    scheduled_task_string_dup(&ret->default_schedule.val, "every 1h");
}

/*
 * The body of a run; returns true for ok. `result` receives a malloc'd
 * message either way. Kept apart from the export so the export can free its
 * arguments in one place, whichever way the run ends.
 */
static bool run(const cronwerk_task_types_run_context_t *ctx, char **result) {
    char *folder = property(ctx, "folder");
    if (folder == NULL) folder = strdup(DEFAULT_FOLDER);

    uint64_t top = DEFAULT_TOP;
    char *top_text = setting("top");
    if (top_text != NULL && (!parse_u64(top_text, &top) || top > MAX_TOP)) {
        *result = format("setting 'top' = '%s' is not a whole number from 0 to %d",
                         top_text, MAX_TOP);
        free(top_text);
        free(folder);
        return false;
    }
    free(top_text);

    struct survey s = {0};
    char *failure = survey_folder(folder, &s);
    if (failure != NULL) {
        survey_free(&s);
        free(folder);
        *result = failure;
        return false;
    }
    if (s.cancelled) {
        /* A partial total would make the next run's change meaningless, so
         * leave the state as the last complete run left it. */
        *result = format("cancelled after %zu files of '%s'; state unchanged",
                         s.count, folder);
        survey_free(&s);
        free(folder);
        return false;
    }

    qsort(s.files, s.count, sizeof *s.files, by_size_desc);
    for (size_t i = 0; i < s.count && i < top; i++) {
        char *line = format("%s/%s: %" PRIu64 " bytes", folder, s.files[i].name,
                            s.files[i].bytes);
        log_event(CRONWERK_TASK_LOG_LEVEL_INFO, "DISK_REPORT", line);
        free(line);
    }

    /* The change since the previous run, when there was one we can read. */
    char *change = NULL;
    uint64_t previous;
    char *previous_text = state_get("total-bytes");
    if (parse_u64(previous_text, &previous)) {
        int64_t delta = (int64_t)(s.total_bytes - previous);
        change = format(", %+" PRId64 " bytes since the previous run", delta);
    } else {
        /* No state yet (first run), or a value we did not write: start over. */
        change = strdup(", first run");
    }
    free(previous_text);

    char *summary = format("%zu file%s, %" PRIu64 " bytes in %s%s; skipped %zu other entr%s",
                           s.count, s.count == 1 ? "" : "s", s.total_bytes, folder,
                           change ? change : "", s.skipped, s.skipped == 1 ? "y" : "ies");
    log_event(CRONWERK_TASK_LOG_LEVEL_INFO, "DISK_SUMMARY", summary);
    free(change);

    char total_text[24];
    snprintf(total_text, sizeof total_text, "%" PRIu64, s.total_bytes);
    char *why = state_set("total-bytes", total_text);

    survey_free(&s);
    free(folder);
    if (why != NULL) {
        *result = format("%s; but the state could not be saved: %s",
                         summary ? summary : "", why);
        free(why);
        free(summary);
        return false;
    }
    *result = summary;
    return true;
}

bool exports_cronwerk_task_task_execute(exports_cronwerk_task_task_run_context_t *context,
                                        exports_cronwerk_task_task_payload_t *maybe_payload,
                                        scheduled_task_string_t *ret,
                                        scheduled_task_string_t *err) {
    char *message = NULL;
    bool ok = run(context, &message);
    if (message == NULL) message = strdup("out of memory");
    give(ok ? ret : err, message);

    /* The arguments are ours (see the top of the file). */
    exports_cronwerk_task_task_run_context_free(context);
    if (maybe_payload != NULL) exports_cronwerk_task_task_payload_free(maybe_payload);
    return ok;
}
