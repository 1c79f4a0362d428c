"""`Audio` and `Video`: files that a UI shows as a player (fal's toolkit). They are
`File`s in every other way; the JSON schema marks the field's kind."""

from __future__ import annotations

from pydantic import ConfigDict

from tidal.toolkit.file import File


class Audio(File):
    """An audio file given or returned by URL."""

    model_config = ConfigDict(json_schema_extra={"ui": {"field": "audio"}})


class Video(File):
    """A video file given or returned by URL."""

    model_config = ConfigDict(json_schema_extra={"ui": {"field": "video"}})
