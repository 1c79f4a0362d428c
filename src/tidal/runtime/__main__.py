from tidal.runtime.main import main

main()
