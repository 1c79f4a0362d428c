import tidal


@tidal.function(exposed_port=8000, machine_type="GPU-B200")
def app() -> None: ...
