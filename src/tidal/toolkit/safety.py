"""fal's image safety checker interface (`fal.toolkit.image.safety_checker`).

`postprocess_images(images, enable_safety_checker=...)` answers
`{"images": [...], "has_nsfw_concepts": [...]}` with every flagged image replaced
by a black one of its size. The classifier (version 2, fal's default) is the
`Falconsai/nsfw_image_detection` model run with torch and transformers, loaded once
per runner; those packages (and the model download) are the app's to provide.
With `enable_safety_checker=False` nothing is loaded.
"""

from __future__ import annotations

import importlib
from typing import Any

from tidal.sdk.cached import cached

NSFW_MODEL = "Falconsai/nsfw_image_detection"


def filter_by(has_nsfw_concepts: list[bool], images: list[Any]) -> list[Any]:
    """Each flagged image replaced by a black image of the same size."""
    if not any(has_nsfw_concepts):
        return list(images)
    pil = _require("PIL.Image", "the safety checker's filter")
    return [
        pil.new("RGB", (image.width, image.height), (0, 0, 0)) if flagged else image
        for image, flagged in zip(images, has_nsfw_concepts, strict=True)
    ]


@cached
def _nsfw_model() -> tuple[Any, Any]:
    transformers = _require("transformers", "the safety checker")
    model = transformers.AutoModelForImageClassification.from_pretrained(NSFW_MODEL)
    processor = transformers.ViTImageProcessor.from_pretrained(NSFW_MODEL)
    return model, processor


def run_safety_checker_v2(pil_images: list[Any], nsfw_threshold: float = 0.5) -> list[bool]:
    """Whether each image's NSFW probability is above `nsfw_threshold`."""
    torch = _require("torch", "the safety checker")
    model, processor = _nsfw_model()
    nsfw = model.config.label2id.get("nsfw")
    if nsfw is None:
        raise ValueError(f"{NSFW_MODEL} has no 'nsfw' class")
    flagged = []
    with torch.no_grad():
        for image in pil_images:
            logits = model(**processor(images=image.convert("RGB"), return_tensors="pt")).logits
            probability = torch.softmax(logits.squeeze(), dim=0)[int(nsfw)].item()
            flagged.append(probability > nsfw_threshold)
    return flagged


def run_safety_checker(pil_images: list[Any]) -> list[bool]:
    """fal's version 1 used a Stable Diffusion checker on CUDA; tidal runs version 2."""
    return run_safety_checker_v2(pil_images)


def postprocess_images(
    pil_images: list[Any], enable_safety_checker: bool = True, safety_checker_version: int = 2
) -> dict[str, Any]:
    if enable_safety_checker:
        flags = (run_safety_checker_v2 if safety_checker_version == 2 else run_safety_checker)(
            pil_images
        )
    else:
        flags = [False] * len(pil_images)
    return {"images": filter_by(flags, pil_images), "has_nsfw_concepts": flags}


def _require(module: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        package = {"PIL.Image": "pillow"}.get(module, module)
        raise ImportError(
            f"{what} needs {package}, which is not installed: add it to the app's requirements"
        ) from None
