import tidal


@tidal.function(exposed_port=8000, metadata={"openapi": {"openapi": "3.1.0", "paths": {}}})
def app() -> None: ...
