/*
 * A native stand-in for the cronwerk host, to run disk_report.c under
 * AddressSanitizer/LeakSanitizer and prove it frees exactly what the bindings
 * say it owns. It plays the host's side of the canonical ABI: strings it
 * returns to the guest are allocated with the guest's cabi_realloc (so the
 * guest must free them), arguments it passes to exports are malloc'd (the
 * guest frees them), and after each export it frees the result the way the
 * generated post-return function does.
 *
 * Usage: host_stub FOLDER [top] [state-total-bytes] [fail-state-set] [cancel-after]
 * ("-" leaves a value unset).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheduled_task.h"

void *cabi_realloc(void *ptr, size_t old_size, size_t align, size_t new_size);

static const char *cfg_top, *state_total, *fail_set;
static long cancel_after = -1, polls;

static char *guest_copy(const char *s, size_t *len) {
    *len = strlen(s);
    char *p = cabi_realloc(NULL, 0, 1, *len);
    memcpy(p, s, *len);
    return p;
}

static void ret_option(uint8_t *ret, const char *value) {
    ret[0] = value != NULL;
    if (value) {
        size_t len;
        *(char **)(ret + sizeof(void *)) = guest_copy(value, &len);
        *(size_t *)(ret + 2 * sizeof(void *)) = len;
    }
}

void __wasm_import_cronwerk_task_log_write(int32_t level, uint8_t *code, size_t code_len,
                                           uint8_t *msg, size_t msg_len) {
    printf("  event %d %.*s %.*s\n", level, (int)code_len, code, (int)msg_len, msg);
}
int32_t __wasm_import_cronwerk_task_cancellation_is_cancelled(void) {
    return cancel_after >= 0 && ++polls > cancel_after;
}
void __wasm_import_cronwerk_task_config_get(uint8_t *key, size_t len, uint8_t *ret) {
    ret_option(ret, len == 3 && memcmp(key, "top", 3) == 0 ? cfg_top : NULL);
}
void __wasm_import_cronwerk_task_state_get(uint8_t *key, size_t len, uint8_t *ret) {
    ret_option(ret, len == 11 && memcmp(key, "total-bytes", 11) == 0 ? state_total : NULL);
}
void __wasm_import_cronwerk_task_state_set(uint8_t *key, size_t key_len, uint8_t *value,
                                           size_t value_len, uint8_t *ret) {
    printf("  state %.*s = %.*s\n", (int)key_len, key, (int)value_len, value);
    ret[0] = fail_set != NULL;
    if (fail_set) {
        size_t len;
        *(char **)(ret + sizeof(void *)) = guest_copy("state is full", &len);
        *(size_t *)(ret + 2 * sizeof(void *)) = len;
    }
}
/* Imports this task does not use: reaching one is a bug. */
void __wasm_import_cronwerk_task_config_get_all(uint8_t *r) { (void)r; abort(); }
void __wasm_import_cronwerk_task_state_remove(uint8_t *k, size_t l) { (void)k; (void)l; abort(); }
void __wasm_import_cronwerk_task_state_keys(uint8_t *r) { (void)r; abort(); }
void __wasm_import_cronwerk_task_farm_broadcast(uint8_t *a, size_t b, uint8_t *c, size_t d, uint8_t *e,
                                                size_t f, uint8_t *g, size_t h, uint8_t *i) {
    (void)a; (void)b; (void)c; (void)d; (void)e; (void)f; (void)g; (void)h; (void)i; abort();
}
void __wasm_import_cronwerk_task_instance_name(uint8_t *r) { (void)r; abort(); }
void __wasm_import_cronwerk_task_instance_roles(uint8_t *r) { (void)r; abort(); }

static const char *arg(int argc, char **argv, int i) {
    return i < argc && strcmp(argv[i], "-") != 0 ? argv[i] : NULL;
}

int main(int argc, char **argv) {
    cfg_top = arg(argc, argv, 2);
    state_total = arg(argc, argv, 3);
    fail_set = arg(argc, argv, 4);
    if (arg(argc, argv, 5)) cancel_after = atol(argv[5]);

    exports_cronwerk_task_task_task_info_t info;
    exports_cronwerk_task_task_describe(&info);
    printf("describe: %.*s\n", (int)info.identifier.len, info.identifier.ptr);
    cronwerk_task_types_task_info_free(&info); /* what post-return does */

    /* Lifted arguments, allocated as the canonical ABI would. */
    cronwerk_task_types_run_context_t ctx = {0};
    scheduled_task_string_dup(&ctx.configuration_name, "native");
    scheduled_task_string_dup(&ctx.identifier, "Acme.DiskReport");
    scheduled_task_string_dup(&ctx.run_id, "run-1");
    scheduled_task_string_dup(&ctx.instance_name, "native");
    ctx.properties.len = 2;
    ctx.properties.ptr = malloc(2 * sizeof *ctx.properties.ptr);
    scheduled_task_string_dup(&ctx.properties.ptr[0].f0, "other");
    scheduled_task_string_dup(&ctx.properties.ptr[0].f1, "x");
    scheduled_task_string_dup(&ctx.properties.ptr[1].f0, "folder");
    scheduled_task_string_dup(&ctx.properties.ptr[1].f1, argv[1]);
    cronwerk_task_types_payload_t payload;
    scheduled_task_string_dup(&payload.target, "t");
    scheduled_task_string_dup(&payload.text, "some text");
    payload.data.len = 3;
    payload.data.ptr = malloc(3);
    memcpy(payload.data.ptr, "abc", 3);

    scheduled_task_string_t ok, err;
    bool is_ok = exports_cronwerk_task_task_execute(&ctx, &payload, &ok, &err);
    scheduled_task_string_t *out = is_ok ? &ok : &err;
    printf("%s: %.*s\n", is_ok ? "ok" : "err", (int)out->len, out->ptr);
    scheduled_task_string_free(out); /* what post-return does */
    return 0;
}

/* Defined by scheduled_task_component_type.o, a wasm object, in the real build. */
void __component_type_object_force_link_scheduled_task(void) {}
