# A realtime app written as fal's documentation writes one; nothing adapted to tidal.
from collections.abc import AsyncIterator

import fal
from pydantic import BaseModel


class Input(BaseModel):
    prompt: str
    seed: int = 0


class Output(BaseModel):
    text: str
    seed: int


class Realtime(fal.App, keep_alive=300):
    machine_type = "XS"

    def setup(self) -> None:
        self.calls = 0

    @fal.realtime("/realtime")
    def generate(self, input: Input) -> Output:
        self.calls += 1
        if input.prompt == "fail":
            raise ValueError("cannot draw 'fail'")
        return Output(text=input.prompt.upper(), seed=input.seed + self.calls * 0)

    @fal.realtime("/stream")
    async def words(self, input: Input) -> AsyncIterator[Output]:
        for i, word in enumerate(input.prompt.split()):
            yield Output(text=word, seed=i)

    @fal.endpoint("/")
    def http(self, input: Input) -> Output:
        return Output(text=input.prompt, seed=input.seed)
