// A BBProxy balancer written in C: requests that carry the same `x-user`
// header always go to the same backend, by rendezvous (highest random weight)
// hashing, so when a backend's breaker opens only that backend's users move.
// Requests without the header go to the first candidate.
//
// The bindings (balancer.h, balancer.c, balancer_component_type.o) are
// generated from wit/ by `wit-bindgen c --world balancer`; see build.sh.
//
// Ownership rules of the generated C bindings, which the code below follows:
// - the callee owns its arguments: free `config` and `candidates`;
// - a string the host returns (a header value) is ours to free;
// - the borrowed request must be dropped before returning, or the call traps
//   with "borrow handles still remain at the end of the call".

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "balancer.h"

static const char HEADER[] = "x-user";

// 32-bit FNV-1a, continued from `hash`.
static uint32_t fnv1a(uint32_t hash, const uint8_t *bytes, size_t len) {
    for (size_t i = 0; i < len; i++) {
        hash ^= bytes[i];
        hash *= 16777619u;
    }
    return hash;
}

// The weight of backend `id` for the key `hash`: FNV-1a of the key's bytes
// followed by the id's four bytes, little-endian.
static uint32_t weight(uint32_t key_hash, uint32_t id) {
    uint8_t le[4] = {id & 0xff, (id >> 8) & 0xff, (id >> 16) & 0xff, id >> 24};
    return fnv1a(key_hash, le, sizeof le);
}

static bool is_space(uint8_t c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

// Whether the JSON text is empty, `{}` or `null` (whitespace allowed).
static bool config_is_empty(const balancer_string_t *config) {
    char compact[8];
    size_t n = 0;
    for (size_t i = 0; i < config->len; i++) {
        if (is_space(config->ptr[i])) {
            continue;
        }
        if (n == sizeof compact - 1) {
            return false;
        }
        compact[n++] = (char)config->ptr[i];
    }
    compact[n] = '\0';
    return n == 0 || strcmp(compact, "{}") == 0 || strcmp(compact, "null") == 0;
}

bool exports_balancer_init(balancer_string_t *config, balancer_string_t *err) {
    bool ok = config_is_empty(config);
    balancer_string_free(config);
    if (!ok) {
        balancer_string_dup(err, "c-hash-balancer takes no configuration");
    }
    return ok;
}

bool exports_balancer_pick(balancer_borrow_request_t req, uint32_t upstream,
                           balancer_list_backend_t *candidates, uint32_t *ret) {
    (void)upstream;
    size_t count = candidates->len;
    uint32_t best = 0;

    balancer_string_t name;
    balancer_string_set(&name, HEADER);  // borrowed: not freed
    balancer_string_t value;
    if (bbproxy_plugin_types_method_request_header(req, &name, &value)) {
        uint32_t key = fnv1a(2166136261u, value.ptr, value.len);
        uint32_t best_weight = 0;
        for (size_t i = 0; i < count; i++) {
            uint32_t w = weight(key, candidates->ptr[i].id);
            if (i == 0 || w > best_weight) {
                best = (uint32_t)i;
                best_weight = w;
            }
        }
        balancer_string_free(&value);
    }

    bbproxy_plugin_types_request_drop_borrow(req);
    balancer_list_backend_free(candidates);
    if (count == 0) {
        return false;  // none: a fault, but the proxy never sends no candidates
    }
    *ret = best;
    return true;
}
