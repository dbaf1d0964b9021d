"""A tiny library preloaded into tritonserver (``LD_PRELOAD``) for what 2.51 has no setting for.

1. **A secret flag value off the command line.** tritonserver 2.51 takes its admin key only
   as a flag (``--grpc-restricted-protocol=...:key=VALUE``); it reads no option file and no
   environment variable. Any local user reads a process's command line (``/proc/PID/cmdline``,
   ``ps -ef``), but only its own user (and root) reads its environment (``/proc/PID/environ``
   is mode 0400 and ptrace-checked). So the command line carries a public placeholder, the
   secret travels in the environment, and the library's constructor swaps the placeholder for
   the secret in ``main``'s argument vector before ``main`` runs, then removes the secret from
   the environment (the Python-backend stubs never see it). The memory ``/proc/PID/cmdline``
   shows is never written: it holds the placeholder from the start, so there is no window in
   which another user can read the key.
2. **Private shared memory.** The Python backend (boost.interprocess) creates its ``/dev/shm``
   regions, which hold the face crops of every request, and then ``fchmod``s them to 0644,
   whatever the umask. The library's ``fchmod`` strips group and other bits from any file under
   ``/dev/shm``. The environment variable is inherited, so the backend stubs load it too.
3. **Memory given back.** tritonserver receives a gRPC message (up to 2 GiB in 2.51, not
   configurable) in many small slices; after the reply they are freed, but glibc keeps the freed
   heap pages of its arenas, so a few refused 250 MB requests left the server 1 GB larger even
   with the allocation pool off (issue 27; ``malloc_trim(0)`` from a debugger gave it all back,
   while ``GLIBC_TUNABLES`` mmap, arena and trim thresholds did not). With ``TRIM_ENV_NAME`` set
   to ``INTERVAL_MS:FREE_BYTES``, a thread of tritonserver calls ``malloc_trim(0)`` every
   INTERVAL_MS whenever glibc holds more than FREE_BYTES free. The constructor removes the
   variable, so the stubs start no such thread.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from facialattr.errors import ServerError

log = logging.getLogger(__name__)

PLACEHOLDER = "@FACIALATTR_SECRET@"
ENV_NAME = "FACIALATTR_SECRET"
TRIM_ENV_NAME = "FACIALATTR_MALLOC_TRIM"
LIBRARY_STEM = "libfacialattr_preload"

# glibc calls ELF constructors with (argc, argv, envp); argv is the very array main() receives.
_SOURCE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int fchmod(int fd, mode_t mode) {
    static int (*real_fchmod)(int, mode_t);
    if (real_fchmod == NULL) real_fchmod = (int (*)(int, mode_t))dlsym(RTLD_NEXT, "fchmod");
    char link[64], target[16] = {0};
    snprintf(link, sizeof link, "/proc/self/fd/%%d", fd);
    if (readlink(link, target, sizeof target - 1) > 0 && strncmp(target, "/dev/shm/", 9) == 0) {
        mode &= ~(mode_t)(S_IRWXG | S_IRWXO);
    }
    return real_fchmod(fd, mode);
}

static const char placeholder[] = "%(placeholder)s";
static const char env_name[] = "%(env_name)s";
static const char trim_env_name[] = "%(trim_env_name)s";

static long trim_interval_ms;
static unsigned long long trim_free_bytes;

static void *facialattr_trim(void *unused) {
    (void)unused;
    struct timespec pause = {trim_interval_ms / 1000, (trim_interval_ms %% 1000) * 1000000L};
    for (;;) {
        nanosleep(&pause, NULL);
        if (mallinfo2().fordblks > trim_free_bytes) malloc_trim(0);
    }
    return NULL;
}

static void facialattr_start_trim(void) {
    const char *setting = getenv(trim_env_name);
    if (setting == NULL) return;
    if (sscanf(setting, "%%ld:%%llu", &trim_interval_ms, &trim_free_bytes) == 2 && trim_interval_ms > 0) {
        pthread_t thread;
        if (pthread_create(&thread, NULL, facialattr_trim, NULL) == 0) pthread_detach(thread);
    }
    unsetenv(trim_env_name);
}

__attribute__((constructor)) static void facialattr_fill_secret(int argc, char **argv, char **envp) {
    facialattr_start_trim();
    const char *secret = getenv(env_name);
    if (secret == NULL) return;
    size_t secret_len = strlen(secret), placeholder_len = strlen(placeholder);
    for (int i = 1; i < argc; i++) {
        char *at = strstr(argv[i], placeholder);
        if (at == NULL) continue;
        size_t head = (size_t)(at - argv[i]);
        char *filled = malloc(strlen(argv[i]) - placeholder_len + secret_len + 1);
        if (filled == NULL) abort();
        memcpy(filled, argv[i], head);
        memcpy(filled + head, secret, secret_len);
        strcpy(filled + head + secret_len, at + placeholder_len);
        argv[i] = filled; /* the cmdline memory keeps the placeholder */
    }
    /* Overwrite the value in the initial environment block too, then drop the variable. */
    for (char **env = envp; env != NULL && *env != NULL; env++) {
        if (strncmp(*env, env_name, sizeof env_name - 1) == 0 && (*env)[sizeof env_name - 1] == '=') {
            memset(*env + sizeof env_name, 'x', strlen(*env + sizeof env_name));
        }
    }
    unsetenv(env_name);
}
"""


