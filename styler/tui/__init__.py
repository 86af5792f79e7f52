"""`styler tui`: a Textual dashboard over the registry and the job queue.

Nothing here imports torch, diffusers or transformers: heavy work runs in `styler worker`
processes that the Queue tab starts and watches.
"""
