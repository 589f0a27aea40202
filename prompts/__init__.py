"""The prompt templates (Jinja2), shipped inside the package as `agentarch.prompt_templates`."""
