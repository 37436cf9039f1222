// A BBProxy filter written in C: on every backend response it sets the
// usual security headers and removes the ones that advertise the backend's
// software. Requests are forwarded unchanged.
//
//   strict-transport-security: max-age=63072000; includeSubDomains   (configurable)
//   x-content-type-options: nosniff
//   x-frame-options: DENY                                             (configurable)
//   server, x-powered-by: removed
//
// Configuration (optional; the values shown are the defaults):
//   {"strict-transport-security": "max-age=63072000; includeSubDomains",
//    "x-frame-options": "DENY"}
//
// The bindings (filter.h, filter.c, filter_component_type.o) are generated
// from wit/ by `wit-bindgen c --world filter`; see build.sh.
//
// Ownership rules of the generated C bindings, which the code below follows:
// - the callee owns its arguments: free `config`;
// - what an export returns is freed by the bindings after the call (the
//   `cabi_post_*` functions call free() on every string and list of the
//   answer), so every returned string must be malloc'd (filter_string_dup),
//   never a static one (filter_string_set);
// - the borrowed request and response must be dropped before returning, or
//   the call traps with "borrow handles still remain at the end of the call".

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "filter.h"

#define NAME "c-security-headers-filter"

// Longest configured header value. Real values are well under 200 bytes; a
// bound keeps the configuration in static storage.
#define MAX_VALUE 1024

// The configured values, set by init (instance state: one instance per
// component instance, and init runs before any other call).
static char hsts[MAX_VALUE + 1] = "max-age=63072000; includeSubDomains";
static char frame_options[MAX_VALUE + 1] = "DENY";

// ---------------------------------------------------------------------------
// Configuration: a flat JSON object of strings. Small on purpose: it accepts
// exactly the two keys above, with string values; anything else is an init
// error naming what is wrong, so a bad configuration never goes live.

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
    char error[256];
} parser_t;

// Appends `s` to the NUL-terminated `buf` of `cap` bytes, cutting it short
// if it does not fit. (Not snprintf: stdio would make the component import
// WASI streams and files it never uses.)
static void append(char *buf, size_t cap, const char *s) {
    size_t n = strlen(buf);
    while (*s && n + 1 < cap) {
        buf[n++] = *s++;
    }
    buf[n] = '\0';
}

// Records the first error, "invalid ... config: " + a + b + c.
static bool fail3(parser_t *ps, const char *a, const char *b, const char *c) {
    if (ps->error[0] == '\0') {
        append(ps->error, sizeof ps->error, "invalid " NAME " config: ");
        append(ps->error, sizeof ps->error, a);
        append(ps->error, sizeof ps->error, b);
        append(ps->error, sizeof ps->error, c);
    }
    return false;
}

static bool fail(parser_t *ps, const char *message) {
    return fail3(ps, message, "", "");
}

static void skip_space(parser_t *ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')) {
        ps->p++;
    }
}

static bool eat(parser_t *ps, char c) {
    skip_space(ps);
    if (ps->p < ps->end && *ps->p == (uint8_t)c) {
        ps->p++;
        return true;
    }
    return false;
}

// Reads a JSON string into `out` (NUL-terminated, at most `cap - 1` bytes).
// Escapes other than \" \\ \/ and \t are refused: none of them can be part
// of a valid header value.
static bool read_string(parser_t *ps, char *out, size_t cap) {
    if (!eat(ps, '"')) {
        return fail(ps, "expected a string");
    }
    size_t n = 0;
    while (ps->p < ps->end && *ps->p != '"') {
        uint8_t c = *ps->p++;
        if (c == '\\') {
            if (ps->p == ps->end) {
                break;
            }
            uint8_t e = *ps->p++;
            if (e == '"' || e == '\\' || e == '/') {
                c = e;
            } else if (e == 't') {
                c = '\t';
            } else {
                return fail(ps, "a string has an escape other than \\\" \\\\ \\/ \\t (not valid in a header value)");
            }
        }
        if (n + 1 >= cap) {
            return fail(ps, "a string is too long (at most 1024 bytes)");
        }
        out[n++] = (char)c;
    }
    if (!eat(ps, '"')) {
        return fail(ps, "a string is not closed");
    }
    out[n] = '\0';
    return true;
}

// A header value the proxy accepts: visible ASCII, spaces and tabs. Checked
// here, once, rather than as a fault on every response.
static bool valid_value(const char *v) {
    if (*v == '\0') {
        return false;
    }
    for (; *v; v++) {
        unsigned char c = (unsigned char)*v;
        if (c != '\t' && (c < ' ' || c > '~')) {
            return false;
        }
    }
    return true;
}

