"""The server's ASGI app: MONAI Label's FastAPI app with answers for malformed requests.

Stock MONAI Label answers a malformed JSON form field (``info``, ``params``) and a missing image with 500; this app
answers 400 and 404 instead. ``python -m dsp_monai.label start_server`` serves it (``--uvicorn_app
dsp_monai.label.server:app`` of ``python -m monailabel.main start_server``).
"""

from __future__ import annotations

import json

from fastapi import Request
from fastapi.responses import JSONResponse
from monailabel.app import app
from monailabel.interfaces.exception import ImageNotFoundException, LabelNotFoundException, MONAILabelError
from monailabel.interfaces.exception import MONAILabelException

__all__ = ["app"]


async def _malformed_json(request: Request, error: json.JSONDecodeError) -> JSONResponse:
    return JSONResponse(status_code=400, content={"detail": f"malformed JSON in the request: {error}"})


async def _monailabel_error(request: Request, error: MONAILabelException) -> JSONResponse:
    if isinstance(error, (ImageNotFoundException, LabelNotFoundException)):
        status = 404
    elif error.error == MONAILabelError.INVALID_INPUT:
        status = 400
    else:
        status = 500
    return JSONResponse(status_code=status, content={"detail": f"{error.error.value}: {error.msg}"})


app.add_exception_handler(json.JSONDecodeError, _malformed_json)
app.add_exception_handler(MONAILabelException, _monailabel_error)
