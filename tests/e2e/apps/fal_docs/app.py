# An app written as fal's documentation writes one (https://docs.fal.ai/private-serverless):
# nothing here is adapted to tidal. It uses the names of issue 17's list.
import os
from pathlib import Path

import fal
from fal.exceptions import AppException, FieldException
from fal.toolkit import (
    FAL_MODEL_WEIGHTS_DIR,
    FAL_PERSISTENT_DIR,
    Audio,
    File,
    ImageSizeInput,
    Video,
    clone_repository,
    get_image_size,
)
from fal.toolkit.file.providers.fal import InMemoryRepository
from fal.toolkit.image import ImageSize
from fal.toolkit.image.safety_checker import postprocess_images
from fal.toolkit.utils.download_utils import FAL_REPOSITORY_DIR
from pydantic import BaseModel, Field

# Saved at import: on the deploy machine as well as in every runner.
EXAMPLE = File.from_path(Path(__file__).parent / "assets" / "example.txt", repository="cdn")


class Input(BaseModel):
    prompt: str = Field(examples=["a cat"])
    image_size: ImageSizeInput = "square_hd"
    num_images: int = 1


class Output(BaseModel):
    width: int
    height: int
    prompt: str
    example: File
    has_nsfw_concepts: list[bool]


class CloneInput(BaseModel):
    url: str
    commit_hash: str | None = None


class MediaInput(BaseModel):
    audio: Audio
    video: Video
    file: File


@fal.cached
def load_model(name: str) -> dict:
    print(f"loading {name}")
    return {"name": name, "loaded_at": os.getpid()}


class FalDocs(
    fal.App,
    kind="container",
    keep_alive=300,
    _scheduler="nomad",
    _scheduler_options={"storage_region": "us-east"},
):
    machine_type = "XS"

    def setup(self) -> None:
        self.model = load_model("weights-v1")
        FAL_MODEL_WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
        (FAL_MODEL_WEIGHTS_DIR / "marker").write_text("setup ran")

    @fal.endpoint("/")
    def generate(self, input: Input) -> Output:
        if not input.prompt.strip():
            raise FieldException("prompt", "The prompt must not be empty.")
        if input.num_images > 4:
            raise AppException("At most 4 images per request.", status_code=400)
        size: ImageSize = get_image_size(input.image_size)
        checked = postprocess_images([], enable_safety_checker=False)
        return Output(
            width=size.width,
            height=size.height,
            prompt=input.prompt,
            example=EXAMPLE,
            has_nsfw_concepts=checked["has_nsfw_concepts"],
        )

    @fal.endpoint("/clone")
    def clone(self, input: CloneInput) -> dict:
        path = clone_repository(input.url, commit_hash=input.commit_hash, include_to_path=True)
        import greeting  # a module of the cloned repository

        return {
            "path": str(path),
            "greeting": greeting.GREETING,
            "under_persistent": str(path).startswith(str(FAL_REPOSITORY_DIR)),
        }

    @fal.endpoint("/media")
    def media(self, input: MediaInput) -> dict:
        saved = File.from_bytes(
            input.file.as_bytes(), "text/plain", repository=InMemoryRepository()
        )
        copied = input.file.save(FAL_PERSISTENT_DIR / "downloads")
        return {
            "audio": input.audio.url,
            "video_name": input.video.file_name,
            "in_memory": saved.url,
            "from_url": File._from_url(input.file.url).file_name,
            "downloaded": copied.read_text(),
            "model": self.model["name"],
            "weights_marker": (FAL_MODEL_WEIGHTS_DIR / "marker").read_text(),
        }


app = fal.wrap_app(FalDocs)
