"""The AI assistant: a local Ollama model that proposes circuits, rewrites and plans.

Nothing the model says is trusted: circuits go through the ingest parser, rewrites
through the equivalence check (``equivalence``), plans through the template schema.
Every answer is recorded with the model's name, its digest and the prompt version.
"""
