"""The HTTP baseline: a bare FastAPI endpoint that answers 202 and does nothing."""

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

app = FastAPI()


@app.post("/v1/completions")
async def completions(request: Request) -> JSONResponse:
    await request.body()
    return JSONResponse({"recorded": True}, status_code=202)


@app.get("/")
async def root() -> dict[str, str]:
    return {"status": "ok"}
