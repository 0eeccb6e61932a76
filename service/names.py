"""The one rule for names that clients send and the service turns into paths under its roots
(model ids, dataset names): relative, segments of letters, digits, `.`, `_` and `-` that do
not start with a dot, no `..`."""

from __future__ import annotations

import re

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")


def is_safe_name(name: str) -> bool:
    """Whether `name` is a relative path that stays under the root it is joined to."""
    return bool(_NAME.match(name)) and ".." not in name.split("/")
