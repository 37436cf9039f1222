// Native unit tests of security_headers.c: `./build.sh --test` compiles it
// with the host's C compiler against stand-ins for the few binding
// functions it calls (below), then runs init, on-request and on-response
// and checks the answers. No proxy, no wasm runtime.

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filter.h"

// ---- Stand-ins for the generated bindings (bindings/filter.c) -------------

static int borrows_dropped;

void bbproxy_plugin_types_request_drop_borrow(bbproxy_plugin_types_borrow_request_t handle) {
    (void)handle;
    borrows_dropped++;
}

void bbproxy_plugin_types_response_drop_borrow(bbproxy_plugin_types_borrow_response_t handle) {
    (void)handle;
    borrows_dropped++;
}

void filter_string_dup(filter_string_t *ret, const char *s) {
    ret->len = strlen(s);
    ret->ptr = malloc(ret->len + 1);
    memcpy(ret->ptr, s, ret->len);
}

void filter_string_free(filter_string_t *ret) {
    if (ret->len > 0) {
        free(ret->ptr);
    }
    ret->ptr = NULL;
    ret->len = 0;
}

// ---- Helpers --------------------------------------------------------------

static int failures;

#define CHECK(cond)                                                       \
    do {                                                                  \
        if (!(cond)) {                                                    \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                   \
        }                                                                 \
    } while (0)

static bool str_eq(const filter_string_t *s, const char *want) {
    return s->len == strlen(want) && memcmp(s->ptr, want, s->len) == 0;
}

// Calls init with `json`; returns NULL on success, else the error text
// (owned by a static buffer).
static const char *init(const char *json) {
    static char error[512];
    filter_string_t config;
    filter_string_dup(&config, json);
    filter_string_t err = {0};
    if (exports_filter_init(&config, &err)) {
        return NULL;
    }
    snprintf(error, sizeof error, "%.*s", (int)err.len, (const char *)err.ptr);
    filter_string_free(&err);
    return error;
}

static bool is_set(const filter_header_edit_t *e, const char *name, const char *value) {
    return e->tag == BBPROXY_PLUGIN_TYPES_HEADER_EDIT_SET && str_eq(&e->val.set.name, name) &&
           str_eq(&e->val.set.value, value);
}

static bool is_remove(const filter_header_edit_t *e, const char *name) {
    return e->tag == BBPROXY_PLUGIN_TYPES_HEADER_EDIT_REMOVE && str_eq(&e->val.remove, name);
}

// Checks the on-response answer against the expected two configurable
// values, then frees it as the bindings' post-return would.
static void check_response_edits(const char *hsts, const char *frame) {
    filter_list_header_edit_t edits = {0};
    borrows_dropped = 0;
    exports_filter_on_response((filter_borrow_request_t){1}, (filter_borrow_response_t){2}, &edits);
    CHECK(borrows_dropped == 2);
    CHECK(edits.len == 5);
    if (edits.len != 5) {
        return;
    }
    CHECK(is_set(&edits.ptr[0], "strict-transport-security", hsts));
    CHECK(is_set(&edits.ptr[1], "x-content-type-options", "nosniff"));
    CHECK(is_set(&edits.ptr[2], "x-frame-options", frame));
    CHECK(is_remove(&edits.ptr[3], "server"));
    CHECK(is_remove(&edits.ptr[4], "x-powered-by"));
    for (size_t i = 0; i < edits.len; i++) {
        if (edits.ptr[i].tag == BBPROXY_PLUGIN_TYPES_HEADER_EDIT_REMOVE) {
            filter_string_free(&edits.ptr[i].val.remove);
        } else {
            filter_string_free(&edits.ptr[i].val.set.name);
            filter_string_free(&edits.ptr[i].val.set.value);
        }
    }
    free(edits.ptr);
}

static void check_error(const char *json, const char *want) {
    const char *err = init(json);
    CHECK(err != NULL);
    if (err != NULL && strcmp(err, want) != 0) {
        fprintf(stderr, "init(%s):\n  got  %s\n  want %s\n", json, err, want);
        failures++;
    }
}

// ---- Tests ----------------------------------------------------------------

