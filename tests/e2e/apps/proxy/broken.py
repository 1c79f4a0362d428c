import tidal


class Broken(tidal.App, keep_alive=30):
    machine_type = "XS"

    def setup(self) -> None:
        raise RuntimeError("weights not found at /data/model.safetensors")

    @tidal.endpoint("/generate")
    def generate(self) -> dict[str, str]:
        return {}
