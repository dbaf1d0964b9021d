"""A custom batching strategy that keeps a malformed request out of other clients' batches.

Triton 2.51 admits a request whose batch dimension is negative (``[-2**62, H, W, 3]`` with one
image's bytes: the size checks overflow). The dynamic batcher merges it with whatever is
queued, and the Python backend then refuses the *whole* merged batch ("batch size N for
'MODEL', max allowed is M"): every request in it, from any client, fails with INTERNAL. A
flood of such requests from any local user failed most honest batches and most of the
supervisor's probes (issue 27).

Triton's custom batching API (``TRITONBACKEND_ModelBatchIncludeRequest``, a shared library
named ``batchstrategy.so`` in the model's folder) decides, request by request, whether the
next queued request joins the batch being formed. This one lets every request with a batch
dimension outside ``1..max_batch_size`` start a batch and closes that batch behind it: the
malformed request is refused alone, and nobody else's images are in its batch. It changes
nothing for well-formed requests.
"""

from __future__ import annotations

from pathlib import Path

from facialattr.serving import preload

LIBRARY_NAME = "batchstrategy.so"  # the name Triton looks for in a model's folder

# The Triton C API used here, declared rather than included: the wheel ships no headers.
_SOURCE = r"""
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct TRITONSERVER_Error TRITONSERVER_Error;
typedef struct TRITONSERVER_Message TRITONSERVER_Message;
typedef struct TRITONBACKEND_Request TRITONBACKEND_Request;
typedef struct TRITONBACKEND_Input TRITONBACKEND_Input;
typedef struct TRITONBACKEND_Model TRITONBACKEND_Model;
typedef struct TRITONBACKEND_Batcher TRITONBACKEND_Batcher;

extern TRITONSERVER_Error *TRITONBACKEND_RequestInputCount(TRITONBACKEND_Request *, uint32_t *);
extern TRITONSERVER_Error *TRITONBACKEND_RequestInputByIndex(TRITONBACKEND_Request *, uint32_t, TRITONBACKEND_Input **);
extern TRITONSERVER_Error *TRITONBACKEND_InputProperties(TRITONBACKEND_Input *, const char **, int *, const int64_t **,
                                                         uint32_t *, uint64_t *, uint32_t *);
extern TRITONSERVER_Error *TRITONBACKEND_ModelConfig(TRITONBACKEND_Model *, uint32_t, TRITONSERVER_Message **);
extern TRITONSERVER_Error *TRITONSERVER_MessageSerializeToJson(TRITONSERVER_Message *, const char **, size_t *);
extern TRITONSERVER_Error *TRITONSERVER_MessageDelete(TRITONSERVER_Message *);
extern void TRITONSERVER_ErrorDelete(TRITONSERVER_Error *);

#define EXPORT __attribute__((visibility("default")))

struct batch { int64_t max_batch_size; uint32_t requests; bool closed; };

/* Without a readable max_batch_size only non-positive batch dimensions count as malformed. */
static int64_t max_batch_size(TRITONBACKEND_Model *model) {
    int64_t found = INT64_MAX;
    TRITONSERVER_Message *message = NULL;
    const char *json = NULL;
    size_t size = 0;
    TRITONSERVER_Error *err = TRITONBACKEND_ModelConfig(model, 1, &message);
    if (err != NULL) { TRITONSERVER_ErrorDelete(err); return found; }
    err = TRITONSERVER_MessageSerializeToJson(message, &json, &size);
    if (err == NULL) {
        const char *at = strstr(json, "\"max_batch_size\":");
        if (at != NULL) {
            long long value = strtoll(at + strlen("\"max_batch_size\":"), NULL, 10);
            if (value > 0) found = value;
        }
    } else {
        TRITONSERVER_ErrorDelete(err);
    }
    err = TRITONSERVER_MessageDelete(message);
    if (err != NULL) TRITONSERVER_ErrorDelete(err);
    return found;
}

static bool well_formed(TRITONBACKEND_Request *request, int64_t limit) {
    uint32_t count = 0;
    TRITONSERVER_Error *err = TRITONBACKEND_RequestInputCount(request, &count);
    if (err != NULL) { TRITONSERVER_ErrorDelete(err); return false; }
    if (count == 0) return false;
    for (uint32_t i = 0; i < count; i++) {
        TRITONBACKEND_Input *input = NULL;
        const int64_t *shape = NULL;
        uint32_t dims = 0;
        err = TRITONBACKEND_RequestInputByIndex(request, i, &input);
        if (err == NULL) err = TRITONBACKEND_InputProperties(input, NULL, NULL, &shape, &dims, NULL, NULL);
        if (err != NULL) { TRITONSERVER_ErrorDelete(err); return false; }
        if (dims == 0 || shape[0] < 1 || shape[0] > limit) return false;
    }
    return true;
}

EXPORT TRITONSERVER_Error *TRITONBACKEND_ModelBatcherInitialize(TRITONBACKEND_Batcher **batcher,
                                                               TRITONBACKEND_Model *model) {
    int64_t *limit = malloc(sizeof *limit);
    if (limit != NULL) *limit = max_batch_size(model);
    *batcher = (TRITONBACKEND_Batcher *)limit;
    return NULL;
}

EXPORT TRITONSERVER_Error *TRITONBACKEND_ModelBatcherFinalize(TRITONBACKEND_Batcher *batcher) {
    free(batcher);
    return NULL;
}

EXPORT TRITONSERVER_Error *TRITONBACKEND_ModelBatchInitialize(const TRITONBACKEND_Batcher *batcher, void **userp) {
    struct batch *state = calloc(1, sizeof *state);
    if (state != NULL) state->max_batch_size = batcher != NULL ? *(const int64_t *)batcher : INT64_MAX;
    *userp = state;
    return NULL;
}

EXPORT TRITONSERVER_Error *TRITONBACKEND_ModelBatchFinalize(void *userp) {
    free(userp);
    return NULL;
}

/* The first request of a batch is always taken (else the batcher would spin on it); a
   malformed one closes its batch, and joins none that has begun. */
EXPORT TRITONSERVER_Error *TRITONBACKEND_ModelBatchIncludeRequest(TRITONBACKEND_Request *request, void *userp,
                                                                 bool *should_include) {
    struct batch *state = userp;
    if (state == NULL) { *should_include = true; return NULL; }
    bool ok = well_formed(request, state->max_batch_size);
    if (state->requests == 0) {
        state->closed = !ok;
        *should_include = true;
    } else {
        *should_include = ok && !state->closed;
    }
    if (*should_include) state->requests++;
    return NULL;
}
"""


_STEM = "libfacialattr_batch_guard"


def build_batch_guard(folder: Path) -> Path:
    """Compile the strategy library into ``folder`` (private to this user); returns its path.

    Link it into a model's folder as :data:`LIBRARY_NAME`. Raises ServerError when no C compiler
    is found or the build fails.
    """
    return preload.prebuilt_or_compiled(_STEM, _SOURCE, folder)


def install_prebuilt_batch_guard() -> Path:
    """Build the strategy library into the install, for hosts without a compiler (the container image)."""
    return preload.install_prebuilt(_STEM, _SOURCE)
