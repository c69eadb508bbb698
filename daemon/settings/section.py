"""The base of every settings section and the list types they share (sections live in modules)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict
from pydantic_settings import NoDecode


class Section(BaseModel):
    """Base of every settings section: unknown keys are errors; frozen once validated."""

    model_config = ConfigDict(extra="forbid", validate_default=True, frozen=True)


def split_list(value: Any) -> Any:
    """Accept ``a,b`` as well as a JSON list (or a real list) for list settings."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


StrList = Annotated[list[str], NoDecode]
IntList = Annotated[list[int], NoDecode]
