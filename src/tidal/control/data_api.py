"""/api/v1/apps/{name}/data: an app's `/data` for `tidal files` (list, read, write, remove).

Bodies stream both ways: an upload goes to disk as it arrives (cut at the platform's
`data_upload_limit_bytes`), a download is read from disk as it is sent. The path
rules are tidal.storage.data's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from tidal.storage import data

PathParam = Query("", description="A path under /data, e.g. models/weights.bin ('' is /data).")


def _answer(exc: Exception) -> HTTPException:
    if isinstance(exc, data.DataNotFound):
        return HTTPException(404, str(exc))
    if isinstance(exc, data.DataConflict):
        return HTTPException(409, str(exc))
    if isinstance(exc, data.DataTooLarge):
        return HTTPException(413, str(exc))
    return HTTPException(400, str(exc))


def data_router(root: Path, upload_limit: int, check_app: Callable[[str], Any]) -> APIRouter:
    """`check_app(name)` raises the registry's NotFound for an unknown app (answered 404)."""
    router = APIRouter(prefix="/api/v1/apps/{name}/data", tags=["data"])

    async def run(fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args)
        except (data.DataNotFound, data.DataConflict, data.DataPathError) as exc:
            raise _answer(exc) from None

    @router.get("")
    async def list_data(name: str, path: str = PathParam) -> dict[str, Any]:
        """A folder's entries (folders first; hidden names counted, not listed), or the
        one entry at `path` when it is a file or a link (links are never followed)."""
        await asyncio.to_thread(check_app, name)
        single, entries, hidden, cut = await run(data.describe, root, path)
        return {
            "path": "/".join(data.split_path(path)),
            "entries": [e.view() for e in ([single] if single else entries)],
            "is_dir": single is None,
            "hidden": hidden,
            "truncated": cut,
        }

    @router.get("/content")
    async def read_data(name: str, path: str = PathParam) -> StreamingResponse:
        """The bytes of the file at `path`, streamed."""
        await asyncio.to_thread(check_app, name)
        fd, st = await run(data.open_file, root, path)
        chunks = data.read_chunks(fd, st.st_size)

        async def body() -> AsyncIterator[bytes]:
            try:
                while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
                    yield chunk
            finally:
                chunks.close()  # closes the fd, also when the client left early

        return StreamingResponse(
            body(),
            media_type="application/octet-stream",
            headers={"content-length": str(st.st_size), "x-content-type-options": "nosniff"},
        )

    @router.put("/content")
    async def write_data(name: str, request: Request, path: str = PathParam) -> dict[str, Any]:
        """Write the request body to `path` (folders made as needed; a file there is
        replaced once the whole body has arrived)."""
        await asyncio.to_thread(check_app, name)
        declared = int(request.headers.get("content-length") or 0)
        if declared > upload_limit:
            raise HTTPException(
                413, f"the upload is {declared // 2**20} MB, over the {upload_limit // 2**20} "
                "MB limit of one /data file (the platform's data_upload_limit_bytes)",
            )  # fmt: skip
        upload: data.Upload = await run(data.Upload, root, path, upload_limit)
        try:
            async for chunk in request.stream():
                if chunk:
                    await run(upload.write, chunk)
            await run(upload.commit)
        finally:
            await asyncio.to_thread(upload.abort)
        return {"path": "/".join(upload.parts), "size": upload.size}

    @router.delete("")
    async def remove_data(
        name: str, path: str = PathParam, recursive: bool = False
    ) -> dict[str, Any]:
        """Remove the file, link or (empty, or with `recursive`) folder at `path`."""
        await asyncio.to_thread(check_app, name)
        kind = await run(data.remove, root, path, recursive)
        return {"path": "/".join(data.split_path(path)), "removed": kind}

    return router
