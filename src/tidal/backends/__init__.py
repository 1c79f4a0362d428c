"""Where runners run. `base` names the protocol every backend implements."""
