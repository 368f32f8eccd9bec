"""Exported artifacts, below both the export and the runtime: their formats and sidecars, one
runner per backend, and the :class:`InferenceSession` that every caller (``enfold.runtime.load``
and ``enfold validate`` alike) runs them through."""
