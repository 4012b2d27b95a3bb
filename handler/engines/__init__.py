"""Speech-to-text engines. Heavy imports (torch, NeMo, CTranslate2) stay inside this package."""
