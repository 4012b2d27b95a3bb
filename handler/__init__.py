"""The stenopod RunPod worker: `python -m handler` inside the image."""