def compiler() -> str | None:
    """The C compiler used to build the preload library, or None when there is none."""
    return shutil.which("cc") or shutil.which("gcc")


def _library_source() -> str:
    return _SOURCE % {"placeholder": PLACEHOLDER, "env_name": ENV_NAME, "trim_env_name": TRIM_ENV_NAME}


def prebuilt_path(stem: str, source: str) -> Path:
    """Where an install keeps library ``stem`` built ahead of time (the container image has no compiler).

    The name carries a digest of ``source``, so an upgraded package never loads an older build.
    """
    digest = hashlib.sha256(source.encode()).hexdigest()[:12]
    return Path(sys.prefix) / "lib" / "facialattr" / f"{stem}-{digest}.so"


def install_prebuilt(stem: str, source: str) -> Path:
    """Compile ``source`` to :func:`prebuilt_path` (the image's build stage does); returns the path."""
    path = prebuilt_path(stem, source)
    path.parent.mkdir(parents=True, exist_ok=True)
    return compile_library(source, path)


def prebuilt_or_compiled(stem: str, source: str, folder: Path) -> Path:
    """The install's prebuilt library when no other user could have written it, else one compiled into ``folder``.

    Raises ServerError when there is no trusted prebuilt library and no C compiler, or the build fails.
    """
    prebuilt = prebuilt_path(stem, source)
    if _is_trusted(prebuilt):
        return prebuilt
    return compile_library(source, folder / f"{stem}.so")


def _is_trusted(path: Path) -> bool:
    for item in (path, path.parent):
        try:
            info = item.stat()
        except OSError:
            return False
        if info.st_uid not in (0, os.geteuid()) or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return False
    return True


def build_preload(folder: Path) -> Path:
    """The preload library's path: prebuilt by the install, or compiled into ``folder`` (private to this user).

    Raises ServerError when no C compiler is found or the build fails.
    """
    return prebuilt_or_compiled(LIBRARY_STEM, _library_source(), folder)


def install_prebuilt_preload() -> Path:
    """Build the preload library into the install (see :func:`install_prebuilt`)."""
    return install_prebuilt(LIBRARY_STEM, _library_source())


def compile_library(source: str, library: Path) -> Path:
    """Compile C ``source`` into the shared library ``library`` (its source file sits next to it); returns ``library``.

    Raises ServerError when no C compiler is found or the build fails.
    """
    cc = compiler()
    if cc is None:
        raise ServerError("no C compiler (cc) found")
    source_path = library.with_suffix(".c")
    source_path.write_text(source)
    build = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(library), str(source_path), "-ldl", "-lpthread"],
                           capture_output=True, text=True, check=False)
    if build.returncode != 0:
        raise ServerError(f"building {library.name} with {cc} failed:\n{build.stderr.strip()}")
    return library
