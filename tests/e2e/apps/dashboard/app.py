"""The dashboard's browser tests deploy this App: a text and an image input, an image
output (a PNG drawn here, no imaging library needed), and an endpoint that raises."""

import struct
import zlib
from typing import Literal

from fastapi import Request
from pydantic import BaseModel, Field

import tidal
from tidal.toolkit import Image


class PosterInput(BaseModel):
    prompt: str = Field(min_length=1, description="What the poster says.")
    image: Image = Field(description="A picture; the poster takes its size.")
    style: Literal["sunrise", "ocean", "forest"] = Field(default="ocean")
    border: int = Field(default=4, ge=0, le=32, description="Border width in pixels.")
    invert: bool = False
    tags: list[str] = Field(default_factory=list)


class PosterOutput(BaseModel):
    image: Image
    caption: str
    seen_width: int | None
    seen_height: int | None


class FailInput(BaseModel):
    reason: str = "no reason given"


PALETTES = {
    "sunrise": ((255, 183, 77), (229, 57, 53)),
    "ocean": ((79, 195, 247), (21, 101, 192)),
    "forest": ((174, 213, 129), (46, 125, 50)),
}


def png(width: int, height: int, rows: list[bytes]) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    raw = b"".join(b"\x00" + row for row in rows)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def poster(width: int, height: int, style: str, border: int, invert: bool) -> bytes:
    top, bottom = PALETTES[style]
    rows = []
    for y in range(height):
        t = y / max(1, height - 1)
        colour = bytes(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True))
        if invert:
            colour = bytes(255 - c for c in colour)
        edge = bytes((255, 255, 255))
        row = bytearray()
        for x in range(width):
            inside = border <= x < width - border and border <= y < height - border
            row += colour if inside else edge
        rows.append(bytes(row))
    return png(width, height, rows)


class Poster(tidal.App, keep_alive=300, max_concurrency=1):
    machine_type = "XS"

    @tidal.endpoint("/generate")
    def generate(self, input: PosterInput, request: Request) -> PosterOutput:
        print(f"poster for {input.prompt!r} in {input.style}", flush=True)
        data = input.image.read_bytes()
        print(f"read the input image: {len(data)} bytes", flush=True)
        seen = struct.unpack(">II", data[16:24]) if data.startswith(b"\x89PNG") else (96, 64)
        width, height = (min(max(n, 16), 512) for n in seen)
        out = Image.from_bytes(
            poster(width, height, input.style, input.border, input.invert),
            format="png",  # fal's Image.from_bytes(data, format)
            file_name="poster.png",
            request=request,
        )
        caption = f"{input.prompt} ({', '.join(input.tags)})" if input.tags else input.prompt
        return PosterOutput(image=out, caption=caption, seen_width=seen[0], seen_height=seen[1])

    @tidal.endpoint("/fail")
    def fail(self, input: FailInput) -> dict[str, str]:
        print(f"about to fail: {input.reason}", flush=True)
        return {"never": explode(input.reason)}


def explode(reason: str) -> str:
    raise RuntimeError(f"the poster machine broke: {reason}")
