import time

import tidal


@tidal.function(exposed_port=8000, startup_timeout=2)
def never_listens() -> None:
    print("starting up, but never listening", flush=True)
    time.sleep(3600)
