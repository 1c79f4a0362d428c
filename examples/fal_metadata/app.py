"""A direct server whose API is described in `metadata={"openapi": ...}`, as on fal.

The server (`server.py`) has no OpenAPI document of its own, so the function
carries one; the platform stores it with the deploy and serves it at
`GET /api/v1/apps/sentiment/openapi.json`.
Deploy it with `tidal deploy app.py::sentiment`.
"""

import subprocess
import sys

import fal

OPENAPI = {
    "openapi": "3.1.0",
    "info": {
        "title": "sentiment",
        "version": "1.0.0",
        "description": "Labels a text positive or negative.",
    },
    "paths": {
        "/": {
            "get": {
                "summary": "What this server is",
                "operationId": "info",
                "responses": {
                    "200": {
                        "description": "The server's name and version.",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Info"}}
                        },
                    }
                },
            }
        },
        "/predict": {
            "post": {
                "summary": "Label a text",
                "operationId": "predict",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/PredictInput"}
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "The label and its score.",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/PredictOutput"}
                            }
                        },
                    },
                    "422": {"description": "`text` is missing or not a string."},
                },
            }
        },
    },
    "components": {
        "schemas": {
            "Info": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "version": {"type": "string"}},
                "required": ["name", "version"],
            },
            "PredictInput": {
                "type": "object",
                "properties": {"text": {"type": "string", "examples": ["what a great day"]}},
                "required": ["text"],
            },
            "PredictOutput": {
                "type": "object",
                "properties": {
                    "label": {"type": "string", "enum": ["positive", "negative"]},
                    "score": {"type": "integer"},
                },
                "required": ["label", "score"],
            },
        }
    },
}


@fal.function(exposed_port=8000, metadata={"openapi": OPENAPI})
def sentiment() -> None:
    subprocess.run([sys.executable, "server.py", "--port", "8000"], check=True)
