"""stenopod: transcribe whole audio backlogs on RunPod serverless, or locally.

The SDK and CLI live here and import neither torch nor NeMo.
"""

__version__ = "0.1.0"
