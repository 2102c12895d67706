"""llama-server builds: registry, release download and unpack, source build, flag catalog."""
