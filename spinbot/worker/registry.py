"""Task names a worker can run: the catalog's, plus modules named in SPINBOT_EXTRA_TASKS (tests, plugins).

Each extra module defines TASK (a spinbot.tasks.base.TaskDef), the same contract as the catalog's modules.
"""

from __future__ import annotations

import importlib

from spinbot.tasks import catalog


def install_extra_tasks(spec: str) -> list[str]:
    """Import each comma-separated module and make its TASK runnable by name in this process; returns the names."""
    names = []
    for module_path in filter(None, (part.strip() for part in spec.split(","))):
        task = importlib.import_module(module_path).TASK
        # execute_task looks names up in the catalog; entries added here live only in this process.
        catalog.register_task(task.name, module_path)
        names.append(task.name)
    return names
