"""facialattr.benchmarks: the load generators, sweeps and reports behind ``facialattr bench`` and benchmarks/*.py.

Importable only with the ``bench`` extra: a half-installed one fails here, with the command
that installs it, rather than deep inside a run after a server has started.
"""

from facialattr.extras import require_extra

require_extra("bench", what="facialattr.benchmarks")
