"""The LangGraph state machines: triage, audit, assistant, and the nodes they share.

Builders are compiled without a checkpointer; the CLI, the server and tests bring their own.
"""
