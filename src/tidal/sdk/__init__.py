"""What users write against. Imports no platform code."""
