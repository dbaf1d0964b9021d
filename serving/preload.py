"""Give tritonserver a secret flag value without putting it on its command line.

tritonserver 2.51 takes its admin key only as a flag (``--grpc-restricted-protocol=...:key=VALUE``);
it reads no option file and no environment variable. Any local user reads a process's
command line (``/proc/PID/cmdline``, ``ps -ef``), but only its own user (and root) reads
its environment (``/proc/PID/environ`` is mode 0400 and ptrace-checked).

So the command line carries a public placeholder, the secret travels in the environment,
and a tiny library preloaded into tritonserver (``LD_PRELOAD``) swaps the placeholder for
the secret in ``main``'s argument vector before ``main`` runs, then removes the secret from
the environment (the Python-backend stubs it starts never see it). The memory that
``/proc/PID/cmdline`` shows is never written: it holds the placeholder from the start, so
there is no window in which another user can read the key.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

from facialattr.errors import ServerError

log = logging.getLogger(__name__)

PLACEHOLDER = "@FACIALATTR_SECRET@"
ENV_NAME = "FACIALATTR_SECRET"

# glibc calls ELF constructors with (argc, argv, envp); argv is the very array main() receives.
_SOURCE = r"""
#include <stdlib.h>
#include <string.h>

static const char placeholder[] = "%(placeholder)s";
static const char env_name[] = "%(env_name)s";

__attribute__((constructor)) static void facialattr_fill_secret(int argc, char **argv, char **envp) {
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


def build_preload(folder: Path) -> Path:
    """Compile the placeholder-filling library into ``folder`` (private to this user); returns its path.

    Raises ServerError when no C compiler is found or the build fails.
    """
    cc = compiler()
    if cc is None:
        raise ServerError("no C compiler (cc) found")
    source, library = folder / "fill_secret.c", folder / "libfacialattr_fill_secret.so"
    source.write_text(_SOURCE % {"placeholder": PLACEHOLDER, "env_name": ENV_NAME})
    build = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(library), str(source)],
                           capture_output=True, text=True, check=False)
    if build.returncode != 0:
        raise ServerError(f"building {library.name} with {cc} failed:\n{build.stderr.strip()}")
    return library
