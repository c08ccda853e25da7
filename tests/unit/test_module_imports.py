"""Every spinbot module imports on its own, as the first spinbot module of a process: an import cycle shows only in
some orders (`import spinbot.worker.heartbeat` first failed through spinbot.queue's package imports while every
command line worked)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys
    import spinbot

    found = pkgutil.walk_packages(spinbot.__path__, "spinbot.")
    names = sorted(m.name for m in found if not m.name.endswith(".__main__"))  # those run a command when imported
    failed = {}
    for name in names:
        for loaded in [m for m in sys.modules if m == "spinbot" or m.startswith("spinbot.")]:
            del sys.modules[loaded]  # third-party modules stay loaded: only spinbot's own order is under test
        try:
            importlib.import_module(name)
        except ImportError as err:
            failed[name] = str(err).splitlines()[0]
    print(json.dumps({"checked": len(names), "failed": failed}))
    """
)


def test_every_module_imports_first_without_a_cycle():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["checked"] > 150  # the whole package was walked
    assert result["failed"] == {}