// Parses `config` into the values above, or says why not in ps->error.
static bool parse_config(parser_t *ps) {
    skip_space(ps);
    if (ps->p == ps->end) {
        return true;  // no configuration: the defaults
    }
    if (ps->end - ps->p >= 4 && memcmp(ps->p, "null", 4) == 0) {
        ps->p += 4;
        skip_space(ps);
        return ps->p == ps->end || fail(ps, "unexpected text after null");
    }
    if (!eat(ps, '{')) {
        return fail(ps, "expected a JSON object like {\"x-frame-options\": \"SAMEORIGIN\"}");
    }
    bool seen_hsts = false, seen_frame = false;
    if (!eat(ps, '}')) {
        do {
            char key[64];
            char value[MAX_VALUE + 1];
            if (!read_string(ps, key, sizeof key)) {
                return false;
            }
            if (!eat(ps, ':')) {
                return fail(ps, "expected : after a key");
            }
            if (!read_string(ps, value, sizeof value)) {
                return false;
            }
            if (!valid_value(value)) {
                return fail3(ps, "\"", key,
                             "\" must be a non-empty header value: visible ASCII, spaces and tabs");
            }
            bool *seen;
            char *target;
            if (strcmp(key, "strict-transport-security") == 0) {
                seen = &seen_hsts;
                target = hsts;
            } else if (strcmp(key, "x-frame-options") == 0) {
                seen = &seen_frame;
                target = frame_options;
            } else {
                return fail3(ps, "unknown key \"", key,
                             "\" (expected strict-transport-security or x-frame-options)");
            }
            if (*seen) {
                return fail3(ps, "\"", key, "\" is given twice");
            }
            *seen = true;
            // Both buffers hold MAX_VALUE + 1 bytes, as `value` does.
            memcpy(target, value, strlen(value) + 1);
        } while (eat(ps, ','));
        if (!eat(ps, '}')) {
            return fail(ps, "expected , or } in the object");
        }
    }
    skip_space(ps);
    return ps->p == ps->end || fail(ps, "unexpected text after the object");
}

bool exports_filter_init(filter_string_t *config, filter_string_t *err) {
    // Parse into a copy first, so a failed init leaves the defaults rather
    // than half a configuration.
    static char saved_hsts[MAX_VALUE + 1], saved_frame[MAX_VALUE + 1];
    memcpy(saved_hsts, hsts, sizeof hsts);
    memcpy(saved_frame, frame_options, sizeof frame_options);
    parser_t ps = {config->ptr, config->ptr + config->len, ""};
    bool ok = parse_config(&ps);
    filter_string_free(config);
    if (!ok) {
        memcpy(hsts, saved_hsts, sizeof hsts);
        memcpy(frame_options, saved_frame, sizeof frame_options);
        filter_string_dup(err, ps.error);
    }
    return ok;
}

// ---------------------------------------------------------------------------
// The filter.

void exports_filter_on_request(filter_borrow_request_t req, filter_request_action_t *ret) {
    bbproxy_plugin_types_request_drop_borrow(req);
    // Forward, no edits: an empty list (no allocation, so nothing to free)
    // and neither a new path nor a new query.
    memset(ret, 0, sizeof *ret);
    ret->tag = BBPROXY_PLUGIN_TYPES_REQUEST_ACTION_FORWARD;
    ret->val.forward.path.is_some = false;
    ret->val.forward.query.is_some = false;
}

static void set(filter_header_edit_t *edit, const char *name, const char *value) {
    edit->tag = BBPROXY_PLUGIN_TYPES_HEADER_EDIT_SET;
    filter_string_dup(&edit->val.set.name, name);
    filter_string_dup(&edit->val.set.value, value);
}

static void remove_header(filter_header_edit_t *edit, const char *name) {
    edit->tag = BBPROXY_PLUGIN_TYPES_HEADER_EDIT_REMOVE;
    filter_string_dup(&edit->val.remove, name);
}

void exports_filter_on_response(filter_borrow_request_t req, filter_borrow_response_t resp,
                                filter_list_header_edit_t *ret) {
    bbproxy_plugin_types_request_drop_borrow(req);
    bbproxy_plugin_types_response_drop_borrow(resp);
    enum { EDITS = 5 };
    filter_header_edit_t *edits = malloc(EDITS * sizeof *edits);
    if (edits == NULL) {
        // Out of memory: change nothing rather than trap.
        ret->ptr = NULL;
        ret->len = 0;
        return;
    }
    set(&edits[0], "strict-transport-security", hsts);
    set(&edits[1], "x-content-type-options", "nosniff");
    set(&edits[2], "x-frame-options", frame_options);
    remove_header(&edits[3], "server");
    remove_header(&edits[4], "x-powered-by");
    ret->ptr = edits;
    ret->len = EDITS;
}
