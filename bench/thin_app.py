"""The HTTP ceiling: the bare endpoint plus the thinnest durable dual write (see thin.py).

It reads the report's JSON, writes it to both SQLite files and answers 202 once both
committed: what phasegate's completion endpoint must do at the least. The files go in
``$THIN_DIR``.
"""

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from thin import DualWrite

_writes: list[DualWrite] = []


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    _writes.append(DualWrite(Path(os.environ["THIN_DIR"])))
    yield
    _writes.pop().close()


app = FastAPI(lifespan=lifespan)


@app.post("/v1/completions")
async def completions(request: Request) -> JSONResponse:
    report = json.loads(await request.body())
    successes = await _writes[0].arecord(report["phase"], report["run_key"], report["processor"])
    return JSONResponse({"recorded": True, "successes": len(successes)}, status_code=202)


@app.post("/v1/completions:batch")
async def batch(request: Request) -> JSONResponse:
    reports = [
        (item["phase"], item["run_key"], item["processor"])
        for item in json.loads(await request.body())["completions"]
    ]
    successes = await _writes[0].arecord_many(reports)
    return JSONResponse({"recorded": len(reports), "runs": len(successes)}, status_code=202)


@app.get("/")
async def root() -> dict[str, str]:
    return {"status": "ok"}
