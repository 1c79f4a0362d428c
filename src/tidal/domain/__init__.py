"""The nouns every part of the platform shares: a runner and its lifecycle, the
address it answers on. Imports nothing else of tidal's but the spec, so the
gateway, scaling, backends and control plane can all depend on it."""
