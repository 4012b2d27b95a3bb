"""`stenopod serve`: a local endpoint speaking RunPod's serverless API, with its own worker processes.

from stenopod.local import run_in_thread
with run_in_thread(workers=1) as endpoint:
    runpod.endpoint_url_base = endpoint.base_url   # then runpod.Endpoint("local") works unchanged
"""

from stenopod.local.jobs import JobState
from stenopod.local.launch import add_serve_arguments, run_in_thread, serve, serve_main
from stenopod.local.server import LocalEndpoint

__all__ = ["JobState", "LocalEndpoint", "add_serve_arguments", "run_in_thread", "serve", "serve_main"]
