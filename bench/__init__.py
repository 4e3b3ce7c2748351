"""The benchmark harness: `python -m bench` measures the service beside same-run ceilings."""