static void defaults(void) {
    CHECK(init("") == NULL);
    CHECK(init(" { } ") == NULL);
    CHECK(init("null") == NULL);
    check_response_edits("max-age=63072000; includeSubDomains", "DENY");
}

static void requests_are_forwarded_unchanged(void) {
    filter_request_action_t action;
    memset(&action, 0xff, sizeof action);
    borrows_dropped = 0;
    exports_filter_on_request((filter_borrow_request_t){1}, &action);
    CHECK(borrows_dropped == 1);
    CHECK(action.tag == BBPROXY_PLUGIN_TYPES_REQUEST_ACTION_FORWARD);
    CHECK(action.val.forward.headers.len == 0);
    CHECK(!action.val.forward.path.is_some);
    CHECK(!action.val.forward.query.is_some);
}

static void configured_values(void) {
    CHECK(init("{\"x-frame-options\": \"SAMEORIGIN\",\n \"strict-transport-security\": \"max-age=60\"}") ==
          NULL);
    check_response_edits("max-age=60", "SAMEORIGIN");
    // One key alone keeps the other's default (a fresh instance starts from
    // the defaults; here the previous init's values stand in for them).
    CHECK(init("{\"strict-transport-security\": \"max-age=31536000; preload\"}") == NULL);
    check_response_edits("max-age=31536000; preload", "SAMEORIGIN");
    // The escapes a header value may hold.
    CHECK(init("{\"x-frame-options\": \"a\\\"b\\\\c\\/d\\te\"}") == NULL);
    check_response_edits("max-age=31536000; preload", "a\"b\\c/d\te");
}

static void bad_configs_fail_init_and_change_nothing(void) {
    CHECK(init("{\"x-frame-options\": \"DENY\"}") == NULL);
    const char *prefix = "invalid c-security-headers-filter config: ";
    char want[256];
#define BAD(json, why)                                  \
    do {                                                \
        snprintf(want, sizeof want, "%s%s", prefix, why); \
        check_error(json, want);                        \
    } while (0)
    BAD("[]", "expected a JSON object like {\"x-frame-options\": \"SAMEORIGIN\"}");
    BAD("{\"server\": \"x\"}",
        "unknown key \"server\" (expected strict-transport-security or x-frame-options)");
    BAD("{\"x-frame-options\": 1}", "expected a string");
    BAD("{\"x-frame-options\": \"\"}",
        "\"x-frame-options\" must be a non-empty header value: visible ASCII, spaces and tabs");
    BAD("{\"x-frame-options\": \"a\\nb\"}",
        "a string has an escape other than \\\" \\\\ \\/ \\t (not valid in a header value)");
    BAD("{\"x-frame-options\": \"caf\xc3\xa9\"}",
        "\"x-frame-options\" must be a non-empty header value: visible ASCII, spaces and tabs");
    BAD("{\"x-frame-options\": \"DENY\", \"x-frame-options\": \"DENY\"}", "\"x-frame-options\" is given twice");
    BAD("{\"x-frame-options\": \"DENY\"", "expected , or } in the object");
    BAD("{\"x-frame-options\" \"DENY\"}", "expected : after a key");
    BAD("{\"x-frame-options\": \"DENY}", "a string is not closed");
    BAD("{} x", "unexpected text after the object");
    // A failed init keeps what was there: the strict-transport-security
    // value set before the bad key is not half-applied.
    BAD("{\"strict-transport-security\": \"max-age=1\", \"nope\": \"x\"}",
        "unknown key \"nope\" (expected strict-transport-security or x-frame-options)");
    char long_value[1100 + 32];
    strcpy(long_value, "{\"x-frame-options\": \"");
    memset(long_value + strlen(long_value), 'a', 1100);
    strcpy(long_value + strlen("{\"x-frame-options\": \"") + 1100, "\"}");
    BAD(long_value, "a string is too long (at most 1024 bytes)");
    check_response_edits("max-age=31536000; preload", "DENY");
}

int main(void) {
    defaults();
    requests_are_forwarded_unchanged();
    configured_values();
    bad_configs_fail_init_and_change_nothing();
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("c-security-headers-filter: all checks passed\n");
    return 0;
}
