"""The auto-responder: rules, policies and real actions that close the MLOps loop."""
