"""JSON Merge Patch (RFC 7396) for ``X-Patch-Session``: change some keys, send bytes not 40 KB.

The patch applies to the request's verified session (``{}`` when there is none). It is plain
data in, plain data out; the caller validates the patch with the same rules as a full set
(:func:`proxy.session_codec.parse_session_json`) and sizes the result like one.
"""

from __future__ import annotations

from typing import Any


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 section 2, MergePatch(Target, Patch): ``null`` removes a member, an object
    merges member by member, anything else replaces the target. Neither input is changed."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = merge_patch(result.get(name), value)
    return result
